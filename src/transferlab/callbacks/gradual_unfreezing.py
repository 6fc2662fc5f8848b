"""Gradual unfreezing: the head trains alone first, then backbone block groups join from the top.

Design (why it survives resume, every scheduler and DDP):

- The optimizer holds EVERY backbone block group from step 0, at the rate the layer-wise rule gives it.
  Frozen parameters get no gradient, and torch optimizers skip parameters without one (no update, no
  weight decay, no state). So the learning-rate scheduler sees all groups from the start (OneCycle's
  per-group ``max_lr``, LambdaLR's ``base_lrs``), and optimizer and scheduler states have the same shape
  in every epoch: a checkpoint loads into a fresh run without re-adding groups.
- The trainable set is a function of the epoch alone. It is applied at every train-epoch start, so a run
  resumed from any checkpoint trains exactly what an unbroken run trains (``requires_grad`` and BatchNorm
  mode both come from :meth:`set_trainable_blocks`).
- DDP reduces gradients only of the parameters that required grad when it wrapped the model (the head
  here). The gradients of groups unfrozen later are averaged over the ranks by this callback before each
  optimizer step, so every rank keeps identical weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from transferlab.errors import UserError
from transferlab.strategies.base import TransferModule

ALL = "all"

log = logging.getLogger(__name__)


@rank_zero_only
def _info(message: str) -> None:
    """Log on rank 0 where the user sees it: through the run's log handlers (console and the run's log
    file) when the process has them, else through Lightning's console logger (DDP-spawned workers)."""
    if log.hasHandlers():
        log.info(message)
    else:
        rank_zero_info(message)


@dataclass(frozen=True)
class UnfreezeSchedule:
    """How many backbone block groups (counted from the top) are trainable in each epoch.

    Attributes:
        milestones: ``(epoch, trainable groups)`` pairs, epochs increasing from 0, counts growing.
        num_groups: block groups of the backbone.
    """

    milestones: tuple[tuple[int, int], ...]
    num_groups: int

    def trainable_at(self, epoch: int) -> int:
        """Trainable block groups during ``epoch``."""
        return max(count for start, count in self.milestones if start <= epoch)

    def as_dict(self) -> dict[int, int]:
        """The milestones as ``{epoch: trainable groups}``."""
        return dict(self.milestones)

    def describe(
        self, group_names: Sequence[str], group_lr: Callable[[int], float], max_epochs: int | None
    ) -> list[str]:
        """Readable lines: which groups train from which epoch, at which base rate."""
        last_epoch = max_epochs - 1 if max_epochs is not None and max_epochs > 0 else None
        lines = []
        phases = [
            (start, count) for start, count in self.milestones if last_epoch is None or start <= last_epoch
        ]
        for index, (start, count) in enumerate(phases):
            end = phases[index + 1][0] - 1 if index + 1 < len(phases) else last_epoch
            span = f"epoch {start}" if end == start else f"epochs {start}-{'' if end is None else end}"
            previous = phases[index - 1][1] if index else 0
            first_new, stop_new = self.num_groups - count, self.num_groups - previous
            if count == 0:
                what = "head only"
            else:
                added = [
                    f"{group_names[i]} (lr {group_lr(i):.1e})" for i in reversed(range(first_new, stop_new))
                ]
                what = "+ " + ", ".join(added) if added else "no change"
                if count == self.num_groups:
                    what += "; every block group trains"
            lines.append(f"  {span:<12} {what}")
        final = phases[-1][1] if phases else 0
        if final < self.num_groups and last_epoch is not None:
            frozen = group_names[: self.num_groups - final]
            lines.append(f"  frozen until the end (max_epochs={max_epochs}): {', '.join(frozen)}")
        return lines


def build_schedule(
    group_names: Sequence[str],
    *,
    epochs_per_group: int = 2,
    unfreeze_milestones: Mapping[Any, Any] | None = None,
    freeze_epochs: int | None = None,
) -> UnfreezeSchedule:
    """The schedule the settings describe; bad settings raise one clear :class:`UserError`.

    Args:
        group_names: the backbone's block groups, input to output.
        epochs_per_group: one more group (from the top) every this many epochs; the head trains alone for
            the first ``epochs_per_group`` epochs. Used when neither of the next two is given.
        unfreeze_milestones: ``{epoch: trainable groups}`` (a number or ``"all"``); epoch 0 defaults to 0.
        freeze_epochs: fastai's ``fine_tune``: the head alone for this many epochs, then everything.
    """
    num_groups = len(group_names)
    if isinstance(epochs_per_group, bool) or not isinstance(epochs_per_group, int) or epochs_per_group < 1:
        raise UserError(
            f"model.epochs_per_group={epochs_per_group!r} is not valid: use a whole number of epochs >= 1 "
            "(one more block group is unfrozen every that many epochs)."
        )
    if unfreeze_milestones is not None and freeze_epochs is not None:
        raise UserError(
            "model.unfreeze_milestones and model.freeze_epochs both set: choose one schedule (set the other "
            "to null)."
        )
    if unfreeze_milestones is not None:
        milestones = _parse_milestones(unfreeze_milestones, group_names)
    elif freeze_epochs is not None:
        if isinstance(freeze_epochs, bool) or not isinstance(freeze_epochs, int) or freeze_epochs < 0:
            raise UserError(
                f"model.freeze_epochs={freeze_epochs!r} is not valid: use a whole number of epochs >= 0 "
                "(the head trains alone for that long, then every block group)."
            )
        milestones = ((0, 0), (freeze_epochs, num_groups)) if freeze_epochs else ((0, num_groups),)
    else:
        milestones = tuple((count * epochs_per_group, count) for count in range(num_groups + 1))
    return UnfreezeSchedule(milestones, num_groups)


def _parse_milestones(raw: Mapping[Any, Any], group_names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    num_groups = len(group_names)
    if not isinstance(raw, Mapping) or not raw:
        raise UserError(
            f"model.unfreeze_milestones={raw!r} is not valid: give {{epoch: trainable block groups}}, "
            "e.g. {0: 0, 2: 1, 4: 3, 6: all}."
        )
    pairs = []
    for key, value in raw.items():
        epoch = int(key) if isinstance(key, str) and key.isdigit() else key
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise UserError(f"model.unfreeze_milestones: epoch {key!r} is not valid: use whole numbers >= 0.")
        count = num_groups if value == ALL else value
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= num_groups:
            raise UserError(
                f"model.unfreeze_milestones asks for {value!r} trainable block groups at epoch {epoch}, but "
                f"the backbone has {num_groups} ({', '.join(group_names)}): use 0 to {num_groups} or 'all'."
            )
        pairs.append((epoch, count))
    epochs, counts = [e for e, _ in pairs], [c for _, c in pairs]
    if epochs != sorted(set(epochs)) or counts != sorted(counts):
        raise UserError(
            f"model.unfreeze_milestones={dict(pairs)} is out of order: list epochs in increasing order, each "
            "with at least as many trainable block groups as the one before (groups are only unfrozen)."
        )
    if epochs[0] != 0:
        pairs.insert(0, (0, 0))
    return tuple(pairs)


class GradualUnfreezing(L.Callback):
    """Unfreeze a :class:`~transferlab.strategies.TransferModule`'s block groups from the top on a schedule.

    The module's optimizer must hold every block group from the start (``model=gradual_unfreezing``
    builds it so and adds this callback itself; other modules are refused). At each train-epoch start the
    callback sets the number of trainable groups the schedule gives for that epoch, logs each unfreeze,
    and logs ``train/trainable_params`` and ``train/trainable_block_groups``. Under DDP it averages the
    gradients of the groups DDP does not reduce (those unfrozen after the model was wrapped).

    Args:
        epochs_per_group: one more group every this many epochs (the head alone first).
        unfreeze_milestones: ``{epoch: trainable groups}`` instead (a number or ``"all"``).
        freeze_epochs: fastai-style instead: the head alone for this many epochs, then everything.
    """

    def __init__(
        self,
        epochs_per_group: int = 2,
        unfreeze_milestones: Mapping[Any, Any] | None = None,
        freeze_epochs: int | None = None,
    ) -> None:
        self.settings = {
            "epochs_per_group": epochs_per_group,
            "unfreeze_milestones": dict(unfreeze_milestones) if unfreeze_milestones is not None else None,
            "freeze_epochs": freeze_epochs,
        }
        self.schedule: UnfreezeSchedule | None = None
        self._ddp_reduced: set[int] | None = None  # ids of the parameters DDP's reducer averages
        self._self_reduced: list[nn.Parameter] = []
        self._restored: dict[str, Any] | None = None
        self._first_epoch = True

    # ----------------------------------------------------------------- set-up
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(pl_module, TransferModule):
            raise UserError(
                f"Gradual unfreezing needs a transferlab strategy module (TransferModule), not "
                f"{type(pl_module).__name__}. Use model=gradual_unfreezing."
            )
        self.schedule = build_schedule(pl_module.block_group_names, **self.settings)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_epoch = True
        self._check_optimizer_holds_every_group(trainer, pl_module)
        wrapped = trainer.strategy.model
        if isinstance(wrapped, DistributedDataParallel):
            # The reducer was built from the parameters requiring grad at wrap time (just before this hook).
            ignored = wrapped.parameters_to_ignore
            self._ddp_reduced = {
                id(p) for n, p in wrapped.module.named_parameters() if p.requires_grad and n not in ignored
            }
        elif trainer.world_size > 1:
            raise UserError(
                f"Gradual unfreezing supports one device or DDP, not {type(trainer.strategy).__name__}: use "
                "trainer=ddp (or ddp_sim) for several devices."
            )
        names = pl_module.block_group_names
        _info(
            f"Gradual unfreezing of {len(names)} block groups (input to output: {', '.join(names)}); the "
            "head always trains. Schedule (base rates; model.scheduler shapes them over the run):\n"
            + "\n".join(self.schedule.describe(names, pl_module.block_group_lr, trainer.max_epochs))
        )

    @staticmethod
    def _check_optimizer_holds_every_group(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        in_optimizer = {id(p) for opt in trainer.optimizers for g in opt.param_groups for p in g["params"]}
        outside = [n for n, p in pl_module.named_parameters() if id(p) not in in_optimizer]
        if outside:
            raise UserError(
                "Gradual unfreezing needs every parameter in the optimizer from the start, but "
                f"{len(outside)} are not (e.g. {outside[0]}). Use model=gradual_unfreezing, whose optimizer "
                "holds every block group."
            )

    # ----------------------------------------------------------------- schedule
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        before, wanted = pl_module.num_trainable_blocks, self.schedule.trainable_at(epoch)
        if self._restored is not None:
            self._report_resume(epoch, wanted)
        if wanted != before:
            pl_module.set_trainable_blocks(wanted)
            self._announce(pl_module, epoch, before, wanted, resumed=self._first_epoch and epoch > 0)
        self._first_epoch = False
        self._self_reduced = (
            [p for p in pl_module.parameters() if p.requires_grad and id(p) not in self._ddp_reduced]
            if self._ddp_reduced is not None
            else []
        )
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        pl_module.log(
            "train/trainable_params", float(trainable), on_step=False, on_epoch=True, sync_dist=True
        )
        pl_module.log(
            "train/trainable_block_groups", float(wanted), on_step=False, on_epoch=True, sync_dist=True
        )

    def _announce(
        self, pl_module: L.LightningModule, epoch: int, before: int, now: int, resumed: bool
    ) -> None:
        names, total = pl_module.block_group_names, self.schedule.num_groups
        new = [
            f"{names[i]} (lr {pl_module.block_group_lr(i):.1e})"
            for i in reversed(range(total - now, total - before))
        ]
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        what = f"resumed with {', '.join(new)} trainable" if resumed else f"unfroze {', '.join(new)}"
        _info(
            f"Epoch {epoch}: {what}; trainable: head + {now}/{total} block groups, {trainable:,} parameters."
        )

    def _report_resume(self, epoch: int, wanted: int) -> None:
        saved = self._restored
        self._restored = None
        if saved.get("milestones") != self.schedule.as_dict():
            rank_zero_warn(
                f"The checkpoint was trained with the unfreezing schedule {saved.get('milestones')}; this "
                f"run uses {self.schedule.as_dict()} from epoch {epoch} on ({wanted} trainable block groups)."
            )

    # ----------------------------------------------------------------- DDP
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._self_reduced:
            average_gradients(self._self_reduced, trainer.strategy.model.process_group)

    # ----------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        # A record for the resumed run (the trainable set itself follows from the epoch).
        return {"milestones": self.schedule.as_dict() if self.schedule else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)


def average_gradients(params: Sequence[nn.Parameter], group: dist.ProcessGroup | None = None) -> None:
    """Average the gradients of ``params`` over the ranks of ``group``, as DDP does, with one all-reduce
    per dtype. A missing gradient counts as zeros, so every rank sends tensors of the same sizes."""
    world_size = dist.get_world_size(group)
    by_dtype: dict[tuple[torch.device, torch.dtype], list[nn.Parameter]] = {}
    for param in params:
        by_dtype.setdefault((param.device, param.dtype), []).append(param)
    for bucket in by_dtype.values():
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in bucket]
        )
        dist.all_reduce(flat, group=group)
        flat.div_(world_size)
        offset = 0
        for param in bucket:
            view = flat[offset : offset + param.numel()].view_as(param)
            offset += param.numel()
            if param.grad is None:
                param.grad = view.clone()
            else:
                param.grad.copy_(view)
