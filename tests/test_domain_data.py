"""Two-domain data: target layouts, a label-free target split, paired batches, clear errors."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ImageOps

from tests.conftest import CLASSES, draw_shape, make_imagefolder
from transferlab.backbones import backbone_preprocessing
from transferlab.data.domain import DomainAdaptationDataModule, DomainPairSampler
from transferlab.data.target import UNLABELLED, find_target_splits
from transferlab.errors import UserError


def make_target(root: Path, per_class: int = 10, seed: int = 1, *, flat_images: bool = False) -> Path:
    """Inverted shapes (a real change of look) in ``root/<class>/<class>-<i>.png``, or all in ``root/``."""
    rng = np.random.default_rng(seed)
    for shape in CLASSES:
        folder = root if flat_images else root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ImageOps.invert(draw_shape(shape, 20, rng)).save(folder / f"{shape}-{i}.png")
    return root


def shuffle_class_folders(root: Path, copy_to: Path, seed: int = 0) -> Path:
    """The same image files as ``root``, each moved to a random class folder (names kept)."""
    rng = random.Random(seed)
    for path in sorted(root.rglob("*.png")):
        folder = copy_to / rng.choice(CLASSES)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, folder / path.name)
    for shape in CLASSES:  # every class folder must exist (and hold an image) in the shuffled tree too
        assert any((copy_to / shape).iterdir())
    return copy_to


def _split(root: Path, **kwargs) -> dict:
    args = {"val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0, **kwargs}
    return find_target_splits(root, list(CLASSES), **args)


def _names(samples: list[tuple[str, int]]) -> list[str]:
    return [Path(path).name for path, _ in samples]


def test_labelled_flat_target_is_split_without_looking_at_labels(tmp_path: Path) -> None:
    target = make_target(tmp_path / "target")
    shuffled = shuffle_class_folders(target, tmp_path / "shuffled")
    a, b = _split(target), _split(shuffled)
    assert a.labelled and b.labelled
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 18, "val": 6, "test": 6}
    for split in ("train", "val", "test"):
        assert _names(a.splits[split]) == _names(b.splits[split]), split
    # the labels themselves are kept (for measuring) and do differ between the two trees
    assert all(y == CLASSES.index(Path(p).parent.name) for p, y in a.splits["val"] + b.splits["val"])
    assert [y for _, y in a.splits["train"]] != [y for _, y in b.splits["train"]]


def test_files_with_the_same_name_in_two_classes_are_ordered_by_content(tmp_path: Path) -> None:
    # make_imagefolder names files 0.png, 1.png... in every class folder
    make_imagefolder(tmp_path / "t", {"all": 6})
    (tmp_path / "t" / "all").rename(tmp_path / "flat")
    renamed = tmp_path / "renamed"
    for index, shape in enumerate(CLASSES):  # permute the class folder names
        shutil.copytree(tmp_path / "flat" / shape, renamed / CLASSES[(index + 1) % len(CLASSES)])
    a, b = _split(tmp_path / "flat"), _split(renamed)
    digest = lambda samples: [Path(p).read_bytes() for p, _ in samples]  # noqa: E731
    assert digest(a.splits["train"]) == digest(b.splits["train"])


def test_presplit_and_unlabelled_targets(tmp_path: Path) -> None:
    presplit = make_imagefolder(tmp_path / "pre", {"train": 3, "val": 2, "test": 2})
    found = _split(presplit)
    assert found.labelled and [len(found.splits[s]) for s in ("train", "val", "test")] == [9, 6, 6]
    images = make_target(tmp_path / "images", flat_images=True)
    found = _split(images)
    assert not found.labelled
    assert {y for s in found.splits.values() for _, y in s} == {UNLABELLED}
    assert sum(len(s) for s in found.splits.values()) == 30


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root, "Target data root not found"),
        (lambda root: root.mkdir() or root, "no image files"),
    ],
)
def test_missing_or_empty_target_is_a_user_error(tmp_path: Path, make, message: str) -> None:
    root = make(tmp_path / "target")
    with pytest.raises(UserError, match=message):
        _split(root)


def test_class_name_mismatch_names_the_classes(tmp_path: Path) -> None:
    target = make_target(tmp_path / "target")
    (target / "square").rename(target / "triangle")
    with pytest.raises(UserError) as info:
        find_target_splits(
            target, list(CLASSES), val_fraction=0.2, test_fraction=0.2, split_seed=0, source_root="/src"
        )
    message = str(info.value)
    assert "only in the source (/src): ['square']" in message
    assert "only in the target" in message and "['triangle']" in message
    assert "\n" not in message


def test_pair_sampler_cycles_the_shorter_domain_and_depends_on_seed_and_epoch_only() -> None:
    sampler = DomainPairSampler(num_source=10, num_target=4, num_pairs=10, seed=3)
    pairs = list(sampler)
    assert len(pairs) == len(sampler) == 10
    assert sorted(s for s, _ in pairs) == list(range(10))  # each source image once per epoch
    targets = [t for _, t in pairs]
    assert sorted(targets[:4]) == sorted(targets[4:8]) == list(range(4))  # full target cycles
    assert list(DomainPairSampler(10, 4, 10, seed=3)) == pairs
    sampler.set_epoch(1)
    assert list(sampler) != pairs
    longer = DomainPairSampler(num_source=3, num_target=7, num_pairs=7, seed=0)
    assert sorted(t for _, t in longer) == list(range(7))


@pytest.fixture
def domain_module(tiny_data: Path, tmp_path: Path):
    def make(target: Path, **kwargs) -> DomainAdaptationDataModule:
        dm = DomainAdaptationDataModule(
            str(tiny_data), str(target), batch_size=4, augmentation="none", split_dir=str(tmp_path), **kwargs
        )
        dm.set_preprocessing(backbone_preprocessing("small_cnn"))
        dm.setup("fit")
        return dm

    return make


def test_batches_pair_a_labelled_source_batch_with_a_target_batch(domain_module, tmp_path: Path) -> None:
    dm = domain_module(make_target(tmp_path / "target"))
    xs, ys, xt = next(iter(dm.train_dataloader()))
    assert xs.shape == xt.shape == (4, 3, 32, 32) and ys.dtype == torch.long and ys.shape == (4,)
    assert len(dm.train_dataloader()) == 9  # epoch_length=source: 36 source images / 4
    assert all(label == UNLABELLED for _, label in dm.target_train_set.samples)
    assert len(dm.val_dataloader()) == 2 and len(dm.test_dataloader()) == 2
    assert (tmp_path / "target_split.json").is_file()
    steps = domain_module(make_target(tmp_path / "target2"), epoch_length=5)
    assert len(steps.train_dataloader()) == 5
    target_epoch = domain_module(make_target(tmp_path / "target3"), epoch_length="target")
    assert len(target_epoch.train_dataloader()) == -(-len(target_epoch.target_train_set) // 4)


def test_unlabelled_target_gives_no_target_validation_loader(domain_module, tmp_path: Path) -> None:
    dm = domain_module(make_target(tmp_path / "images", flat_images=True))
    assert not dm.target_labelled
    assert len(dm.val_dataloader()) == 1 and len(dm.test_dataloader()) == 2
    _, labels = next(iter(dm.test_dataloader()[1]))
    assert set(labels.tolist()) == {UNLABELLED}


def test_bad_epoch_length_and_missing_roots_are_user_errors(tiny_data: Path) -> None:
    with pytest.raises(UserError, match=r"data\.epoch_length"):
        DomainAdaptationDataModule(str(tiny_data), str(tiny_data), epoch_length="forever")
    with pytest.raises(UserError, match=r"data\.target_root is not set"):
        DomainAdaptationDataModule(str(tiny_data), "")
