"""Checkpoint writing that never leaves a half-written file behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from transferlab.utils.atomic import torch_save_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing through :func:`~transferlab.utils.atomic.torch_save_atomically`.

    A crash or a full disk during ``save_checkpoint`` leaves the previous ``last.ckpt``/``best.ckpt``
    intact. Local paths only (the temporary file is renamed in place). The checkpoint is pickled straight
    into the file: Lightning's own writer first pickles it into memory and then copies those bytes, which
    the rename onto the target makes unnecessary here.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (local files only)")
        torch_save_atomically(checkpoint, path)
