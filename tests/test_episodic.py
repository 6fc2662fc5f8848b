"""Few-shot data: the episodic sampler, class-disjoint splits and the episodic data module."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.backbones import backbone_preprocessing
from transferlab.data.episodic import (
    SPLIT_FILE,
    EpisodeDataset,
    EpisodeSampler,
    EpisodeShape,
    EpisodicDataModule,
    build_class_splits,
)
from transferlab.data.folders import SPLITS
from transferlab.errors import UserError


def make_fewshot_folder(
    root: Path, num_classes: int, per_class: int, size: int = 16, split: dict[str, range] | None = None
) -> Path:
    """Class folders ``c00``, ``c01``... of noisy images in one colour per class.

    With ``split`` (e.g. ``{"train": range(0, 6), ...}``) the classes go to ``root/<split>/`` folders.
    """
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(num_classes, 3))
    for c in range(num_classes):
        parent = root
        if split is not None:
            parent = root / next(name for name, classes in split.items() if c in classes)
        folder = parent / f"c{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(0, 25, (size, size, 3)) + colours[c], 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


class _Indexed(torch.utils.data.Dataset):
    """Item ``i`` is the tensor ``[i]`` with label ``labels[i]``: episodes show which items they hold."""

    def __init__(self, labels: list[int]) -> None:
        self.targets = labels

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([float(index)]), self.targets[index]


def _episodes(sampler: EpisodeSampler, base: torch.utils.data.Dataset) -> list:
    dataset = EpisodeDataset(base, sampler.shape)
    return [dataset[item] for item in sampler]


def test_episodes_hold_disjoint_balanced_support_and_query_with_episode_labels() -> None:
    labels = [c for c in range(8) for _ in range(7)]
    base = _Indexed(labels)
    shape = EpisodeShape(n_way=3, k_shot=2, q_query=4)
    episodes = _episodes(EpisodeSampler(labels, shape, episodes=50, seed=1), base)
    assert len(episodes) == 50
    seen_first_classes = set()
    for number, episode in enumerate(episodes):
        assert int(episode.index) == number
        support = episode.support.flatten().long().tolist()
        query = episode.query.flatten().long().tolist()
        assert len(support) == 3 * 2 and len(query) == 3 * 4
        assert not set(support) & set(query) and len(set(support + query)) == len(support + query)
        assert episode.support_labels.tolist() == [0, 0, 1, 1, 2, 2]
        assert episode.query_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # balanced
        classes = episode.classes.tolist()
        assert len(set(classes)) == 3
        # episode label l stands for the dataset class classes[l], in support and query alike
        for items, episode_labels in ((support, episode.support_labels), (query, episode.query_labels)):
            assert [labels[i] for i in items] == [classes[label] for label in episode_labels.tolist()]
        seen_first_classes.add(classes[0])
    assert len(seen_first_classes) > 3  # label 0 is not always the same (or the lowest) class


def test_episodes_are_a_function_of_seed_and_epoch() -> None:
    labels = [c for c in range(10) for _ in range(6)]
    shape = EpisodeShape(5, 1, 2)

    def draw(seed: int, epoch: int, fixed: bool = False) -> list:
        sampler = EpisodeSampler(labels, shape, episodes=20, seed=seed, fixed=fixed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert draw(0, 3) == draw(0, 3)  # e.g. a resumed run, or another process
    assert draw(0, 3) != draw(0, 4)  # new episodes each epoch
    assert draw(0, 3) != draw(1, 3)
    assert draw(0, 0, fixed=True) == draw(0, 7, fixed=True)  # evaluation episodes never change


def test_a_class_too_small_or_too_few_classes_is_one_error_before_training(tmp_path: Path) -> None:
    root = make_fewshot_folder(tmp_path / "data", num_classes=10, per_class=6)
    for index in range(2, 6):  # one class keeps 2 images
        (root / "c04" / f"{index}.png").unlink()
    preprocessing = backbone_preprocessing("small_cnn", image_size=16)
    splits = build_class_splits(root)
    small_split = next(s for s in SPLITS if "c04" in splits.classes[s])
    datamodule = EpisodicDataModule(
        str(root), preprocessing, n_way=2, k_shot=2, q_query=3, test_way=2, test_shots=[1], test_query=3,
        num_workers=0,
    )  # fmt: skip
    with pytest.raises(UserError, match=r"k_shot \+ q_query = 2 \+ 3 = 5 usable images.*'c04' \(2\)") as err:
        datamodule.setup("fit")
    assert small_split in str(err.value)
    # 10 classes split 6/2/2: 3-way episodes cannot come from the val split
    datamodule = EpisodicDataModule(str(root), preprocessing, n_way=3, k_shot=1, q_query=1, num_workers=0)
    with pytest.raises(UserError, match="val split has 2 classes, fewer than the 3"):
        datamodule.setup("fit")


def test_class_folders_are_split_by_class_with_a_seeded_recorded_split(tmp_path: Path) -> None:
    root = make_fewshot_folder(tmp_path / "data", num_classes=15, per_class=4)
    out = tmp_path / "run"
    preprocessing = backbone_preprocessing("small_cnn", image_size=16)
    datamodule = EpisodicDataModule(
        str(root), preprocessing, n_way=2, k_shot=1, q_query=1, test_way=2, test_shots=[1, 2], test_query=2,
        split_dir=str(out), num_workers=0,
    )  # fmt: skip
    datamodule.setup("fit")
    classes = datamodule.split_class_names
    every = [name for split in SPLITS for name in classes[split]]
    assert len(every) == len(set(every)) == 15  # no class is in two splits, none is left out
    assert [len(classes[s]) for s in SPLITS] == [9, 3, 3]
    record = json.loads((out / SPLIT_FILE).read_text())
    assert record["classes"] == classes and record["split_seed"] == 0
    for split in SPLITS:
        dataset = getattr(datamodule, f"{split}_set")
        names = {Path(path).parent.name for path, _ in dataset.samples}
        assert names == set(classes[split])
        assert {Path(p).parent.name for p, _ in record["splits"][split]} == names
    assert build_class_splits(root).classes == classes  # the same seed gives the same split
    assert build_class_splits(root, split_seed=1).classes != classes


def test_presplit_folders_must_hold_different_classes(tmp_path: Path) -> None:
    layout = {"train": range(0, 6), "val": range(6, 9), "test": range(9, 12)}
    root = make_fewshot_folder(tmp_path / "ok", num_classes=12, per_class=3, split=layout)
    splits = build_class_splits(root)
    assert splits.presplit and splits.classes["val"] == ["c06", "c07", "c08"]
    clash = make_fewshot_folder(tmp_path / "clash", num_classes=12, per_class=3, split=layout)
    (clash / "test" / "c02").mkdir()
    Image.new("RGB", (16, 16)).save(clash / "test" / "c02" / "0.png")
    with pytest.raises(UserError, match=r"different classes.*'c02' in train/ and test/"):
        build_class_splits(clash)


def test_loader_worker_processes_give_the_same_episodes_as_the_main_process(tmp_path: Path) -> None:
    root = make_fewshot_folder(tmp_path / "data", num_classes=12, per_class=5)
    preprocessing = backbone_preprocessing("small_cnn", image_size=16)

    def first_epoch(workers: int) -> list[tuple]:
        datamodule = EpisodicDataModule(
            str(root), preprocessing, n_way=2, k_shot=2, q_query=2, episodes_per_epoch=6, test_way=2,
            test_shots=[1], test_query=2, num_workers=workers, episode_seed=3,
        )  # fmt: skip
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        loader.sampler.set_epoch(1)
        return [(int(e.index), e.classes.tolist(), e.support.shape, float(e.query.sum())) for e in loader]

    with_workers = first_epoch(2)
    assert len(with_workers) == 6
    assert with_workers == first_epoch(0)
