"""Peak memory of building a 100k x 1280 feature cache and of training a head on it, each in a fresh process.

The cache file is synthesised through the cache's own writer (random float32 rows, written chunk by
chunk, as the backbone's batches are); then a linear head trains for one epoch on it through the
in-process loader the feature-extraction strategy uses (rows read from the file on demand, batches of
256, shuffled). Side by side: the build done the way the cache did before (chunks concatenated into one
tensor, saved with ``torch.save``); training on the same file memory-mapped (``np.load(mmap_mode="r")``)
and loaded whole into memory; and a process that imports the same libraries and trains nothing (torch
and Lightning alone take about 1 GB here). The peak resident memory (``ru_maxrss``) of each child process
is reported, with the epoch's wall time.

    python benchmarks/bench_feature_cache_memory.py [--rows 100000] [--dim 1280] [--work DIR]

Exits with status 4 (``_target.BELOW_TARGET``) when training on the cache peaks at 1.5 GB or more, with
status 1 when a child process fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _target import below_target

LIMIT_BYTES = 1.5e9
CHUNK_ROWS = 1024
NUM_CLASSES = 10


def chunks(rows: int, dim: int):
    """Random float32 rows in chunks, as a backbone would produce them."""
    rng = np.random.default_rng(0)
    for start in range(0, rows, CHUNK_ROWS):
        yield rng.standard_normal((min(CHUNK_ROWS, rows - start), dim), dtype=np.float32)


def build_streamed(path: Path, rows: int, dim: int) -> None:
    from transferlab.strategies.feature_cache import write_features

    write_features(path, rows, chunks(rows, dim))


def build_whole(path: Path, rows: int, dim: int) -> None:
    import torch

    features = torch.cat([torch.from_numpy(chunk) for chunk in chunks(rows, dim)])
    torch.save({"features": features}, path)


def train_one_epoch(path: Path | None, how: str) -> dict[str, float]:
    """One epoch of a linear head on the features at ``path`` (None: only the imports, no training)."""
    import lightning as L
    import torch
    import torch.nn.functional as F

    from transferlab.strategies.feature_batches import EpochBatches, FeatureBatches, FeatureSplit
    from transferlab.strategies.feature_cache import read_features

    if path is None:
        return {}
    if how == "reads":  # ours
        features = read_features(path)
    elif how == "mmap":
        features = np.load(path, mmap_mode="r")
    else:
        features = np.load(path)  # the whole array in memory
    labels = np.random.default_rng(1).integers(0, NUM_CLASSES, len(features))
    split = FeatureSplit([(f"image_{i}.jpg", int(label)) for i, label in enumerate(labels)], ["c"] * 10)
    split.attach(features)

    class LinearHead(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(features.shape[1], NUM_CLASSES)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.head(x), y)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(LinearHead(), train_dataloaders=FeatureBatches(split, EpochBatches(len(split), 256, seed=0)))
    return {"epoch_s": time.perf_counter() - start}


def child(mode: str, path: Path, rows: int, dim: int) -> None:
    extra: dict[str, float] = {}
    if mode == "build_streamed":
        build_streamed(path, rows, dim)
    elif mode == "build_whole":
        build_whole(path, rows, dim)
    elif mode.startswith("train_"):
        extra = train_one_epoch(path, mode.removeprefix("train_"))
    elif mode == "imports_only":
        extra = train_one_epoch(None, "none")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"peak_rss_bytes": peak, **extra}))


def measure(mode: str, path: Path, rows: int, dim: int) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--file",
        str(path),
        "--rows",
        str(rows),
        "--dim",
        str(dim),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    if result.returncode:
        sys.exit(f"{mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.file, args.rows, args.dim)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_feature_cache_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    cache_file, whole_file = work / "features.npy", work / "features.pt"
    results = {
        "build_streamed": measure("build_streamed", cache_file, args.rows, args.dim),
        "build_whole": measure("build_whole", whole_file, args.rows, args.dim),
        "train_reads": measure("train_reads", cache_file, args.rows, args.dim),
        "train_mmap": measure("train_mmap", cache_file, args.rows, args.dim),
        "train_whole": measure("train_whole", cache_file, args.rows, args.dim),
        "imports_only": measure("imports_only", cache_file, args.rows, args.dim),
    }
    whole_file.unlink()
    data_gb = args.rows * args.dim * 4 / 1e9
    for mode, values in results.items():
        print(mode, {k: round(v / 1e9, 3) if k.endswith("bytes") else round(v, 2) for k, v in values.items()})

    def gb(mode: str) -> str:
        return f"{results[mode]['peak_rss_bytes'] / 1e9:.2f} GB"

    def train(mode: str) -> str:
        return f"{gb(mode)} ({results[mode]['epoch_s']:.1f} s)"

    print()
    print(
        "| date | machine | command | features | build: peak RSS ours / concatenate + torch.save | train 1 "
        "epoch: peak RSS (epoch time) ours / memory map / whole array; imports only | target |"
    )
    print(
        f"| {datetime.date.today()} | {platform.machine()}, {os.cpu_count()} cores | "
        f"`python benchmarks/bench_feature_cache_memory.py --rows {args.rows} --dim {args.dim}` | "
        f"{args.rows} x {args.dim} float32 = {data_gb:.2f} GB | {gb('build_streamed')} / {gb('build_whole')} "
        f"| {train('train_reads')} / {train('train_mmap')} / {train('train_whole')}; {gb('imports_only')} "
        "| < 1.5 GB |"
    )
    if results["train_reads"]["peak_rss_bytes"] >= LIMIT_BYTES:
        below_target(f"training on the cache peaked at {gb('train_reads')}, above the 1.5 GB target")


if __name__ == "__main__":
    main()
