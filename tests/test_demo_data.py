"""Tests of the Animal-MNIST demo writer and the restricted unpickler it reads the package data with."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.data import ANIMAL_MNIST_CLASSES, ImageFolderDataModule, write_animal_mnist
from transferlab.data import demo as demo_module
from transferlab.data.safe_pickle import NumpyArrayUnpickler, load_pickled_array
from transferlab.errors import UserError

SMALL = {"train": 3, "val": 2, "test": 2}
PRE = {"input_size": 16, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def _listing(root: Path) -> dict[str, dict[str, list[str]]]:
    return {
        split: {c: sorted(f.name for f in (root / split / c).iterdir()) for c in ANIMAL_MNIST_CLASSES}
        for split in ("train", "val", "test")
    }


def test_writes_expected_tree(tmp_path: Path) -> None:
    root = write_animal_mnist(tmp_path / "animals", SMALL, seed=0, progress=False)
    assert sorted(p.name for p in (root / "train").iterdir()) == list(ANIMAL_MNIST_CLASSES)
    listing = _listing(root)
    for cls in ANIMAL_MNIST_CLASSES:
        names = {split: listing[split][cls] for split in listing}
        assert {split: len(files) for split, files in names.items()} == SMALL
        every = names["train"] + names["val"] + names["test"]
        assert len(set(every)) == len(every)  # disjoint subsets of the package's images
    with Image.open(root / "val" / "zebra" / listing["val"]["zebra"][0]) as image:
        assert image.size == (28, 28)
    parameters = json.loads((root / ".transferlab-demo.json").read_text())
    assert parameters["per_class"] == SMALL and parameters["seed"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["animals"]  # no temporary folder left behind


def test_same_seed_same_images_and_idempotent(tmp_path: Path) -> None:
    root = write_animal_mnist(tmp_path / "a", SMALL, progress=False)
    first = _listing(root)
    marker = root / "train" / "bear" / first["train"]["bear"][0]
    mtime = marker.stat().st_mtime_ns
    assert write_animal_mnist(root, SMALL, progress=False) == root
    assert marker.stat().st_mtime_ns == mtime and _listing(root) == first
    assert _listing(write_animal_mnist(tmp_path / "b", SMALL, progress=False)) == first
    assert _listing(write_animal_mnist(tmp_path / "c", SMALL, seed=1, progress=False)) != first


def test_refuses_differing_parameters(tmp_path: Path) -> None:
    root = write_animal_mnist(tmp_path / "animals", SMALL, progress=False)
    with pytest.raises(UserError, match=rf"{re.escape(str(root))}.*other parameters.*Delete .*data\.root"):
        write_animal_mnist(root, {"train": 4, "val": 2, "test": 2}, progress=False)


def test_refuses_foreign_folder_but_datamodule_leaves_it_alone(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"not a transferlab demo folder.*Delete the folder or pick another"):
        write_animal_mnist(tmp_path / "mine", SMALL, progress=False)
    dm = ImageFolderDataModule(str(tmp_path / "mine"), demo="animal_mnist", demo_per_class=SMALL)
    dm.prepare_data()  # the user's own data: not overwritten, not an error here
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write_tree = demo_module._write_tree

    def crash(tmp: Path, *args: object, **kwargs: object) -> None:
        (tmp / "train" / "bear").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_module, "_write_tree", crash)
    with pytest.raises(KeyboardInterrupt):
        write_animal_mnist(tmp_path / "animals", SMALL, progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(demo_module, "_write_tree", real_write_tree)
    assert (write_animal_mnist(tmp_path / "animals", SMALL, progress=False) / "test" / "cow").is_dir()


def test_concurrent_writer_finishing_first_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process (another DDP node) completes the same tree while this one is still writing.
    real_write_tree = demo_module._write_tree
    root = tmp_path / "animals"

    def race(tmp: Path, *args: object, **kwargs: object) -> None:
        monkeypatch.setattr(demo_module, "_write_tree", real_write_tree)
        write_animal_mnist(root, SMALL, progress=False)
        real_write_tree(tmp, *args, **kwargs)

    monkeypatch.setattr(demo_module, "_write_tree", race)
    assert write_animal_mnist(root, SMALL, progress=False) == root.absolute()
    assert [p.name for p in tmp_path.iterdir()] == ["animals"]


def test_missing_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(demo_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install animal-mnist.*make env"):
        write_animal_mnist(tmp_path / "animals", SMALL, progress=False)
    assert not (tmp_path / "animals").exists()


def test_bad_counts(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="1000 per class"):
        write_animal_mnist(tmp_path / "x", {"train": 900, "val": 100, "test": 1}, progress=False)
    with pytest.raises(UserError, match="unknown keys"):
        write_animal_mnist(tmp_path / "x", {"training": 3}, progress=False)


class _Malicious:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("compress", [True, False])
def test_restricted_unpickler_refuses_code(tmp_path: Path, compress: bool) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Malicious(marker))
    path = tmp_path / "evil.gz"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    with pytest.raises(UserError, match=r"Refusing to load .*evil\.gz.*system"):
        load_pickled_array(path)
    opener = gzip.open if compress else open
    with opener(path, "rb") as f, pytest.raises(pickle.UnpicklingError, match=r"os|posix"):
        NumpyArrayUnpickler(f).load()
    assert not marker.exists()


def test_restricted_unpickler_loads_plain_arrays(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.int64).reshape(3, 4)
    (tmp_path / "ok.gz").write_bytes(gzip.compress(pickle.dumps(array, protocol=4)))
    assert np.array_equal(load_pickled_array(tmp_path / "ok.gz"), array)
    (tmp_path / "obj.pkl").write_bytes(pickle.dumps(np.array([1, "a"], dtype=object), protocol=4))
    with pytest.raises(UserError):
        load_pickled_array(tmp_path / "obj.pkl")


def test_datamodule_with_demo(tmp_path: Path) -> None:
    root = tmp_path / "data" / "animal_mnist"
    dm = ImageFolderDataModule(str(root), PRE, batch_size=8, demo="animal_mnist", demo_per_class=SMALL)
    dm.prepare_data()
    dm.prepare_data()  # second call: already there
    assert dm.class_names == list(ANIMAL_MNIST_CLASSES) and dm.num_classes == 10
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 16, 16) and images.dtype == torch.float32
    assert -1 <= images.min() < 0 < images.max() <= 1  # black background, white silhouettes
    assert labels.min() >= 0 and labels.max() <= 9
    assert len(dm.test_set.samples) == 20  # type: ignore[union-attr]


def test_root_with_only_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "animals").mkdir()
    (tmp_path / "animals" / ".gitkeep").write_text("")
    with pytest.raises(UserError, match=r"Cannot move the demo data into .*animals.*Delete"):
        write_animal_mnist(tmp_path / "animals", SMALL, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["animals"]
