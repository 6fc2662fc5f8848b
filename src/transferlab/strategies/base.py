"""What every transfer strategy shares: backbone, freezing, optimizer from config, metrics, checkpoints."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from transferlab.backbones import Backbone, build_backbone
from transferlab.errors import UserError

CHECKPOINT_KEY = "transferlab"

# Frozen backbone blocks are kept in eval mode on purpose (see TransferModule.train); Lightning warns
# about any module in eval mode when training starts.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


def plain(value: Any) -> Any:
    """Turn OmegaConf nodes into plain Python containers (checkpoints must hold primitives only)."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


class TransferModule(L.LightningModule):
    """Base of every strategy: a pretrained backbone, a task head, and the bookkeeping around them.

    Subclasses build their head, decide what is trainable (before the optimizer exists), and write
    ``training_step`` and friends. This class provides:

    - ``self.backbone`` built from the backbone config (name, weights, image size);
    - ``freeze_backbone(trainable_blocks)``: everything below the last N block groups is frozen, and frozen
      blocks stay in eval mode when ``frozen_bn_eval`` (BatchNorm statistics do not move);
    - ``configure_optimizers`` from ``_partial_`` optimizer/scheduler configs and ``param_groups()``;
    - classification metrics with the names ``train/loss``, ``val/acc``, ``val/acc_best``, ``test/acc``;
    - class names and preprocessing stored in every checkpoint, so eval and predict need nothing else.
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        class_names: list[str],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        frozen_bn_eval: bool = True,
        freeze_batchnorm: bool = False,
    ) -> None:
        super().__init__()
        if len(class_names) < 2:
            raise UserError(f"Need at least 2 classes to train a classifier, got {list(class_names)}.")
        self.class_names = list(class_names)
        self.backbone: Backbone = build_backbone(**plain(backbone))
        self.optimizer_cfg = plain(optimizer)
        self.scheduler_cfg = plain(scheduler)
        self.frozen_bn_eval = frozen_bn_eval
        self._frozen_modules: list[nn.Module] = []
        # With freeze_batchnorm every BatchNorm layer keeps its running statistics, trainable blocks too.
        self._always_eval: list[nn.Module] = (
            [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            if freeze_batchnorm
            else []
        )
        self._make_metrics(len(self.class_names))

    # ----------------------------------------------------------------- freezing
    def freeze_backbone(self, trainable_blocks: int | str) -> None:
        """Freeze all but the last ``trainable_blocks`` block groups (``"all"``: nothing is frozen)."""
        groups = self.backbone.block_groups()
        if trainable_blocks == "all":
            count = len(groups)
        elif isinstance(trainable_blocks, int) and 0 <= trainable_blocks <= len(groups):
            count = trainable_blocks
        else:
            names = [g.name for g in groups]
            raise UserError(
                f"model.trainable_blocks={trainable_blocks!r} is not valid for this backbone: use 0 "
                f"(frozen), a number up to {len(groups)}, or 'all'. Its block groups, input to output: "
                f"{names}."
            )
        frozen = groups[: len(groups) - count]
        self._frozen_modules = [m for g in frozen for m in g.modules]
        for module in self._frozen_modules:
            module.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferModule:
        """Set train/eval mode, keeping frozen backbone blocks in eval mode (BatchNorm stats stay fixed)."""
        super().train(mode)
        if mode:
            for module in (self._frozen_modules if self.frozen_bn_eval else []) + self._always_eval:
                module.eval()
        return self

    # ----------------------------------------------------------------- optimization
    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups, each with an explicit ``lr``; built from trainable parameters only."""
        raise NotImplementedError

    def configure_optimizers(self) -> dict:
        groups = self.param_groups()
        if not groups:
            raise UserError("Nothing to train: every parameter is frozen. Check model.trainable_blocks.")
        optimizer = instantiate(self.optimizer_cfg)(groups)
        if not self.scheduler_cfg:
            return {"optimizer": optimizer}
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(self.scheduler_cfg)(optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------------- metrics
    def _make_metrics(self, num_classes: int) -> None:
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")
        self.test_f1 = MulticlassF1Score(num_classes, average="macro")
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.last_val_confusion: torch.Tensor | None = None
        self.val_acc_best = MaxMetric()
        # Part of the checkpoint, so a resumed run keeps the best accuracy seen before.
        self.val_acc_best.persistent(True)

    def log_classification(
        self, stage: str, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor
    ) -> None:
        """Update and log loss, accuracy (and macro F1 outside training) for ``stage``."""
        preds = logits.argmax(dim=1)
        loss_metric, acc = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_acc")
        loss_metric(loss.detach(), weight=y.numel())
        acc(preds, y)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        if on_step:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False)
        else:
            f1 = getattr(self, f"{stage}_f1")
            f1(preds, y)
            self.log(f"{stage}/f1_macro", f1, on_step=False, on_epoch=True)
        if stage == "val":
            self.val_confusion.update(preds, y)

    def on_validation_epoch_end(self) -> None:
        # Read by the image-logging callback (rows: true class, columns: predicted class).
        self.last_val_confusion = self.val_confusion.compute().cpu()
        self.val_confusion.reset()
        if self.trainer.sanity_checking:  # the sanity check must not count towards the best accuracy
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    # ----------------------------------------------------------------- checkpoints
    @property
    def preprocessing(self) -> dict:
        """The preprocessing the backbone expects, as a plain dict."""
        return self.backbone.preprocessing.to_dict()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cls = type(self)
        checkpoint[CHECKPOINT_KEY] = {
            "module": f"{cls.__module__}.{cls.__qualname__}",
            "class_names": list(self.class_names),
            "preprocessing": self.preprocessing,
        }
