"""Checkpoints and records are written atomically: a failed save leaves the previous file intact."""

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


def test_atomic_json_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    from transferlab.utils.atomic import write_atomically, write_json_atomically

    path = tmp_path / "metrics.json"
    write_json_atomically({"a": 1}, path)

    def fails_half_way(handle) -> None:
        handle.write(b'{"a": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, fails_half_way)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
