"""The two schedules of DANN (Ganin et al., 2016), both functions of the training progress p in [0, 1].

``p`` is the share of the run's optimizer steps already taken (``global_step / total_steps``, with
``total_steps`` from ``trainer.estimated_stepping_batches``), so both schedules follow the run's real length
and continue where they were when a run resumes from a checkpoint.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from transferlab.errors import UserError


def training_progress(step: int, total_steps: int) -> float:
    """``step / total_steps`` clipped to [0, 1] (``total_steps`` below 1 counts as 1)."""
    return min(1.0, max(0.0, step / max(1, total_steps)))


def reversal_coefficient(progress: float, gamma: float = 10.0) -> float:
    """The gradient-reversal weight ``lambda_p = 2 / (1 + exp(-gamma * p)) - 1``.

    It rises from 0 at the start (the domain classifier's gradients are still noise) to almost 1.

    Args:
        progress: training progress ``p`` in [0, 1].
        gamma: steepness of the ramp (10 in the paper).
    """
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def annealed_lr_factor(progress: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """The learning-rate multiplier ``1 / (1 + alpha * p) ** beta`` of the paper's ``mu_p``."""
    return 1.0 / (1.0 + alpha * progress) ** beta


def dann_annealing(
    optimizer: Optimizer, total_steps: int, alpha: float = 10.0, beta: float = 0.75
) -> LRScheduler:
    """Every parameter group's rate follows ``mu_p = mu_0 / (1 + alpha * p) ** beta``.

    ``mu_0`` is the group's own rate (so the backbone keeps its 0.1x ratio to the new layers).

    Args:
        optimizer: the optimizer whose groups are scheduled.
        total_steps: optimizer steps of the whole run (``trainer.estimated_stepping_batches``).
        alpha: decay speed (10 in the paper).
        beta: decay exponent (0.75 in the paper).

    Raises:
        UserError: ``alpha`` or ``beta`` is negative.
    """
    if alpha < 0 or beta < 0:
        raise UserError(f"model.scheduler.alpha={alpha} and model.scheduler.beta={beta} must be >= 0.")
    return LambdaLR(
        optimizer, lambda step: annealed_lr_factor(training_progress(step, total_steps), alpha, beta)
    )
