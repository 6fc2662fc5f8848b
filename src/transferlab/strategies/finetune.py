"""Fine-tuning: a new head on a pretrained backbone, with some, none or all backbone blocks trainable."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from transferlab.errors import UserError
from transferlab.optim import build_param_groups
from transferlab.strategies.base import TransferModule, plain
from transferlab.strategies.heads import build_head


class FineTuneClassifier(TransferModule):
    """Classifier = pretrained backbone + new head, trained with discriminative learning rates.

    Args:
        backbone: backbone config (``name``, ``weights``, ``image_size``, family options).
        class_names: class names, in label order.
        optimizer: ``_partial_`` optimizer config; it receives the parameter groups.
        scheduler: ``_partial_`` scheduler config taking ``(optimizer, total_steps)``, or None.
        trainable_blocks: 0 = frozen backbone (linear probe), N = last N block groups, ``"all"``.
        lr: head learning rate.
        backbone_lr_factor: backbone rate relative to the head.
        layer_decay: rate multiplier per block going down from the top trainable block.
        weight_decay: decay of weights (norms and biases get none).
        head_hidden_dim: hidden width of an MLP head (None = linear head).
        head_dropout: dropout in the head.
        label_smoothing: cross-entropy label smoothing.
        frozen_bn_eval: keep frozen blocks in eval mode so BatchNorm statistics do not move.
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        class_names: list[str],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        trainable_blocks: int | str = "all",
        lr: float = 1e-3,
        backbone_lr_factor: float = 0.1,
        layer_decay: float = 1.0,
        weight_decay: float = 1e-4,
        head_hidden_dim: int | None = None,
        head_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        frozen_bn_eval: bool = True,
    ) -> None:
        super().__init__(backbone, class_names, optimizer, scheduler, frozen_bn_eval)
        if lr <= 0 or backbone_lr_factor < 0 or not 0 < layer_decay <= 1:
            raise UserError(
                f"Bad learning rates: lr={lr} must be > 0, backbone_lr_factor={backbone_lr_factor} >= 0, "
                f"layer_decay={layer_decay} in (0, 1]."
            )
        # save_hyperparameters reads the current values of the arguments: store plain containers.
        backbone, class_names = plain(backbone), plain(class_names)
        optimizer, scheduler = plain(optimizer), plain(scheduler)
        self.save_hyperparameters()
        self.head = build_head(self.backbone.feature_dim, len(class_names), head_hidden_dim, head_dropout)
        self.freeze_backbone(trainable_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def param_groups(self) -> list[dict]:
        groups = self.backbone.block_groups()
        trainable = [(g.name, g.modules) for g in groups if any(p.requires_grad for p in g.parameters())]
        hp = self.hparams
        return build_param_groups(
            self.head, trainable, hp.lr, hp.backbone_lr_factor, hp.layer_decay, hp.weight_decay
        )

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
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
