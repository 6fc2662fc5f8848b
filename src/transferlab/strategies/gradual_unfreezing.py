"""Gradual unfreezing: fine-tuning that starts with a frozen backbone and unfreezes it from the top."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L
from torch import nn

from transferlab.callbacks.gradual_unfreezing import GradualUnfreezing, build_schedule
from transferlab.errors import UserError
from transferlab.optim import split_weight_decay
from transferlab.strategies.base import plain
from transferlab.strategies.classifier import ClassifierModule


class GradualUnfreezingClassifier(ClassifierModule):
    """Pretrained backbone + new head; the head trains alone first, then block groups join from the top.

    The optimizer holds every block group from the start, each at its layer-wise rate
    (:meth:`block_group_lr`); a frozen group gets no gradients, so the optimizer leaves it untouched until
    the :class:`~transferlab.callbacks.GradualUnfreezing` callback (added by :meth:`configure_callbacks`)
    makes it trainable. Schedules: one group every ``epochs_per_group`` epochs, explicit
    ``unfreeze_milestones``, or fastai-style ``freeze_epochs``.

    Args:
        backbone: backbone config (``name``, ``weights``, ``image_size``, family options).
        class_names: class names, in label order.
        optimizer: ``_partial_`` optimizer config; it receives the parameter groups.
        scheduler: ``_partial_`` scheduler config taking ``(optimizer, total_steps)``, or None.
        epochs_per_group: one more block group (from the top) every this many epochs, the head alone first.
        unfreeze_milestones: ``{epoch: trainable block groups}`` (a number or ``"all"``) instead.
        freeze_epochs: fastai's ``fine_tune`` instead: the head alone for this many epochs, then everything.
        lr: head learning rate.
        backbone_lr_factor: rate of the top block group relative to the head.
        layer_decay: rate multiplier per block group going down from the top one.
        weight_decay: decay of weights (norms and biases get none).
        head_hidden_dim: hidden width of an MLP head (None = linear head).
        head_dropout: dropout in the head.
        label_smoothing: cross-entropy label smoothing (training only).
        class_counts: training images per class (given by the training entry point).
        class_weighted_loss: weight the loss by inverse class frequency.
        frozen_bn_eval: keep frozen blocks in eval mode so BatchNorm statistics do not move.
        freeze_batchnorm: keep every BatchNorm layer of the backbone in eval mode, unfrozen blocks too.
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        class_names: list[str],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        epochs_per_group: int = 2,
        unfreeze_milestones: Mapping[Any, Any] | None = None,
        freeze_epochs: int | None = None,
        lr: float = 3e-3,
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
        optimizer, scheduler, unfreeze_milestones = (
            plain(optimizer),
            plain(scheduler),
            plain(unfreeze_milestones),
        )
        super().__init__(
            backbone, class_names, optimizer, scheduler, lr=lr, backbone_lr_factor=backbone_lr_factor,
            layer_decay=layer_decay, weight_decay=weight_decay, head_hidden_dim=head_hidden_dim,
            head_dropout=head_dropout, label_smoothing=label_smoothing, class_counts=class_counts,
            class_weighted_loss=class_weighted_loss, frozen_bn_eval=frozen_bn_eval,
            freeze_batchnorm=freeze_batchnorm,
        )  # fmt: skip
        self.save_hyperparameters()
        self.schedule_settings = {
            "epochs_per_group": epochs_per_group,
            "unfreeze_milestones": unfreeze_milestones,
            "freeze_epochs": freeze_epochs,
        }
        # Checked now, so a bad schedule stops the run before any data is loaded.
        build_schedule(self.block_group_names, **self.schedule_settings)
        self._unfreezing = GradualUnfreezing(**self.schedule_settings)
        self.set_trainable_blocks(0)

    def configure_callbacks(self) -> list[L.Callback]:
        """The callback that runs the schedule comes with the module: choosing the model is enough."""
        if self._unfreezing in self.trainer.callbacks:  # attached by an earlier fit/test of this trainer
            return []
        return [self._unfreezing]

    def param_groups(self) -> list[dict]:
        """The head's groups, then every block group's (frozen ones too), each at its layer-wise rate."""
        groups = split_weight_decay(self.head.named_parameters(), self.weight_decay, self.lr, "head")
        for index, group in enumerate(self.backbone.block_groups()):
            groups += _decay_split(
                group.parameters(), self.weight_decay, self.block_group_lr(index), group.name
            )
        return groups

    # ------------------------------------------------------------------------------------------------
    # Block-group API of TransferModule (set_trainable_blocks & co.), provided here until the base class
    # offers it.
    @property
    def block_group_names(self) -> list[str]:
        """The backbone's block groups, input to output."""
        return [group.name for group in self.backbone.block_groups()]

    @property
    def num_block_groups(self) -> int:
        """How many block groups the backbone has."""
        return len(self.backbone.block_groups())

    @property
    def num_trainable_blocks(self) -> int:
        """How many block groups (from the top) are trainable."""
        groups = self.backbone.block_groups()
        return sum(1 for g in groups if any(p.requires_grad for p in g.parameters()))

    def set_trainable_blocks(self, count: int | str) -> None:
        """The last ``count`` block groups trainable (``"all"``: every one), the rest frozen (and kept in
        eval mode when ``frozen_bn_eval``)."""
        groups = self.backbone.block_groups()
        number = len(groups) if count == "all" else count
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= len(groups):
            raise UserError(f"Cannot make {count!r} of {len(groups)} block groups trainable.")
        frozen, trainable = groups[: len(groups) - number], groups[len(groups) - number :]
        for group in trainable:
            for module in group.modules:
                module.requires_grad_(True)
        self._frozen_modules = [m for g in frozen for m in g.modules]
        for module in self._frozen_modules:
            module.requires_grad_(False)
        self.train(self.training)

    def block_group_lr(self, index: int) -> float:
        """``lr * backbone_lr_factor * layer_decay ** (groups above index)``: fixed by the group's place."""
        return self.lr * self.backbone_lr_factor * self.layer_decay ** (self.num_block_groups - 1 - index)


def _decay_split(params: Iterable[nn.Parameter], weight_decay: float, lr: float, name: str) -> list[dict]:
    """Decay and no-decay groups of a block group, frozen parameters included (unlike split_weight_decay)."""
    decay, no_decay = [], []
    for param in params:
        (no_decay if param.ndim <= 1 else decay).append(param)
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": f"backbone.{name}"})
    if no_decay:
        groups.append(
            {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"backbone.{name}/no_decay"}
        )
    return groups
