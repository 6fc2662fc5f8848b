"""Build the trainer, and callbacks and loggers from named config entries (experiments switch them by key)."""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from transferlab.utils.lightning_messages import drop_lightning_advertisements


def _instantiate_entries(entries: DictConfig | None) -> list:
    if not entries:
        return []
    return [
        instantiate(entry)
        for entry in entries.values()
        if isinstance(entry, DictConfig) and "_target_" in entry
    ]


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """Every entry of the ``callbacks`` group that has a ``_target_``; null entries are skipped."""
    return _instantiate_entries(cfg)


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Every entry of the ``logger`` group that has a ``_target_``; null entries are skipped."""
    return _instantiate_entries(cfg)


def instantiate_trainer(cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """The ``trainer`` config's Lightning ``Trainer`` (``kwargs`` override it), without Lightning's
    advertisement in the output (:mod:`~transferlab.utils.lightning_messages`)."""
    drop_lightning_advertisements()
    return instantiate(cfg, **kwargs)
