"""Issue 3, point 5: stratified k-fold cross-validation over the training pool; the test split held out."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig
from PIL import Image

from transferlab.data import ImageFolderDataModule, fold_split, read_folds, read_split, stratified_folds
from transferlab.errors import UserError

PRE = {"input_size": 8, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def _samples(counts: list[int]) -> list[tuple[str, int]]:
    return [(f"c{label}/{i:03d}.png", label) for label, n in enumerate(counts) for i in range(n)]


def _class_folders(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(root / name / f"{i:02d}.png")
    return root


def test_folds_partition_the_pool_stratified_and_deterministically() -> None:
    samples = _samples([10, 7, 3])
    folds = stratified_folds(samples, 3, seed=0)
    flat = [s for fold in folds for s in fold]
    assert sorted(flat) == sorted(samples) and len(set(flat)) == len(flat)  # a partition
    for label, n in enumerate([10, 7, 3]):
        per_fold = [sum(1 for _, y in fold if y == label) for fold in folds]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == n  # stratified
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert folds == stratified_folds(list(reversed(samples)), 3, seed=0)  # order does not matter
    assert folds != stratified_folds(samples, 3, seed=1)
    for k in range(3):
        train, val = fold_split(folds, k)
        assert val == folds[k] and not set(train) & set(val) and len(train) + len(val) == len(samples)


def test_fold_arguments_are_checked() -> None:
    with pytest.raises(UserError, match=r"num_folds must be a whole number of at least 2"):
        stratified_folds(_samples([4, 4]), 1, seed=0)
    with pytest.raises(UserError, match=r"data\.fold=-1 is out of range for data\.num_folds=4: use 0 to 3"):
        ImageFolderDataModule("anywhere", num_folds=4, fold=-1)
    with pytest.raises(UserError, match=r"data\.num_folds must be"):
        ImageFolderDataModule("anywhere", num_folds=True)
    with pytest.raises(UserError, match=r"Class 'rare' has 2 images.*data\.num_folds=3.*at most 2"):
        stratified_folds(_samples([6, 2]), 3, seed=0, class_names=["common", "rare"])


def test_folds_over_class_folders_hold_out_the_same_test_split(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"a": 12, "b": 8})
    test_sets, val_sets, pool = [], [], None
    for fold in range(4):
        out = tmp_path / f"run{fold}"
        dm = ImageFolderDataModule(
            str(root), preprocessing=PRE, num_folds=4, fold=fold, test_fraction=0.25, split_dir=str(out)
        )
        dm.setup("fit")
        assert dm.train_set is not None and dm.val_set is not None and dm.test_set is not None
        train, val, test = (set(ds.samples) for ds in (dm.train_set, dm.val_set, dm.test_set))
        assert not train & val and not (train | val) & test
        assert pool is None or pool == train | val
        pool = train | val
        test_sets.append(test)
        val_sets.append(val)
        folds, document = read_folds(out / "folds.json")
        assert (
            document["fold"] == fold and document["num_folds"] == 4 and document["class_names"] == ["a", "b"]
        )
        assert set(folds[fold]) == val and len(document["test"]) == len(test)
        split, _ = read_split(out / "split.json")
        assert set(split["val"]) == val and set(split["test"]) == test
    assert all(test == test_sets[0] for test in test_sets) and len(test_sets[0]) == 3 + 2
    assert set().union(*val_sets) == pool and sum(map(len, val_sets)) == len(pool)  # folds partition the pool
    per_fold = [Counter(y for _, y in val) for val in val_sets]
    for label, pool_count in ((0, 9), (1, 6)):  # stratified: every fold holds a quarter of each class, +-1
        counts = [c[label] for c in per_fold]
        assert sum(counts) == pool_count and max(counts) - min(counts) <= 1 and min(counts) >= 1


def test_folds_over_a_presplit_tree_pool_train_and_val(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _class_folders(root / "train", {"a": 4, "b": 4})
    _class_folders(root / "val", {"a": 2, "b": 2})
    _class_folders(root / "test", {"a": 1, "b": 1})
    dm = ImageFolderDataModule(
        str(root), preprocessing=PRE, num_folds=3, fold=2, split_dir=str(tmp_path / "o")
    )
    dm.setup("fit")
    assert dm.train_set is not None and dm.val_set is not None and dm.test_set is not None
    assert len(dm.train_set) + len(dm.val_set) == 12 and len(dm.val_set) == 4
    assert {Path(p).parts[-3] for p, _ in dm.test_set.samples} == {"test"}
    assert dm.class_counts == [4, 4]
    assert json.loads((tmp_path / "o" / "folds.json").read_text())["fold"] == 2


def test_a_fold_trains_end_to_end(train_config: Callable[..., DictConfig], tmp_path: Path) -> None:
    from transferlab.train import train

    out = tmp_path / "fold1"
    cfg = train_config(
        "data.num_folds=3", "data.fold=1", "data.balanced_sampling=true", "logger=tensorboard", output_dir=out
    )
    metrics, objects = train(cfg)
    assert "val/acc_best" in metrics and (out / "metrics.json").is_file()
    folds, document = read_folds(out / "folds.json")
    assert document["fold"] == 1 and len(folds) == 3
    assert set(objects["datamodule"].val_set.samples) == set(folds[1])
    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert any(b"data/class_counts" in f.read_bytes() for f in events)  # logged by a real Trainer's logger
