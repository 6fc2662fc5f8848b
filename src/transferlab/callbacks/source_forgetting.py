"""How much a model forgets of its source task when it is fine-tuned on a new one."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from transferlab.backbones.weights import WeightsChoice
from transferlab.data.base import split_record_from_checkpoint
from transferlab.data.imagefolder import ImageFolderDataModule
from transferlab.errors import UserError
from transferlab.strategies.base import CHECKPOINT_KEY, TransferModule
from transferlab.strategies.loading import load_module_from_checkpoint, read_checkpoint
from transferlab.utils.safe_load import safe_torch_load

log = logging.getLogger(__name__)


class SourceForgetting(L.Callback):
    """Test the source checkpoint's own head on the source test split before and after transfer.

    Active when ``checkpoint`` (the run's ``backbone.weights``) is a transferlab checkpoint of a source
    task and ``source_root`` is its data. Before fitting, the checkpoint as it is (backbone and head) is
    tested on the source test split; at test time the same head is tested on top of the transferred
    backbone (the weights being tested). The source test split is the one the checkpoint recorded
    (as ``transferlab-eval`` does), so the check never scores the source model on its training images;
    the fractions and seed given here serve only checkpoints without a record. Logged:
    ``test/source_acc_before``, ``test/source_acc_after`` and ``test/forgetting`` (before minus after).
    Two-domain runs (DANN) measure forgetting themselves, so the callback stays out of them.

    Args:
        source_root: the source task's image folder, or None (inactive).
        checkpoint: the run's initial weights; only a transferlab checkpoint makes the callback active.
        val_fraction: the source run's ``data.val_fraction`` (used only without a split record).
        test_fraction: the source run's ``data.test_fraction``.
        split_seed: the source run's ``data.split_seed``.
        batch_size: images per evaluation batch.
    """

    def __init__(
        self,
        source_root: str | None = None,
        checkpoint: str | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        batch_size: int = 64,
    ) -> None:
        self.source_root = source_root
        self.checkpoint = checkpoint
        self.split = {"val_fraction": val_fraction, "test_fraction": test_fraction, "split_seed": split_seed}
        self.batch_size = batch_size
        self.source_model: TransferModule | None = None
        self.loader: DataLoader | None = None
        self.before: float | None = None

    def active(self) -> bool:
        """Whether a source checkpoint and source data were given."""
        if not self.source_root or not self.checkpoint:
            return False
        choice = WeightsChoice.parse(self.checkpoint)
        if choice.kind != "file" or choice.path is None:
            return False
        stored = safe_torch_load(choice.path, what="backbone weights file")
        if not (isinstance(stored, dict) and CHECKPOINT_KEY in stored):
            log.info(
                "Forgetting check skipped: %s is not a transferlab checkpoint (no source head).", choice.path
            )
            return False
        return True

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if hasattr(trainer.datamodule, "target_train_set") or not self.active():
            return
        assert self.checkpoint is not None and self.source_root is not None
        self.source_model = load_module_from_checkpoint(self.checkpoint)
        data = ImageFolderDataModule(
            self.source_root, batch_size=self.batch_size, augmentation="none", **self.split
        )
        record = split_record_from_checkpoint(read_checkpoint(self.checkpoint))
        if record is not None:
            data.restore_split(record)
        else:
            log.warning(
                "%s holds no record of its data split: the forgetting check splits %s with "
                "val_fraction=%s, test_fraction=%s, split_seed=%s; if the source run used others, its test "
                "images may include training images.",
                self.checkpoint, self.source_root, *self.split.values(),
            )  # fmt: skip
        data.set_preprocessing(self.source_model.preprocessing)
        if list(data.class_names) != list(self.source_model.class_names):
            raise UserError(
                f"The forgetting check's source data {self.source_root} has classes {data.class_names}, but "
                f"the checkpoint {self.checkpoint} was trained on {self.source_model.class_names}. Point "
                "callbacks.source_forgetting.source_root at the source task's data."
            )
        data.setup("test")
        self.loader = data.test_dataloader()
        self.before = self._accuracy(self.source_model, pl_module.device)
        log.info("Source task accuracy of %s before transfer: %.4f", Path(self.checkpoint).name, self.before)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.source_model is None or self.before is None:
            return
        transferred = getattr(pl_module, "backbone", None)
        if transferred is None:
            return
        self.source_model.backbone.load_state_dict(transferred.state_dict())
        after = self._accuracy(self.source_model, pl_module.device)
        pl_module.log("test/source_acc_before", self.before, sync_dist=True)
        pl_module.log("test/source_acc_after", after, sync_dist=True)
        pl_module.log("test/forgetting", self.before - after, sync_dist=True)

    @torch.no_grad()
    def _accuracy(self, model: TransferModule, device: torch.device) -> float:
        assert self.loader is not None
        model.to(device).eval()
        correct = total = 0
        for images, labels in self.loader:
            predicted = model(images.to(device)).argmax(dim=1).cpu()
            correct += int((predicted == labels).sum())
            total += len(labels)
        return correct / max(1, total)
