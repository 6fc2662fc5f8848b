"""Issue 13, points 1 and 14: the epoch order is shared by every rank, each sample's augmentation is a
function of (seed, epoch, position), and an epoch is drawn after Lightning sets it, so loader workers and
resumed runs draw the same order and augmentations as an unbroken run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import FAST_OVERRIDES, run_cli
from tests.helpers.sampling import make_tests_importable
from transferlab.data import ImageFolderDataModule
from transferlab.data.dataset import ImageSampleDataset
from transferlab.data.sampling import (
    EpochSampler,
    EpochStartDataLoader,
    SampleIndex,
    balanced_sampler,
    epoch_permutation,
)
from transferlab.data.transforms import build_train_transform

PRE = {"input_size": 16, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 0.875}
LABELS = [0] * 12 + [1] * 3 + [2] * 5


def _as_rank(monkeypatch: pytest.MonkeyPatch, rank: int) -> None:
    """Make this process look like ``rank`` of an initialised process group."""
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda *args, **kwargs: rank)


def _epoch(sampler, epoch: int) -> list[SampleIndex]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("balanced", [False, True], ids=["shuffled", "balanced"])
def test_every_rank_draws_the_same_epoch_and_only_the_process_randomness_differs(
    balanced: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn, after = [], []
    for rank in (0, 1):
        _as_rank(monkeypatch, rank)
        sampler = balanced_sampler(LABELS, [12, 3, 5], seed=5) if balanced else EpochSampler(len(LABELS), 5)
        drawn.append([(int(i), i.seed) for i in _epoch(sampler, 3)])
        after.append(torch.rand(4))  # dropout and the like: reseeded per epoch, and per rank
    assert drawn[0] == drawn[1]
    assert not torch.equal(after[0], after[1])
    if not balanced:
        assert [index for index, _ in drawn[0]] == epoch_permutation(len(LABELS), 5, 3).tolist()


def test_epoch_permutation_depends_on_seed_and_epoch_only() -> None:
    first = epoch_permutation(20, seed=1, epoch=3)
    torch.manual_seed(99)  # whatever the global generator holds: no effect
    assert torch.equal(first, epoch_permutation(20, seed=1, epoch=3))
    assert sorted(first.tolist()) == list(range(20))
    assert not torch.equal(first, epoch_permutation(20, seed=1, epoch=4))
    assert not torch.equal(first, epoch_permutation(20, seed=2, epoch=3))


@pytest.mark.parametrize("balanced", [False, True], ids=["shuffled", "balanced"])
def test_lightnings_ddp_shards_carry_the_sample_seeds_and_together_make_the_epoch(
    balanced: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards = []
    for rank in (0, 1):
        _as_rank(monkeypatch, rank)  # each rank's own process, as DDP runs it
        sampler = balanced_sampler(LABELS, [12, 3, 5], seed=5) if balanced else EpochSampler(len(LABELS), 5)
        # What Lightning puts in place of the sampler under DDP (shuffle=False: the loader did not shuffle).
        wrapper = DistributedSamplerWrapper(sampler, num_replicas=2, rank=rank, shuffle=False)
        wrapper.set_epoch(2)
        shards.append([(int(i), i.seed) for i in wrapper])
    full = [(int(i), i.seed) for i in _epoch(sampler, 2)]
    assert sorted(shards[0] + shards[1]) == sorted(full)  # 20 samples: no padding, nothing lost or repeated
    if not balanced:
        assert sorted(index for index, _ in shards[0] + shards[1]) == list(range(len(LABELS)))


def test_sample_seeds_differ_by_position_and_epoch_and_ignore_the_global_generator() -> None:
    sampler = balanced_sampler(LABELS, [12, 3, 5], seed=5)
    torch.manual_seed(1)
    first = _epoch(sampler, 0)
    torch.manual_seed(2)
    again = _epoch(sampler, 0)
    assert [(int(i), i.seed) for i in first] == [(int(i), i.seed) for i in again]
    assert len({i.seed for i in first}) == len(first)  # a repeated draw of an image is augmented anew
    assert {i.seed for i in first}.isdisjoint(i.seed for i in _epoch(sampler, 1))


def test_a_seeded_index_fixes_the_augmentation_and_leaves_the_global_generators_alone(
    tiny_data: Path,
) -> None:
    samples = [(str(p), 0) for p in sorted((tiny_data / "train" / "circle").glob("*.png"))]
    dataset = ImageSampleDataset(samples, ["circle"], build_train_transform(PRE, augmentation="strong"))
    torch.manual_seed(0)
    image, _ = dataset[SampleIndex(3, seed=1234)]
    state = torch.get_rng_state()
    torch.manual_seed(1)
    assert torch.equal(dataset[SampleIndex(3, seed=1234)][0], image)
    torch.set_rng_state(state)
    expected_next = torch.rand(3)
    torch.set_rng_state(state)
    dataset[SampleIndex(3, seed=1234)]
    assert torch.equal(torch.rand(3), expected_next)  # the main process's draws (dropout) are untouched
    assert not torch.equal(dataset[SampleIndex(3, seed=4321)][0], image)
    assert dataset[3][0].shape == image.shape  # a plain int (evaluation, other samplers) still works


def test_an_int_indexed_dataset_gets_the_rows_the_sampler_names() -> None:
    # What the datasets swapped in for images (cached features) rely on: a sample index is an int.
    features = torch.arange(len(LABELS) * 2, dtype=torch.float32).reshape(len(LABELS), 2)
    dataset = TensorDataset(features, torch.tensor(LABELS))
    sampler = EpochSampler(len(LABELS), 5)
    sampler.set_epoch(1)
    order = epoch_permutation(len(LABELS), 5, 1)
    batches = list(DataLoader(dataset, batch_size=8, sampler=sampler))
    assert torch.equal(torch.cat([x for x, _ in batches]), features[order])
    assert torch.cat([y for _, y in batches]).tolist() == [LABELS[i] for i in order]


def test_a_loader_with_workers_draws_the_epoch_set_after_its_iterator_was_made() -> None:
    # Lightning makes the training iterator, then sets the sampler's epoch, and on a resumed run trains
    # its first epoch from that iterator: the order must be the one of the epoch set last.
    sampler = EpochSampler(len(LABELS), 5)
    dataset = TensorDataset(torch.arange(len(LABELS)))
    loader = EpochStartDataLoader(
        dataset, batch_size=4, sampler=sampler, num_workers=2, persistent_workers=True
    )
    iterator = iter(loader)
    sampler.set_epoch(3)
    assert torch.cat([x for (x,) in iterator]).tolist() == epoch_permutation(len(LABELS), 5, 3).tolist()
    assert len(iter(loader)) == len(loader)


def _augmented_epochs(tiny_data: Path, num_workers: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    dm = ImageFolderDataModule(
        str(tiny_data), preprocessing=PRE, batch_size=8, num_workers=num_workers, augmentation="strong"
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.persistent_workers == (num_workers > 0)
    images, main_draws = [], []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        images.append(torch.cat([x for x, _ in loader]))
        main_draws.append(torch.rand(4))  # what dropout would draw next in the main process
    return images, main_draws


def test_augmentation_is_the_same_with_persistent_loader_workers_as_without(tiny_data: Path) -> None:
    in_main, main_draws = _augmented_epochs(tiny_data, num_workers=0)
    in_workers, worker_run_draws = _augmented_epochs(tiny_data, num_workers=2)
    for epoch in (0, 1):
        assert torch.equal(in_main[epoch], in_workers[epoch]), f"epoch {epoch}"
        assert torch.equal(main_draws[epoch], worker_run_draws[epoch]), f"epoch {epoch}"
    assert not torch.equal(in_main[0], in_main[1])


def _run_folder(cwd: Path) -> Path:
    (run,) = (cwd / "logs" / "train" / "runs").iterdir()
    return run


@pytest.mark.slow  # three CLI runs; the two tests above check the same two causes in seconds
def test_run_resumed_with_loader_workers_ends_with_the_weights_of_an_unbroken_run(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tests_importable(monkeypatch)
    same = [o for o in FAST_OVERRIDES if not o.startswith(("data.num_workers=", "data.augmentation="))]
    same += [
        f"data.root={tiny_data}",
        "data.num_workers=2",  # the shipped default, with persistent workers
        "data.augmentation=light",
        "model.head_dropout=0.3",
        "trainer.max_epochs=2",
        "test=false",
    ]
    stopper = ["+callbacks.stop._target_=tests.test_train.StopAfterEpoch", "+callbacks.stop.epoch=0"]
    folders = {}
    for name, extra in (("unbroken", []), ("interrupted", stopper)):
        (tmp_path / name).mkdir()
        result = run_cli("transferlab.train", *same, *extra, cwd=tmp_path / name)
        assert result.returncode == 0, result.stderr[-3000:]
        folders[name] = _run_folder(tmp_path / name)
    last = folders["interrupted"] / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    (tmp_path / "resumed").mkdir()
    result = run_cli("transferlab.train", *same, f"ckpt_path={last}", cwd=tmp_path / "resumed")
    assert result.returncode == 0, result.stderr[-3000:]
    folders["resumed"] = _run_folder(tmp_path / "resumed")

    def weights(name: str) -> dict[str, torch.Tensor]:
        return torch.load(folders[name] / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]

    expected, got = weights("unbroken"), weights("resumed")
    assert expected.keys() == got.keys()
    changed = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not changed, changed[:5]
    interrupted = weights("interrupted")
    assert any(not torch.equal(expected[k], interrupted[k]) for k in expected)  # epoch 1 did train
