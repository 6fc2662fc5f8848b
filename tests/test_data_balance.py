"""Issue 3, point 4: class counts are exposed, logged and shown in TensorBoard; balanced sampling draws
classes equally often and still shards per rank under DDP."""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from transferlab.data import ImageFolderDataModule, balanced_sampler
from transferlab.data.class_counts import TENSORBOARD_TAG
from transferlab.errors import UserError

PRE = {"input_size": 8, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def _unbalanced(root: Path) -> Path:
    """Pre-split tree: train has 12 'common' and 3 'rare' images, val and test 2 of each."""
    for split, counts in {"train": (12, 3), "val": (2, 2), "test": (2, 2)}.items():
        for name, count in zip(("common", "rare"), counts, strict=True):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / split / name / f"{i}.png")
    return root


def _tensorboard_texts(folder: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for events in folder.rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.tensor.string_val:
                    assert value.tag not in texts
                    texts[value.tag] = value.tensor.string_val[0].decode()
    return texts


def test_class_counts_are_exposed_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dm = ImageFolderDataModule(str(_unbalanced(tmp_path / "d")), preprocessing=PRE)
    with caplog.at_level(logging.INFO, logger="transferlab"):
        dm.setup("fit")
        dm.setup("test")
    assert dm.class_counts == [12, 3]
    lines = [r.getMessage() for r in caplog.records if r.name == "transferlab.data.class_counts"]
    assert lines[0] == "Images per class:"
    assert [line.split() for line in lines[1:]] == [
        ["class", "train", "val", "test"],
        ["common", "12", "2", "2"],
        ["rare", "3", "2", "2"],
        ["total", "15", "4", "4"],
    ]  # and only once, although setup ran twice


def test_class_counts_in_tensorboard_only_with_a_tensorboard_logger_on_rank_zero(tmp_path: Path) -> None:
    root = _unbalanced(tmp_path / "d")
    tensorboard = TensorBoardLogger(str(tmp_path / "tb"), name="", version="")
    for rank_zero, loggers in (
        (True, [CSVLogger(str(tmp_path / "csv")), tensorboard]),
        (False, [tensorboard]),
    ):
        dm = ImageFolderDataModule(str(root), preprocessing=PRE)
        dm.trainer = SimpleNamespace(world_size=1, is_global_zero=rank_zero, loggers=loggers)
        dm.setup("fit")
    tensorboard.experiment.flush()
    texts = _tensorboard_texts(tmp_path / "tb")
    assert list(texts) == [f"{TENSORBOARD_TAG}/text_summary"]  # written once: rank one stayed silent
    text = texts[f"{TENSORBOARD_TAG}/text_summary"]
    assert "| class | train | val | test |" in text and "| rare | 3 | 2 | 2 |" in text
    dm = ImageFolderDataModule(str(root), preprocessing=PRE)
    dm.trainer = SimpleNamespace(world_size=1, is_global_zero=True, loggers=[CSVLogger(str(tmp_path / "c2"))])
    dm.setup("fit")  # no TensorBoard logger: nothing to write to, no error


def test_balanced_sampling_draws_classes_equally(tmp_path: Path) -> None:
    root = _unbalanced(tmp_path / "d")
    plain = ImageFolderDataModule(str(root), preprocessing=PRE)
    plain.setup("fit")
    assert plain.train_dataloader().sampler.weights is None  # a plain shuffle
    dm = ImageFolderDataModule(str(root), preprocessing=PRE, balanced_sampling=True, batch_size=5)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.sampler.weights is not None and len(loader.sampler) == 15
    assert dm.train_set is not None
    drawn = Counter()
    for epoch in range(200):
        loader.sampler.set_epoch(epoch)
        drawn.update(dm.train_set.targets[i] for i in loader.sampler)
    assert abs(drawn[1] / (drawn[0] + drawn[1]) - 0.5) < 0.03  # 3 of 15 images, but half the draws


def test_balanced_sampler_is_sharded_per_rank_under_ddp() -> None:
    labels = [0] * 12 + [1] * 3
    sampler = balanced_sampler(labels, [12, 3])
    shards = []
    for rank in (0, 1):
        torch.manual_seed(7)  # every rank is seeded alike, as seed_everything does
        # What Lightning puts in place of a custom sampler when it runs DDP.
        wrapper = DistributedSamplerWrapper(sampler, num_replicas=2, rank=rank, shuffle=True, seed=7)
        shards.append(list(wrapper))
    assert [len(shard) for shard in shards] == [math.ceil(15 / 2)] * 2
    torch.manual_seed(7)
    full = Counter(sampler)
    both = Counter(shards[0]) + Counter(shards[1])
    # Together the shards are one weighted draw of the whole epoch, plus one index repeated as padding.
    assert both >= full and sum((both - full).values()) == 1


def test_balanced_sampling_without_lightnings_distributed_sampler_is_refused(tmp_path: Path) -> None:
    dm = ImageFolderDataModule(str(_unbalanced(tmp_path / "d")), preprocessing=PRE, balanced_sampling=True)
    dm.trainer = SimpleNamespace(
        world_size=2,
        is_global_zero=True,
        loggers=[],
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=False),
    )
    with pytest.raises(
        UserError, match=r"balanced_sampling=true on several devices.*use_distributed_sampler"
    ):
        dm.setup("fit")


def test_epoch_order_depends_on_seed_and_epoch_only() -> None:
    from transferlab.data import EpochSampler

    def order(seed: int, epoch: int) -> list[int]:
        sampler = EpochSampler(20, seed)
        torch.manual_seed(epoch * 7 + 123)  # whatever the global generator holds: no effect
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(1, 3) == order(1, 3)
    assert sorted(order(1, 3)) == list(range(20))
    assert order(1, 3) != order(1, 4) and order(1, 3) != order(2, 3)
