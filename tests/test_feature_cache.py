"""The feature cache: keyed on the backbone's actual weights, read by row from disk, served in-process."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import make_imagefolder
from transferlab.backbones import build_backbone
from transferlab.data.dataset import ImageSampleDataset
from transferlab.data.sampling import balanced_sampler, epoch_permutation
from transferlab.data.transforms import build_eval_transform
from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing
from transferlab.strategies import feature_cache
from transferlab.strategies.feature_batches import EpochBatches
from transferlab.strategies.feature_cache import (
    FeatureCache,
    feature_cache_key,
    read_features,
    weights_fingerprint,
    write_features,
)
from transferlab.train import train

FE = ["model=feature_extraction", "backbone.weights=none"]


class BatchProbe(L.Callback):
    """Records each rank's training and validation batches and the loader worker processes alive meanwhile.

    Writes ``folder/rank{R}.pt`` at the end of fitting: ``{"train/E": [features, labels], "val/E": ...,
    "children": max number of child processes seen during a batch}``.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.batches: dict[str, list[torch.Tensor]] = {}
        self.children = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        self._record(f"train/{trainer.current_epoch}", batch)

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._record(f"val/{trainer.current_epoch}", batch)

    def _record(self, name: str, batch) -> None:
        self.children = max(self.children, len(multiprocessing.active_children()))
        features, labels = batch[0].detach().cpu(), batch[1].detach().cpu()
        if name in self.batches:
            features, labels = (
                torch.cat([self.batches[name][0], features]),
                torch.cat([self.batches[name][1], labels]),
            )
        self.batches[name] = [features, labels]

    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save({**self.batches, "children": self.children}, self.folder / f"rank{trainer.global_rank}.pt")


class BackboneCalls(L.Callback):
    """Counts the backbone's forward passes between the start and the end of training (validation and
    callbacks included), then compares ``sample_logits`` of a few validation images with the images run
    through the module."""

    def __init__(self) -> None:
        self.calls = 0
        self.difference = float("nan")

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._hook = pl_module.backbone.register_forward_hook(lambda *args: self._count())

    def _count(self) -> None:
        self.calls += 1

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self._hook.remove()
        val_set = trainer.datamodule.val_set
        cached = pl_module.sample_logits(val_set.samples[:5])
        pl_module.eval()
        with torch.no_grad():
            direct = pl_module(torch.stack([val_set[i][0] for i in range(5)]))
        self.difference = float((cached - direct).abs().max())
        assert pl_module.sample_logits([("not/a/val/image.png", 0)]) is None


def probe_overrides(folder: Path) -> list[str]:
    return [f"+callbacks.probe._target_={__name__}.BatchProbe", f"+callbacks.probe.folder={folder}"]


def cache_files(folder: Path) -> dict[int, np.ndarray]:
    """The rows of the cache's feature files by row count (the tests' splits all differ in size)."""
    arrays = (np.load(path, allow_pickle=False) for path in sorted(folder.glob("*.npy")))
    return {len(rows): rows for rows in arrays}


# ----------------------------------------------------------------- point 2: keyed on the actual weights


def test_random_backbones_of_two_seeds_train_and_validate_on_their_own_features(
    train_config, tmp_path: Path
) -> None:
    data = make_imagefolder(tmp_path / "data", {"train": 6, "val": 4}, seed=2)
    shutil.copytree(data / "val", data / "test")  # the test split is the validation images
    cache = tmp_path / "cache"
    for seed in (1, 2):
        cfg = train_config(
            *FE, "trainer.max_epochs=1", f"seed={seed}", f"data.root={data}", f"model.cache_dir={cache}",
            output_dir=tmp_path / f"seed{seed}",
        )  # fmt: skip
        metrics, _ = train(cfg)
        # Validation ran on cached features; the test, on the same images through the backbone of the
        # run's best.ckpt. Features of another backbone would give another loss.
        assert metrics["test/loss"] == pytest.approx(metrics["val/loss"], rel=1e-4)
        assert metrics["test/acc"] == metrics["val/acc"]
    assert len(list(cache.glob("*.npy"))) == 4  # train and val for each seed's backbone


def test_cached_features_are_the_backbone_on_the_data_modules_own_val_images(
    train_config, tmp_path: Path
) -> None:
    # JPEGs larger than the resize size: the data module decodes them at a reduced scale (min_size).
    data = make_imagefolder(tmp_path / "data", {"train": 5, "val": 4, "test": 1}, size=160, seed=3)
    for png in data.rglob("*.png"):
        Image.open(png).save(png.with_suffix(".jpg"), quality=90)
        png.unlink()
    cache = tmp_path / "cache"
    cfg = train_config(*FE, "trainer.max_epochs=1", f"data.root={data}", f"model.cache_dir={cache}")
    _, objects = train(cfg)
    model, val_set = objects["model"], objects["datamodule"].val_set
    images = torch.stack([val_set[i][0] for i in range(len(val_set))])
    model.backbone.eval()
    with torch.no_grad():
        expected = model.backbone(images)
    cached = torch.from_numpy(cache_files(cache)[len(val_set)])
    assert torch.allclose(cached, expected, atol=1e-5), (cached - expected).abs().max()


def test_cache_key_follows_weights_libraries_image_reading_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    pre = Preprocessing(input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)

    def images(preprocessing: Preprocessing = pre, min_size: int | None = 37) -> ImageSampleDataset:
        transform = build_eval_transform(preprocessing)
        return ImageSampleDataset([(str(image), 0)], ["a", "b"], transform, min_size=min_size)

    torch.manual_seed(0)
    first = weights_fingerprint(build_backbone(name="small_cnn", weights="none"))
    torch.manual_seed(0)
    assert weights_fingerprint(build_backbone(name="small_cnn", weights="none")) == first
    torch.manual_seed(1)
    second = weights_fingerprint(build_backbone(name="small_cnn", weights="none"))
    assert second != first

    cfg = {"name": "small_cnn", "weights": "none", "image_size": None}
    base = feature_cache_key(cfg, first, pre, images())
    # The weights decide, not how they were asked for.
    assert feature_cache_key({**cfg, "weights": "/some/file.pt"}, first, pre, images()) == base
    other_pre = Preprocessing(input_size=48, mean=pre.mean, std=pre.std)
    variants = [
        feature_cache_key(cfg, second, pre, images()),
        feature_cache_key({**cfg, "image_size": 48}, first, pre, images()),
        feature_cache_key(cfg, first, other_pre, images(other_pre)),
        feature_cache_key(cfg, first, pre, images(min_size=None)),
    ]
    versions = {**feature_cache.library_versions(), "pillow": "0.0"}
    monkeypatch.setattr(feature_cache, "library_versions", lambda: versions)
    variants.append(feature_cache_key(cfg, first, pre, images()))
    monkeypatch.undo()
    Image.new("RGB", (9, 9)).save(image)  # same path, new content
    variants.append(feature_cache_key(cfg, first, pre, images()))
    assert len({base, *variants}) == len(variants) + 1


# ----------------------------------------------------------------- point 9: rows on disk, read by row


def test_features_are_written_in_chunks_and_read_by_row(tmp_path: Path) -> None:
    rows = torch.randn(10, 4)
    path = write_features(tmp_path / "f.npy", 10, (rows[i : i + 3] for i in range(0, 10, 3)))
    assert [p.name for p in tmp_path.iterdir()] == ["f.npy"]
    assert torch.equal(torch.from_numpy(np.load(path, allow_pickle=False)), rows)  # a standard .npy file
    features = read_features(path)
    assert features.shape == (10, 4)
    order = torch.randperm(10)
    got = torch.cat([torch.from_numpy(features[batch.numpy()]) for batch in order.split(3)])
    assert torch.equal(got, rows[order])
    assert torch.equal(torch.from_numpy(features[2:7]), rows[2:7])  # a run of rows: one read
    assert torch.equal(torch.from_numpy(features[np.array([4, 5, 6, 1, 2, 9])]), rows[[4, 5, 6, 1, 2, 9]])
    got = torch.from_numpy(features[np.array([3])])
    got += 1  # each read is a private copy
    assert torch.equal(torch.from_numpy(features[np.array([3])]), rows[[3]])
    assert features[np.array([], dtype=np.int64)].shape == (0, 4)
    with pytest.raises(IndexError):
        features[np.array([10])]
    features.close()


def test_an_interrupted_or_short_write_leaves_no_file(tmp_path: Path) -> None:
    def failing():
        yield torch.zeros(2, 4)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_features(tmp_path / "f.npy", 4, failing())
    with pytest.raises(ValueError, match="3 rows, not the 4"):
        write_features(tmp_path / "f.npy", 4, [torch.zeros(3, 4)])
    with pytest.raises(ValueError, match="more than the 2 rows"):
        write_features(tmp_path / "f.npy", 2, [torch.zeros(3, 4)])
    assert list(tmp_path.iterdir()) == []


def test_damaged_or_pickled_cache_files_are_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FeatureCache(tmp_path)
    np.save(cache.path("pickled"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cache.path("truncated").write_bytes(cache.path("pickled").read_bytes()[:20])
    write_features(cache.path("short"), 3, [np.zeros((3, 2))])
    cache.path("cut").write_bytes(cache.path("short").read_bytes()[:-4])
    assert cache.load("pickled", 1) is None
    assert cache.load("truncated", 1) is None
    assert cache.load("cut", 3) is None
    assert cache.load("short", 4) is None
    assert cache.load("missing", 1) is None
    assert caplog.text.count("computing it again") == 4
    with cache.load("short", 3) as found:
        assert len(found) == 3


# ----------------------------------------------------------------- point 8: in-process batches


@pytest.mark.parametrize(
    ("num_samples", "world_size", "batch_size"), [(21, 2, 2), (24, 3, 4), (7, 1, 3), (5, 2, 4)]
)
def test_each_epoch_is_shared_between_ranks_exactly_once(
    num_samples: int, world_size: int, batch_size: int
) -> None:
    for epoch in (0, 3):
        shares = []
        for rank in range(world_size):
            batches = EpochBatches(num_samples, batch_size, seed=7, rank=rank, world_size=world_size)
            batches.set_epoch(epoch)
            steps = list(batches)
            assert len(steps) == len(batches)  # the same number of steps on every rank
            assert all(1 <= len(step) <= batch_size + 1 for step in steps)
            shares.append(torch.cat(steps))
        order = epoch_permutation(num_samples, 7, epoch)
        assert sorted(torch.cat(shares).tolist()) == list(range(num_samples))
        assert [share.tolist() for share in shares] == [
            order[r::world_size].tolist() for r in range(world_size)
        ]
        assert (
            len(
                {
                    len(EpochBatches(num_samples, batch_size, rank=r, world_size=world_size))
                    for r in range(world_size)
                }
            )
            == 1
        )


def test_one_process_batches_are_consecutive_slices_of_the_epoch_order() -> None:
    batches = EpochBatches(10, 4, seed=3)
    batches.set_epoch(2)
    assert [b.tolist() for b in batches] == [b.tolist() for b in epoch_permutation(10, 3, 2).split(4)]
    assert [b.tolist() for b in EpochBatches(5, 2)] == [[0, 1], [2, 3], [4]]
    with pytest.raises(UserError, match="3 cached samples cannot be shared between 4 processes"):
        EpochBatches(3, 2, world_size=4, rank=0)


def test_cached_epochs_run_in_the_training_process_without_loader_workers(
    train_config, tmp_path: Path
) -> None:
    probes = tmp_path / "probe"
    cfg = train_config(
        *FE, "trainer.max_epochs=2", "data.num_workers=2", f"model.cache_dir={tmp_path / 'cache'}",
        *probe_overrides(probes),
    )  # fmt: skip
    _, objects = train(cfg)
    recorded = torch.load(probes / "rank0.pt", weights_only=True)
    assert recorded["children"] == 0  # no worker processes while training and validating
    train_rows = cache_files(tmp_path / "cache")[36]
    for epoch in (0, 1):
        features, labels = recorded[f"train/{epoch}"]
        expected = epoch_permutation(36, cfg.seed, epoch)
        assert torch.equal(features, torch.from_numpy(train_rows[expected.numpy()]))
        assert labels.tolist() == [objects["datamodule"].train_set.targets[i] for i in expected]


def test_validation_pictures_of_a_cached_fit_do_not_run_the_backbone(train_config, tmp_path: Path) -> None:
    # The default callbacks and loggers: the validation image logger draws predictions every epoch.
    cfg = train_config(
        *FE, "trainer.max_epochs=2", f"model.cache_dir={tmp_path / 'cache'}",
        f"+callbacks.backbone_calls._target_={__name__}.BackboneCalls",
    )  # fmt: skip
    assert cfg.callbacks.validation_images is not None and "tensorboard" in cfg.logger
    _, objects = train(cfg)
    probe = next(c for c in objects["trainer"].callbacks if isinstance(c, BackboneCalls))
    assert probe.calls == 0
    assert probe.difference < 1e-4
    assert list((Path(cfg.paths.output_dir) / "tensorboard").glob("events.out.tfevents.*"))


def test_balanced_sampling_is_honoured_on_cached_features(train_config, tmp_path: Path) -> None:
    data = make_imagefolder(tmp_path / "data", {"train": 12, "val": 2, "test": 1}, seed=4)
    for shape in ("cross", "square"):  # 12 circles, 2 crosses, 2 squares
        for path in sorted((data / "train" / shape).iterdir())[2:]:
            path.unlink()
    probes = tmp_path / "probe"
    cfg = train_config(
        *FE, "trainer.max_epochs=2", "data.balanced_sampling=true", f"data.root={data}",
        f"model.cache_dir={tmp_path / 'cache'}", *probe_overrides(probes),
    )  # fmt: skip
    _, objects = train(cfg)
    datamodule = objects["datamodule"]
    targets = [label for _, label in datamodule.train_set.samples]
    sampler = balanced_sampler(targets, datamodule.class_counts, seed=datamodule.shuffle_seed)
    recorded = torch.load(probes / "rank0.pt", weights_only=True)
    for epoch in (0, 1):
        counts = torch.bincount(recorded[f"train/{epoch}"][1], minlength=3).tolist()
        sampler.set_epoch(epoch)
        expected = torch.bincount(torch.tensor([targets[int(i)] for i in sampler]), minlength=3).tolist()
        assert sum(counts) == 16
        # the class-balanced draw of the image path, not a shuffle (which gives each small class 2)
        assert counts == expected, (counts, expected)


def test_resumed_run_trains_on_the_features_of_its_restored_backbone(train_config, tmp_path: Path) -> None:
    # A random backbone, dropout in an MLP head, and a resumed run whose own seed would build another
    # backbone: the features must come from the checkpoint's backbone for the weights to match.
    same = [
        *FE, "model.head_hidden_dim=16", "model.head_dropout=0.3", "test=false", "trainer.max_epochs=2",
        "data.shuffle_seed=1", f"model.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    unbroken = train_config(*same, "seed=1", output_dir=tmp_path / "unbroken")
    train(unbroken)
    stopper = ["+callbacks.stop._target_=tests.test_train.StopAfterEpoch", "+callbacks.stop.epoch=0"]
    interrupted = train_config(*same, "seed=1", *stopper, output_dir=tmp_path / "interrupted")
    train(interrupted)
    last = Path(interrupted.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = train_config(*same, "seed=5", f"ckpt_path={last}", output_dir=tmp_path / "resumed")
    train(resumed)

    def weights(cfg) -> dict[str, torch.Tensor]:
        path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return torch.load(path, weights_only=True)["state_dict"]

    expected, got = weights(unbroken), weights(resumed)
    changed = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not changed, changed[:5]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # one backbone: one train and one val file
