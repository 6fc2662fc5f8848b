"""Supervised image classification on top of a backbone: head, loss, steps and parameter groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from transferlab.errors import UserError
from transferlab.optim import build_param_groups
from transferlab.strategies.base import TransferModule
from transferlab.strategies.heads import build_head


def inverse_frequency_weights(class_counts: Sequence[int]) -> torch.Tensor:
    """Loss weights ``total / (num_classes * count)``: rare classes weigh more, the mean weight is 1."""
    counts = torch.as_tensor(list(class_counts), dtype=torch.float32)
    if (counts <= 0).any():
        raise UserError(
            f"Cannot weight the loss by class frequency: a class has no training images {counts}."
        )
    return counts.sum() / (len(counts) * counts)


class ClassifierModule(TransferModule):
    """Backbone + new head trained with cross-entropy; the shared part of fine-tuning and feature extraction.

    Subclasses decide what is trainable and call ``self.save_hyperparameters()`` in their own ``__init__``
    (so each checkpoint records exactly its own class's arguments).
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        class_names: list[str],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None,
        *,
        lr: float,
        backbone_lr_factor: float,
        layer_decay: float,
        weight_decay: float,
        head_hidden_dim: int | None,
        head_dropout: float,
        label_smoothing: float,
        class_counts: list[int] | None,
        class_weighted_loss: bool,
        frozen_bn_eval: bool,
        freeze_batchnorm: bool = False,
    ) -> None:
        super().__init__(backbone, class_names, optimizer, scheduler, frozen_bn_eval, freeze_batchnorm)
        if lr <= 0 or backbone_lr_factor < 0 or not 0 < layer_decay <= 1:
            raise UserError(
                f"Bad learning rates: model.lr={lr} must be > 0, model.backbone_lr_factor="
                f"{backbone_lr_factor} >= 0 and model.layer_decay={layer_decay} in (0, 1]."
            )
        if not 0 <= label_smoothing < 1:
            raise UserError(f"model.label_smoothing={label_smoothing} must be in [0, 1).")
        self.lr, self.backbone_lr_factor, self.layer_decay = lr, backbone_lr_factor, layer_decay
        self.weight_decay, self.label_smoothing = weight_decay, label_smoothing
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

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features; a 2-D input is taken as features already computed (feature cache)."""
        return x if x.ndim == 2 else self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def param_groups(self) -> list[dict]:
        groups = self.backbone.block_groups()
        trainable = [(g.name, g.modules) for g in groups if any(p.requires_grad for p in g.parameters())]
        return build_param_groups(
            self.head, trainable, self.lr, self.backbone_lr_factor, self.layer_decay, self.weight_decay
        )

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
