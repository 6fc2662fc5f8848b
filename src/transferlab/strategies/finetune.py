"""Fine-tuning: a new head on a pretrained backbone, with some, none or all backbone blocks trainable."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transferlab.strategies.base import plain
from transferlab.strategies.classifier import ClassifierModule


class FineTuneClassifier(ClassifierModule):
    """Classifier = pretrained backbone + new head, trained with discriminative learning rates.

    Args:
        backbone: backbone config (``name``, ``weights``, ``image_size``, family options).
        class_names: class names, in label order.
        optimizer: ``_partial_`` optimizer config; it receives the parameter groups.
        scheduler: ``_partial_`` scheduler config taking ``(optimizer, total_steps)``, or None.
        trainable_blocks: 0 = frozen backbone (linear probe), N = last N block groups, ``"all"``.
        lr: head learning rate.
        backbone_lr_factor: backbone rate relative to the head (discriminative learning rate).
        layer_decay: rate multiplier per block going down from the top trainable block.
        weight_decay: decay of weights (norms and biases get none).
        head_hidden_dim: hidden width of an MLP head (None = linear head).
        head_dropout: dropout in the head.
        label_smoothing: cross-entropy label smoothing (training only).
        class_counts: training images per class (given by the training entry point).
        class_weighted_loss: weight the loss by inverse class frequency.
        frozen_bn_eval: keep frozen blocks in eval mode so BatchNorm statistics do not move.
        freeze_batchnorm: keep every BatchNorm layer of the backbone in eval mode, trainable blocks too
            (their scale and shift still train; useful with small batches).
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
        class_counts: list[int] | None = None,
        class_weighted_loss: bool = False,
        frozen_bn_eval: bool = True,
        freeze_batchnorm: bool = False,
    ) -> None:
        # save_hyperparameters reads the arguments' current values: make them plain containers first.
        backbone, class_names, class_counts = plain(backbone), plain(class_names), plain(class_counts)
        optimizer, scheduler = plain(optimizer), plain(scheduler)
        super().__init__(
            backbone, class_names, optimizer, scheduler, lr=lr, backbone_lr_factor=backbone_lr_factor,
            layer_decay=layer_decay, weight_decay=weight_decay, head_hidden_dim=head_hidden_dim,
            head_dropout=head_dropout, label_smoothing=label_smoothing, class_counts=class_counts,
            class_weighted_loss=class_weighted_loss, frozen_bn_eval=frozen_bn_eval,
            freeze_batchnorm=freeze_batchnorm,
        )  # fmt: skip
        self.save_hyperparameters()
        self.freeze_backbone(trainable_blocks)
