"""Checkpoints are written atomically: a failed save leaves the previous file intact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transferlab.utils.checkpoint_io import AtomicCheckpointIO


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full")


def test_failed_save_keeps_previous_checkpoint(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"epoch": 2, "bad": _Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind
