"""Callbacks for CLI tests of the training order: they run inside the launched (and spawned) processes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch

if TYPE_CHECKING:
    import pytest

ROOT = Path(__file__).resolve().parents[2]

# Largest distance between a batch image and the training image it is taken for: the same transform run in
# a loader worker (one thread) can round differently; two different noise images lie far further apart.
_SAME_IMAGE = 0.5


class IndexRecorder(L.Callback):
    """Writes which training samples reached this rank in each epoch, to ``folder/rank{R}_epoch{E}.json``.

    A sample is recognised by its pixels: each image of a batch is matched to the nearest image of the
    training set, transformed here the same way (so training must run without augmentation). This records
    what the model was actually fed, whatever sampler, sharding or worker processes produced it.

    Args:
        folder: where to write the records (created if needed).
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self._reference: torch.Tensor | None = None
        self._seen: list[int] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dataset = trainer.datamodule.train_set
        images = [dataset[index][0] for index in range(len(dataset))]
        self._reference = torch.stack(images).flatten(1).float()
        between = torch.cdist(self._reference, self._reference) + torch.eye(len(images)) * 1e9
        if between.min() < 10 * _SAME_IMAGE:
            raise AssertionError("two training images are too alike to tell which one a batch holds")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seen = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        assert self._reference is not None
        distances = torch.cdist(batch[0].detach().flatten(1).float().cpu(), self._reference)
        nearest = distances.min(dim=1)
        if nearest.values.max() > _SAME_IMAGE:
            raise AssertionError(f"a batch image matches no training image (distance {nearest.values.max()})")
        self._seen.extend(nearest.indices.tolist())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.json"
        path.write_text(json.dumps(self._seen))


def read_recorded(folder: Path, rank: int, epoch: int) -> list[int]:
    """The dataset indices :class:`IndexRecorder` saw on ``rank`` in ``epoch``, in arrival order."""
    return json.loads((folder / f"rank{rank}_epoch{epoch}.json").read_text())


def make_tests_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the repository root on PYTHONPATH, so a CLI run can instantiate callbacks from ``tests``."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
