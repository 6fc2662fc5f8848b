"""Issue 13, points 11 and 13: the public builder, the base data module and its contract, one value per
setting (Python defaults = YAML), and class counts without side effects."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.utilities import CombinedLoader
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import BatchSampler, SequentialSampler

from tests.conftest import CONF_DIR
from transferlab.data import (
    BaseDataModule,
    ImageFolderDataModule,
    ImageFolderSplits,
    TrainingDataModule,
    build_imagefolder_splits,
    read_split,
)
from transferlab.errors import UserError

PRE = {"input_size": 8, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def _class_folders(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (i * 9, 60, 0)).save(root / name / f"{i:02d}.png")
    return root


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_builder_builds_datasets_counts_and_record_and_writes_nothing(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"a": 10, "b": 6})
    (root / "b" / "broken.png").write_bytes(b"not an image")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    splits = build_imagefolder_splits(root, val_fraction=0.2, test_fraction=0.2, split_seed=1)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    assert isinstance(splits, ImageFolderSplits) and splits.class_names == ["a", "b"]
    assert splits.counts == {"train": [6, 4], "val": [2, 1], "test": [2, 1]}  # the broken file skipped
    assert [len(splits.dataset(s)) for s in ("train", "val", "test")] == [10, 3, 3]
    record = splits.record
    json.dumps(record)  # JSON-able: it travels inside checkpoints
    assert record["settings"]["split_seed"] == 1 and record["layout"] == "class_folders"
    assert record["files"]["count"] == 16 and record["splits"]["test"]["class_counts"] == [2, 1]
    again = build_imagefolder_splits(root, val_fraction=0.2, test_fraction=0.2, split_seed=1, report=False)
    assert again.record == record
    other = build_imagefolder_splits(root, val_fraction=0.2, test_fraction=0.2, split_seed=2)
    assert other.record["splits"]["test"]["sha256"] != record["splits"]["test"]["sha256"]
    assert other.record["files"] == record["files"]

    written = splits.write_records(tmp_path / "run")
    assert written == [tmp_path / "run" / "split.json"]
    split, names = read_split(written[0])
    assert names == ["a", "b"] and split["test"] == splits.test.samples


def test_builder_records_folds_and_leaves_a_presplit_tree_unrecorded(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"a": 9, "b": 9})
    folds = build_imagefolder_splits(root, num_folds=3, fold=1, test_fraction=0.2)
    assert [p.name for p in folds.write_records(tmp_path / "k")] == ["folds.json", "split.json"]
    assert folds.record["settings"]["num_folds"] == 3 and folds.record["settings"]["fold"] == 1
    presplit = tmp_path / "p"
    for split in ("train", "val", "test"):
        _class_folders(presplit / split, {"a": 2, "b": 2})
    assert build_imagefolder_splits(presplit).write_records(tmp_path / "none") == []
    assert not (tmp_path / "none").exists()
    with pytest.raises(UserError, match="max_image_pixels"):
        build_imagefolder_splits(root, max_image_pixels=0)


def test_class_counts_reads_what_setup_built_and_writes_nothing(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"a": 10, "b": 6})
    out = tmp_path / "run"
    dm = ImageFolderDataModule(str(root), preprocessing=PRE, split_dir=str(out))
    with pytest.raises(UserError, match=r"class_counts is known after setup\(\): call setup\(\) first"):
        _ = dm.class_counts
    assert _files(out) == []  # asking for the counts wrote no split.json
    dm.setup("fit")
    assert _files(out) == ["split.json"]  # setup writes the record, explicitly
    assert dm.class_counts == [len([y for _, y in dm.train_set.samples if y == c]) for c in (0, 1)]
    assert isinstance(dm, TrainingDataModule) and isinstance(dm, BaseDataModule)


def test_python_defaults_equal_the_yaml_defaults() -> None:
    yaml = OmegaConf.load(Path(CONF_DIR) / "data" / "imagefolder.yaml")
    parameters = inspect.signature(ImageFolderDataModule.__init__).parameters
    settings = {name: p.default for name, p in parameters.items() if name not in ("self", "preprocessing")}
    assert set(settings) == set(yaml) - {"_target_"}  # every setting in both places, nothing else
    for name, default in settings.items():
        if OmegaConf.is_interpolation(yaml, name) or OmegaConf.is_missing(yaml, name):
            continue  # root (required), split_dir and shuffle_seed come from the run
        assert yaml[name] == default, f"data.{name}: YAML {yaml[name]!r}, Python {default!r}"


class _EpisodesAndDomains(ImageFolderDataModule):
    """A subclass changing only the training loader: fixed-size episodes, paired with a second domain."""

    def train_dataloader(self) -> CombinedLoader:
        episodes = BatchSampler(SequentialSampler(range(len(self.train_set))), batch_size=3, drop_last=True)
        source = self._loader(self.train_set, "train", batch_sampler=episodes)
        target = self._loader(self.val_set, "val", sampler=self.train_sampler(self.val_set))
        return CombinedLoader({"source": source, "target": target}, mode="max_size_cycle")


def test_a_subclass_replaces_the_training_loader_and_keeps_the_rest(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"a": 10, "b": 10})
    dm = _EpisodesAndDomains(str(root), preprocessing=PRE, batch_size=2, num_workers=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    iter(loader)
    batch, _, _ = next(loader)
    assert batch["source"][0].shape == (3, 3, 8, 8) and batch["target"][0].shape == (2, 3, 8, 8)
    images, labels = next(iter(dm.val_dataloader()))  # inherited: eval transform, per-device batch
    assert images.shape == (2, 3, 8, 8) and labels.dtype == torch.int64
