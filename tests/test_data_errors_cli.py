"""Issue 3, point 3: each data problem a user can cause is one clear message naming the path and the fix,
and the training command exits with status 2 without a traceback.

Two cases go through the real command line in a subprocess (about 8 s each); the others call the Hydra
entry point in-process, which exercises the same config composition, ``run_task`` and exit path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

import transferlab.train
from tests.conftest import FAST_OVERRIDES, run_cli


def _class_folders(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (40 * i % 256, 90, 200)).save(root / name / f"{i}.png")
    return root


def _presplit(root: Path, classes: dict[str, dict[str, int]]) -> Path:
    for split, per_class in classes.items():
        _class_folders(root / split, per_class)
    return root


def _train_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, *overrides: str
) -> str:
    """Run ``transferlab-train`` in this process; return its stderr, having checked exit status 2."""
    monkeypatch.setattr(
        sys, "argv", ["transferlab-train", *FAST_OVERRIDES, f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    )
    GlobalHydra.instance().clear()
    try:
        with pytest.raises(SystemExit) as info:
            transferlab.train.main()
    finally:
        GlobalHydra.instance().clear()
    stderr = capsys.readouterr().err
    assert info.value.code == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.count("error:") == 1
    return " ".join(stderr.split())  # rich may wrap long lines; compare with single spaces


def test_missing_root(monkeypatch, capsys, tmp_path: Path) -> None:
    missing = tmp_path / "photos"
    stderr = _train_in_process(monkeypatch, capsys, tmp_path, f"data.root={missing}")
    assert f"Data root not found: {missing}" in stderr and "Set data.root to a folder" in stderr


def test_missing_split_folder(monkeypatch, capsys, tmp_path: Path) -> None:
    root = _presplit(tmp_path / "d", {"train": {"a": 2, "b": 2}, "test": {"a": 2, "b": 2}})
    stderr = _train_in_process(monkeypatch, capsys, tmp_path, f"data.root={root}")
    assert "has train/, test/ but no val/" in stderr and f"Create {root / 'val'}" in stderr


def test_class_sets_differ_between_splits(monkeypatch, capsys, tmp_path: Path) -> None:
    both = {"a": 2, "b": 2}
    root = _presplit(tmp_path / "d", {"train": both, "val": both, "test": {**both, "c": 2}})
    stderr = _train_in_process(monkeypatch, capsys, tmp_path, f"data.root={root}")
    assert f"The splits in {root} have different class folders" in stderr
    assert "train/ lacks c; val/ lacks c" in stderr and "same class folders" in stderr


def test_fewer_than_two_classes(monkeypatch, capsys, tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"only": 5})
    stderr = _train_in_process(monkeypatch, capsys, tmp_path, f"data.root={root}")
    assert f"Found 1 class folder in {root} (only)" in stderr and "at least 2" in stderr


def test_split_fractions_leave_a_class_empty(monkeypatch, capsys, tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"big": 10, "rare": 2})
    stderr = _train_in_process(monkeypatch, capsys, tmp_path, f"data.root={root}")
    assert "Class 'rare' has 2 images, too few for val_fraction=0.15 and test_fraction=0.15" in stderr
    assert "lower data.val_fraction/data.test_fraction" in stderr


def test_class_folder_without_image_files(monkeypatch, capsys, tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"a": 5, "b": 5})
    (root / "c").mkdir()
    (root / "c" / "Thumbs.db").write_bytes(bytes(16))
    (root / "c" / "notes.txt").write_text("to do: add photos")
    stderr = _train_in_process(monkeypatch, capsys, tmp_path, f"data.root={root}")
    assert f"Class folder {root / 'c'} has no image files" in stderr and "Add images of 'c'" in stderr


def test_fold_out_of_range(monkeypatch, capsys, tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"a": 6, "b": 6})
    stderr = _train_in_process(
        monkeypatch, capsys, tmp_path, f"data.root={root}", "data.num_folds=3", "data.fold=3"
    )
    assert "data.fold=3 is out of range for data.num_folds=3: use 0 to 2" in stderr


@pytest.mark.parametrize(
    "case", ["class_without_usable_images", pytest.param("decompression_bomb", marks=pytest.mark.slow)]
)
def test_cli_exits_with_one_line(tmp_path: Path, case: str) -> None:
    root = _class_folders(tmp_path / "d", {"a": 5, "b": 5})
    if case == "class_without_usable_images":
        (root / "c").mkdir()
        (root / "c" / "0.jpg").write_bytes(b"<html>403 Forbidden</html>")
        (root / "c" / "1.png").write_bytes(b"")
        expected = [f"Class folder {root / 'c'} has no usable images", "remove the folder"]
        extra: list[str] = []
    else:
        Image.new("L", (64, 64)).save(root / "a" / "huge.png")
        expected = [f"Image {root / 'a' / 'huge.png'} is too large (64 x 64", "data.max_image_pixels=null"]
        extra = ["data.max_image_pixels=1000"]
    result = run_cli(
        "transferlab.train",
        *FAST_OVERRIDES,
        f"data.root={root}",
        f"hydra.run.dir={tmp_path / 'out'}",
        *extra,
        cwd=tmp_path,
    )
    stderr = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in stderr
