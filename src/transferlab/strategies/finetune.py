"""Fine-tuning: a new head on a pretrained backbone, with some, none or all backbone blocks trainable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transferlab.strategies.classifier import ClassifierModule


class FineTuneClassifier(ClassifierModule):
    """Classifier = pretrained backbone + new head, trained with discriminative learning rates.

    The defaults are those of ``conf/model/finetune.yaml``.

    Args:
        backbone: backbone config (``name``, ``weights``, ``image_size``, family options).
        class_names: class names, in label order.
        optimizer: ``_partial_`` optimizer config; it receives the parameter groups.
        scheduler: ``_partial_`` scheduler config taking ``(optimizer, total_steps)``, or None.
        trainable_blocks: 0 = frozen backbone (linear probe), N = last N block groups, ``"all"``.
        lr: head learning rate.
        backbone_lr_factor: rate of the top block group relative to the head (discriminative rate).
        layer_decay: rate multiplier per block group going down from the top group.
        weight_decay: decay of weights (norms and biases get none).
        head_hidden_dim: hidden width of an MLP head (None or 0 = linear head).
        head_dropout: dropout in the head.
        label_smoothing: cross-entropy label smoothing (training only).
        class_counts: training images per class (given by the training entry point).
        class_weighted_loss: weight the loss by inverse class frequency.
        frozen_blocks_eval: frozen blocks run in eval mode, so their BatchNorm statistics stay fixed.
        freeze_bn_stats: every BatchNorm layer of the backbone keeps its running statistics, in trainable
            blocks too (their scale and shift still train; useful with small batches).
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        class_names: Sequence[str],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        trainable_blocks: int | str = 2,
        lr: float = 3e-3,
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
            backbone, optimizer, scheduler, class_names=class_names, lr=lr,
            backbone_lr_factor=backbone_lr_factor, layer_decay=layer_decay, weight_decay=weight_decay,
            head_hidden_dim=head_hidden_dim, head_dropout=head_dropout, label_smoothing=label_smoothing,
            class_counts=class_counts, class_weighted_loss=class_weighted_loss,
            frozen_blocks_eval=frozen_blocks_eval, freeze_bn_stats=freeze_bn_stats,
        )  # fmt: skip
        self.save_hyperparameters()
        self.set_trainable_blocks(trainable_blocks)
