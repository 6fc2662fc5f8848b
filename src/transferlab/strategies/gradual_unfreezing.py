"""Gradual unfreezing: fine-tuning that starts with a frozen backbone and unfreezes it from the top."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L

from transferlab.callbacks.gradual_unfreezing import GradualUnfreezing, build_schedule
from transferlab.strategies.classifier import ClassifierModule


class GradualUnfreezingClassifier(ClassifierModule):
    """Pretrained backbone + new head; the head trains alone first, then block groups join from the top.

    The optimizer holds every block group from the start, each at its layer-wise rate
    (:meth:`block_group_lr`); a frozen group gets no gradients, so the optimizer leaves it untouched until
    the :class:`~transferlab.callbacks.GradualUnfreezing` callback (added by :meth:`configure_callbacks`)
    makes it trainable. Schedules: one group every ``epochs_per_group`` epochs, explicit
    ``unfreeze_milestones``, or fastai-style ``freeze_epochs``. The defaults are those of
    ``conf/model/gradual_unfreezing.yaml``.

    Args:
        backbone: backbone config (``name``, ``weights``, ``image_size``, family options).
        class_names: class names, in label order.
        optimizer: ``_partial_`` optimizer config; it receives the parameter groups.
        scheduler: ``_partial_`` scheduler config taking ``(optimizer, total_steps)``, or None.
        unfreeze_milestones: ``{epoch: trainable block groups}`` (a number or ``"all"``); epoch 0 defaults
            to 0 groups.
        freeze_epochs: fastai's ``fine_tune`` (when no milestones are given): the head alone for this many
            epochs, then every block group.
        epochs_per_group: otherwise one more block group (from the top) every this many epochs, the head
            alone first.
        lr: head learning rate.
        backbone_lr_factor: rate of the top block group relative to the head.
        layer_decay: rate multiplier per block group going down from the top one.
        weight_decay: decay of weights (norms and biases get none).
        head_hidden_dim: hidden width of an MLP head (None or 0 = linear head).
        head_dropout: dropout in the head.
        label_smoothing: cross-entropy label smoothing (training only).
        class_counts: training images per class (given by the training entry point).
        class_weighted_loss: weight the loss by inverse class frequency.
        frozen_blocks_eval: frozen blocks run in eval mode, so their BatchNorm statistics stay fixed until
            they are unfrozen.
        freeze_bn_stats: every BatchNorm layer of the backbone keeps its running statistics, in unfrozen
            blocks too (their scale and shift still train; useful with small batches).
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        class_names: Sequence[str],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        unfreeze_milestones: Mapping[Any, Any] | None = None,
        freeze_epochs: int | None = None,
        epochs_per_group: int = 2,
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
        settings = {
            "unfreeze_milestones": unfreeze_milestones,
            "freeze_epochs": freeze_epochs,
            "epochs_per_group": epochs_per_group,
        }
        build_schedule(self.block_group_names, **settings)  # a bad schedule stops the run here, early
        self._unfreezing = GradualUnfreezing(**settings)
        self.set_trainable_blocks(0)

    def configure_callbacks(self) -> list[L.Callback]:
        """The callback that runs the schedule comes with the module: choosing the model is enough."""
        if self._unfreezing in self.trainer.callbacks:  # attached by an earlier fit/test of this trainer
            return []
        return [self._unfreezing]

    def param_groups(self) -> list[dict]:
        """Every part's groups and every block group's, frozen ones included, each at its layer-wise rate.

        Frozen parameters get no gradient, which torch optimizers skip (no update, no weight decay, no
        state), so a group starts training when the callback unfreezes it, and the scheduler has known
        every group from step 0.
        """
        trainable = self.num_trainable_blocks
        self.set_trainable_blocks("all")  # the base class builds groups of trainable parameters only
        try:
            return super().param_groups()
        finally:
            self.set_trainable_blocks(trainable)
