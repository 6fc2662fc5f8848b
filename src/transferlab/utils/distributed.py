"""Choices that depend on the machine and the launch mode, made when the trainer is built."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.strategies import DDPStrategy

StartMethod = Literal["auto", "popen", "spawn", "fork", "forkserver"]


def mixed_precision() -> str:
    """The GPU's best mixed precision: ``"bf16-mixed"`` where it has bfloat16, else ``"16-mixed"``.

    bfloat16 needs no loss scaling and does not overflow, so it is preferred; older GPUs (before Ampere)
    only have fast float16.
    """
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "16-mixed"


def in_hydra_multirun() -> bool:
    """True when the current process runs a job of a Hydra multirun (``-m``, a sweeper)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    return HydraConfig.get().get("mode") == RunMode.MULTIRUN


def ddp_start_method(requested: StartMethod = "auto") -> str:
    """How DDP starts its extra processes: ``requested``, or for ``"auto"`` the one that is safe here.

    Lightning's default, ``"popen"``, runs the command line again for every extra process. Inside a
    Hydra multirun that command line is the whole sweep, which then starts again in each process and
    hangs or multiplies the jobs (Lightning issue #11300). ``"spawn"`` hands the trainer to new
    processes by pickling instead, and never re-enters Hydra.
    """
    if requested != "auto":
        return requested
    return "spawn" if in_hydra_multirun() else "popen"


def ddp_strategy(start_method: StartMethod = "auto", **kwargs: Any) -> DDPStrategy:
    """A ``DDPStrategy`` whose start method is chosen by :func:`ddp_start_method`.

    Args:
        start_method: ``"auto"`` (popen for a single run, spawn inside a multirun) or a fixed method.
        **kwargs: passed on to ``DDPStrategy`` (``find_unused_parameters``, ``process_group_backend``...).
    """
    return DDPStrategy(start_method=ddp_start_method(start_method), **kwargs)
