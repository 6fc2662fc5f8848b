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


def test_atomic_files_get_the_permissions_of_a_file_written_in_place(tmp_path: Path) -> None:
    from transferlab.utils.atomic import write_json_atomically

    in_place = tmp_path / "in_place.json"
    in_place.write_text("{}")
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1}, tmp_path / "last.ckpt")
    write_json_atomically({}, tmp_path / "metrics.json")
    expected = in_place.stat().st_mode & 0o777
    for name in ("last.ckpt", "metrics.json"):  # a temporary file made private would stay private
        assert (tmp_path / name).stat().st_mode & 0o777 == expected, name


def test_atomic_copy_leaves_no_partial_file_when_the_source_is_missing(tmp_path: Path) -> None:
    from transferlab.utils.atomic import copy_atomically

    source = tmp_path / "best.ckpt"
    source.write_bytes(b"weights" * 1000)
    copied = copy_atomically(source, tmp_path / "new_run" / "best.ckpt")
    assert copied.read_bytes() == source.read_bytes()
    with pytest.raises(FileNotFoundError):
        copy_atomically(tmp_path / "gone.ckpt", tmp_path / "new_run" / "other.ckpt")
    assert [p.name for p in (tmp_path / "new_run").iterdir()] == ["best.ckpt"]


def test_every_file_rename_in_the_package_is_the_atomic_writer() -> None:
    # One writer: a module renaming files itself would bypass its cleanup and permissions.
    import re

    import transferlab

    package = Path(transferlab.__file__).parent
    renaming = re.compile(r"os\.replace\(|os\.rename\(|\.rename\(|\.replace\(tmp|mkstemp|NamedTemporaryFile")
    found = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if renaming.search(path.read_text(encoding="utf-8"))
    }
    # The demo writers move a whole folder of demo images into place (a directory, not a file).
    assert found == {"utils/atomic.py", "data/demo.py", "data/glyphs.py", "data/domain_demos.py"}


def _resuming_trainer(resumed: Path):
    from types import SimpleNamespace

    from lightning.pytorch.trainer.states import TrainerFn

    strategy = SimpleNamespace(broadcast=lambda obj, src=0: obj)
    state = SimpleNamespace(fn=TrainerFn.FITTING)
    return SimpleNamespace(is_global_zero=True, ckpt_path=str(resumed), strategy=strategy, state=state)


def test_resume_into_a_new_folder_carries_the_top_k_checkpoints_and_scores(tmp_path: Path) -> None:
    from transferlab.callbacks import ResumableModelCheckpoint

    old, moved, new = tmp_path / "old", tmp_path / "moved", tmp_path / "new"
    moved.mkdir()
    for name, content in (("best.ckpt", b"epoch 3"), ("best-v1.ckpt", b"epoch 1"), ("last.ckpt", b"epoch 4")):
        (moved / name).write_bytes(content)  # the run folder moved: nothing left at the recorded paths
    state = {
        "monitor": "val/acc",
        "dirpath": str(old),
        "best_model_score": torch.tensor(0.9),
        "best_model_path": str(old / "best.ckpt"),
        "best_k_models": {
            str(old / "best.ckpt"): torch.tensor(0.9),
            str(old / "best-v1.ckpt"): torch.tensor(0.7),
        },
        "kth_best_model_path": str(old / "best-v1.ckpt"),
        "kth_value": torch.tensor(0.7),
        "last_model_path": "",
        "current_score": torch.tensor(0.5),
    }
    callback = ResumableModelCheckpoint(
        dirpath=str(new), filename="best", monitor="val/acc", mode="max", save_top_k=2
    )
    assert callback.state_key.startswith("ModelCheckpoint{")  # checkpoints of Lightning's callback resume
    callback.on_load_checkpoint(_resuming_trainer(moved / "last.ckpt"), None, {})
    callback.load_state_dict(state)

    assert (new / "best.ckpt").read_bytes() == b"epoch 3" and (
        new / "best-v1.ckpt"
    ).read_bytes() == b"epoch 1"
    assert callback.best_model_path == str(new / "best.ckpt") and float(
        callback.best_model_score
    ) == pytest.approx(0.9)
    assert {k: float(v) for k, v in callback.best_k_models.items()} == pytest.approx(
        {str(new / "best.ckpt"): 0.9, str(new / "best-v1.ckpt"): 0.7}
    )
    assert callback.kth_best_model_path == str(new / "best-v1.ckpt") and float(
        callback.kth_value
    ) == pytest.approx(0.7)

    # The same state into its own folder is Lightning's plain restore.
    same = ResumableModelCheckpoint(dirpath=str(old), filename="best", monitor="val/acc", save_top_k=2)
    same.on_load_checkpoint(_resuming_trainer(moved / "last.ckpt"), None, {})
    same.load_state_dict(state)
    assert same.best_model_path == str(old / "best.ckpt") and not (old / "best.ckpt").exists()
