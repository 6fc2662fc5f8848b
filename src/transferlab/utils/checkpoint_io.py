"""Checkpoint writing that never leaves a half-written file behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from transferlab.utils.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing through :func:`~transferlab.utils.atomic.atomic_path`.

    A crash or a full disk during ``save_checkpoint`` leaves the previous ``last.ckpt``/``best.ckpt``
    intact. Local paths only (the temporary file is renamed in place).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
