"""Time per training epoch of feature extraction with and without the feature cache, side by side.

Same data (the Animal-MNIST demo), same backbone (pretrained EfficientNet-Lite0 at 96 px), same head and
seed; the two runs alternate over several rounds. Epoch times are measured from the second epoch on; the
embeddings are computed before the first epoch (inside "rest of the cached fit", from a cold cache).

    python benchmarks/bench_feature_cache.py [--rounds 2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from transferlab.backbones import backbone_preprocessing
from transferlab.utils.config import to_container
from transferlab.utils.paths import CONF_DIR


class EpochTimer(L.Callback):
    """Wall time of each training epoch."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._start)


def run(cached: bool, epochs: int, data_dir: Path, cache_dir: Path) -> tuple[list[float], float, float]:
    overrides = [
        "model=feature_extraction",
        f"model.feature_cache={str(cached).lower()}",
        f"model.cache_dir={cache_dir}",
        f"data.root={data_dir}",
        "data.num_workers=0",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    L.seed_everything(0)
    backbone_cfg = to_container(cfg.backbone)
    datamodule = instantiate(cfg.data, split_dir=None)
    datamodule.set_preprocessing(
        backbone_preprocessing(**{k: v for k, v in backbone_cfg.items() if k != "weights"})
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = instantiate(cfg.model, backbone=backbone_cfg, class_names=datamodule.class_names)
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    fit_time = time.perf_counter() - start
    return timer.times, float(trainer.callback_metrics["val/acc"]), fit_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_feature_cache_"))
    data_dir = work / "animal_mnist"
    later_epochs: dict[bool, list[float]] = {False: [], True: []}
    accuracy: dict[bool, list[float]] = {False: [], True: []}
    cache_build: list[float] = []
    for round_index in range(args.rounds):
        for cached in (False, True):
            times, acc, fit_time = run(cached, args.epochs, data_dir, work / f"cache_{round_index}")
            later_epochs[cached] += times[1:]
            accuracy[cached].append(acc)
            if cached:  # a fresh cache folder each round: fit time minus epochs = computing the embeddings
                cache_build.append(fit_time - sum(times))
            rounded = [round(t, 3) for t in times]
            print(f"round {round_index} cached={cached}: epochs {rounded} s, val/acc {acc:.3f}")
    plain_epoch = statistics.median(later_epochs[False])
    cached_epoch = statistics.median(later_epochs[True])
    print()
    print(
        "| date | machine | command | epoch (no cache) | epoch (cache, after the first) | speed-up | "
        "rest of the cached fit (cache build + validation) | val/acc no cache / cache |"
    )
    print(
        f"| {datetime.date.today()} | {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()} "
        f"| `python benchmarks/bench_feature_cache.py --rounds {args.rounds} --epochs {args.epochs}` "
        f"| {plain_epoch:.2f} s | {cached_epoch:.3f} s | **{plain_epoch / cached_epoch:.0f}x** "
        f"| {statistics.median(cache_build):.2f} s "
        f"| {statistics.mean(accuracy[False]):.3f} / {statistics.mean(accuracy[True]):.3f} |"
    )


if __name__ == "__main__":
    main()
