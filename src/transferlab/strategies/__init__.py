"""One LightningModule per transfer strategy, all built on :class:`TransferModule`."""

from transferlab.strategies.base import TransferModule
from transferlab.strategies.finetune import FineTuneClassifier
from transferlab.strategies.loading import load_module_from_checkpoint

__all__ = ["FineTuneClassifier", "TransferModule", "load_module_from_checkpoint"]
