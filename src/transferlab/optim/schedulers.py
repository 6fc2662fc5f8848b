"""Learning-rate schedules whose length comes from the trainer.

Each factory takes the optimizer and ``total_steps`` (the module passes
``trainer.estimated_stepping_batches``), so no config ever holds a made-up step count. Configure them as
``_partial_: true`` nodes; they are stepped every optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from transferlab.errors import UserError


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise UserError(f"{name}={value} must be in [0, 1): it is a fraction of the training steps.")


def constant(optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.0) -> LRScheduler:
    """Constant rate after an optional linear warm-up."""
    _check_fraction("warmup_fraction", warmup_fraction)
    warmup = int(total_steps * warmup_fraction)
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)


def cosine_with_warmup(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.0
) -> LRScheduler:
    """Linear warm-up, then cosine decay of every group's rate down to ``min_lr_ratio`` of it."""
    _check_fraction("warmup_fraction", warmup_fraction)
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def step_decay(
    optimizer: Optimizer, total_steps: int, milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1
) -> LRScheduler:
    """Multiply every group's rate by ``gamma`` at each milestone (fractions of the training steps)."""
    for milestone in milestones:
        _check_fraction("milestones", milestone)
    steps = sorted(int(total_steps * m) for m in milestones)
    return LambdaLR(optimizer, lambda step: gamma ** sum(step >= s for s in steps))


def one_cycle(optimizer: Optimizer, total_steps: int, pct_start: float = 0.3) -> LRScheduler:
    """One-cycle policy peaking at each group's own configured rate."""
    _check_fraction("pct_start", pct_start)
    max_lr = [group["lr"] for group in optimizer.param_groups]
    return OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(1, total_steps), pct_start=pct_start)
