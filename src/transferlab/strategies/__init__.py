"""One LightningModule per transfer strategy, all built on :class:`TransferModule`."""

from transferlab.strategies.auto import auto_strategy, choose_strategy
from transferlab.strategies.base import TransferModule
from transferlab.strategies.classifier import ClassifierModule
from transferlab.strategies.dann import DANNClassifier, SourceOnlyClassifier
from transferlab.strategies.feature_extraction import FeatureExtractionClassifier
from transferlab.strategies.finetune import FineTuneClassifier
from transferlab.strategies.loading import load_module_from_checkpoint
from transferlab.strategies.protonet import ProtoNetModule

__all__ = [
    "ClassifierModule",
    "DANNClassifier",
    "FeatureExtractionClassifier",
    "FineTuneClassifier",
    "ProtoNetModule",
    "SourceOnlyClassifier",
    "TransferModule",
    "auto_strategy",
    "choose_strategy",
    "load_module_from_checkpoint",
]
