"""Feature extraction: frozen backbone in eval mode, and a feature cache that is reused and invalidated."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import make_imagefolder
from transferlab.strategies import feature_extraction
from transferlab.train import train

FE = ["model=feature_extraction", "trainer.max_epochs=2"]


def _cache_files(cfg) -> list[Path]:
    return sorted(Path(cfg.model.cache_dir).glob("*.npy"))


@pytest.fixture
def own_data(tmp_path: Path) -> Path:
    """A private copy of the tiny data, so tests may edit files."""
    return make_imagefolder(tmp_path / "data", {"train": 6, "val": 3, "test": 3}, seed=1)


def _count_computations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = feature_extraction.compute_features

    def counting(*args, **kwargs):
        calls.append(kwargs["label"])
        return original(*args, **kwargs)

    monkeypatch.setattr(feature_extraction, "compute_features", counting)
    return calls


def test_backbone_stays_frozen_with_fixed_batchnorm_statistics(train_config) -> None:
    cfg = train_config(*FE, "model.feature_cache=false")
    _, objects = train(cfg)
    model = objects["model"]
    fresh = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    running = {k: v for k, v in fresh["state_dict"].items() if k.startswith("backbone.") and "running_" in k}
    assert running
    # small_cnn BatchNorm starts at mean 0 / var 1: any update during training would move them.
    for key, value in running.items():
        expected = torch.zeros_like(value) if "mean" in key else torch.ones_like(value)
        assert torch.equal(value, expected), key
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_cache_is_computed_once_and_reused_across_runs(
    train_config, own_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_computations(monkeypatch)
    cache = tmp_path / "cache"
    first = train_config(*FE, f"data.root={own_data}", f"model.cache_dir={cache}", output_dir=tmp_path / "a")
    metrics_first, _ = train(first)
    assert sorted(calls) == ["train", "val"]  # once each, although two epochs ran
    assert len(_cache_files(first)) == 2

    calls.clear()
    second = train_config(*FE, f"data.root={own_data}", f"model.cache_dir={cache}", output_dir=tmp_path / "b")
    metrics_second, _ = train(second)
    assert calls == []  # every embedding came from the cache
    # Same seed, same embeddings: the same head is learned.
    assert metrics_second["val/acc"] == pytest.approx(metrics_first["val/acc"])


def test_changed_or_added_file_invalidates_the_cache(
    train_config, own_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    args = [*FE, "trainer.max_epochs=1", f"data.root={own_data}", f"model.cache_dir={cache}"]
    train(train_config(*args, output_dir=tmp_path / "a"))
    calls = _count_computations(monkeypatch)

    changed = own_data / "train" / "circle" / "0.png"
    shutil.copy(own_data / "train" / "square" / "0.png", changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    train(train_config(*args, output_dir=tmp_path / "b"))
    assert calls == ["train"]  # only the split with the changed file is recomputed

    calls.clear()
    shutil.copy(own_data / "val" / "cross" / "0.png", own_data / "val" / "cross" / "new.png")
    train(train_config(*args, output_dir=tmp_path / "c"))
    assert calls == ["val"]


def test_cached_training_runs_on_embeddings_and_matches_uncached(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transferlab.strategies.classifier import ClassifierModule

    seen: list[tuple[str, int]] = []
    original = ClassifierModule._step

    def recording(self, batch, stage):
        seen.append((stage, batch[0].ndim))
        return original(self, batch, stage)

    monkeypatch.setattr(ClassifierModule, "_step", recording)
    cached_metrics, _ = train(
        train_config(*FE, f"model.cache_dir={tmp_path / 'c'}", output_dir=tmp_path / "a")
    )
    # Every training and validation batch was an embedding; the test split goes through the backbone.
    assert {ndim for stage, ndim in seen if stage != "test"} == {2}
    assert {ndim for stage, ndim in seen if stage == "test"} == {4}

    plain_metrics, _ = train(train_config(*FE, "model.feature_cache=false", output_dir=tmp_path / "b"))
    # Same embeddings up to float rounding (they were computed in larger batches): same learning curve.
    assert cached_metrics["val/loss"] == pytest.approx(plain_metrics["val/loss"], rel=1e-2)
    assert cached_metrics["test/acc"] == pytest.approx(plain_metrics["test/acc"], abs=0.1)  # <= 1 image of 12
