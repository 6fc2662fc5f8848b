"""Supervised image classification on top of a backbone: head, cross-entropy, steps and metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from transferlab.errors import UserError
from transferlab.strategies.base import TransferModule
from transferlab.strategies.heads import build_head
from transferlab.utils.config import require_plain


def inverse_frequency_weights(class_counts: Sequence[int]) -> torch.Tensor:
    """Loss weights ``total / (num_classes * count)``: rare classes weigh more, the mean weight is 1."""
    counts = torch.as_tensor(list(class_counts), dtype=torch.float32)
    if (counts <= 0).any():
        raise UserError(
            f"Cannot weight the loss by class frequency: a class has no training images {counts}."
        )
    return counts.sum() / (len(counts) * counts)


class ClassifierModule(TransferModule):
    """Backbone + new head trained with cross-entropy over a fixed class set.

    The shared part of fine-tuning and feature extraction: the ``"head"`` part, the loss, the steps, and
    the metrics ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/acc_best``,
    ``val/f1_macro``, ``test/loss``, ``test/acc``, ``test/f1_macro``. Subclasses decide what is trainable
    and call ``self.save_hyperparameters()`` in their own ``__init__``.

    Args:
        backbone, optimizer, scheduler, lr, backbone_lr_factor, layer_decay, weight_decay,
            frozen_blocks_eval, freeze_bn_stats: as for :class:`TransferModule`.
        class_names: class names, in label order (at least two).
        head_hidden_dim: hidden width of an MLP head (None or 0 = linear head).
        head_dropout: dropout in the head.
        label_smoothing: cross-entropy label smoothing (training only).
        class_counts: training images per class (given by the training entry point).
        class_weighted_loss: weight the loss by inverse class frequency.
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        *,
        class_names: Sequence[str],
        lr: float,
        backbone_lr_factor: float = 0.1,
        layer_decay: float = 1.0,
        weight_decay: float = 1e-4,
        head_hidden_dim: int | None = None,
        head_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        class_counts: Sequence[int] | None = None,
        class_weighted_loss: bool = False,
        frozen_blocks_eval: bool = True,
        freeze_bn_stats: bool = False,
    ) -> None:
        super().__init__(
            backbone, optimizer, scheduler, lr=lr, backbone_lr_factor=backbone_lr_factor,
            layer_decay=layer_decay, weight_decay=weight_decay, frozen_blocks_eval=frozen_blocks_eval,
            freeze_bn_stats=freeze_bn_stats, class_names=class_names,
        )  # fmt: skip
        require_plain(class_counts=class_counts)
        if class_names is None or len(class_names) < 2:
            raise UserError(f"Need at least 2 classes to train a classifier, got {class_names}.")
        if not 0 <= label_smoothing < 1:
            raise UserError(f"model.label_smoothing={label_smoothing} must be in [0, 1).")
        self.label_smoothing = label_smoothing
        self.head = build_head(
            self.backbone.feature_dim, len(self.class_names), head_hidden_dim, head_dropout
        )
        weights = None
        if class_weighted_loss:
            if not class_counts or len(class_counts) != len(self.class_names):
                raise UserError(
                    "model.class_weighted_loss=true needs the training-set count of every class; the data "
                    f"module gave {class_counts} for {len(self.class_names)} classes."
                )
            weights = inverse_frequency_weights(class_counts)
        # Not persistent: derived from the hyperparameters, so checkpoints stay the same either way.
        self.register_buffer("class_weights", weights, persistent=False)
        self._make_metrics(len(self.class_names))

    def trainable_parts(self) -> dict[str, nn.Module]:
        return {**super().trainable_parts(), "head": self.head}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features; a 2-D input is taken as features already computed (feature cache)."""
        return x if x.ndim == 2 else self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    # ----------------------------------------------------------------- steps
    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        smoothing = self.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, weight=self.class_weights, label_smoothing=smoothing)
        self.log_classification(stage, loss, logits, y)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self(x).softmax(dim=1)

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
        """Update loss, accuracy (and macro F1 and the confusion matrix outside training) for ``stage``.

        Only the training loss of the step is logged here (:meth:`log_step_loss`); the epoch values are
        computed and logged once, at the end of the epoch (``log_classification_epoch``): logging a metric
        object in every step costs Lightning about 1 ms of bookkeeping per call, most of a step of a head
        on cached features.
        """
        preds = logits.argmax(dim=1)
        getattr(self, f"{stage}_loss").update(loss.detach(), weight=y.numel())
        getattr(self, f"{stage}_acc").update(preds, y)
        if stage == "train":
            self.log_step_loss(loss)
            return
        getattr(self, f"{stage}_f1").update(preds, y)
        if stage == "val":
            self.val_confusion.update(preds, y)

    def log_classification_epoch(self, stage: str) -> None:
        """``log_epoch_metrics`` of ``{stage}/loss``, ``{stage}/acc`` (and ``{stage}/f1_macro`` outside
        training)."""
        metrics = {f"{stage}/{name}": getattr(self, f"{stage}_{name}") for name in ("loss", "acc")}
        if stage != "train":
            metrics[f"{stage}/f1_macro"] = getattr(self, f"{stage}_f1")
        self.log_epoch_metrics(metrics, prog_bar=(f"{stage}/loss", f"{stage}/acc"))

    def on_train_epoch_end(self) -> None:
        self.log_classification_epoch("train")

    def on_test_epoch_end(self) -> None:
        self.log_classification_epoch("test")

    def on_validation_epoch_end(self) -> None:
        # Read by the image-logging callback (rows: true class, columns: predicted class).
        self.last_val_confusion = self.val_confusion.compute().cpu()
        self.val_confusion.reset()
        if self.trainer.sanity_checking:  # the sanity check must not count towards the best accuracy
            for metric in (self.val_loss, self.val_acc, self.val_f1):
                metric.reset()
            return
        self.val_acc_best(self.val_acc.compute())  # before log_classification_epoch resets val_acc
        self.log_classification_epoch("val")
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)
