"""Images per second of transferlab's data pipeline against torchvision's stock ImageFolder, on large photos.

Both pipelines read the same generated 2000x1500 JPEGs (smooth gradients plus noise, quality 90) and apply
the same eval transform (resize to 256, centre crop 224, normalise):

* ``transferlab``: :class:`~transferlab.data.ImageSampleDataset` as the data module builds it, which
  decodes large JPEGs at a reduced scale before the resize;
* ``torchvision``: ``torchvision.datasets.ImageFolder`` with its default PIL loader (full decode).

They run alternately for several rounds in one process, single-threaded (``torch.set_num_threads(1)``, no
loader workers), so both see the same machine load; the median of the per-round speed ratios is reported.
The setup scan's cost per image is measured too. Exits with status 4 (``_target.BELOW_TARGET``) when
the median ratio is below 1.5x. Usage::

    python benchmarks/bench_data_pipeline.py [--images 48] [--rounds 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from _target import BELOW_TARGET
from PIL import Image
from torchvision.datasets import ImageFolder

from transferlab.data import (
    ImageSampleDataset,
    build_eval_transform,
    list_classes,
    list_samples,
    min_decode_size,
    scan_samples,
)
from transferlab.preprocessing import Preprocessing

PREPROCESSING = Preprocessing(
    input_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.875
)
PHOTO_SIZE = (2000, 1500)
TARGET_RATIO = 1.5


def write_photos(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEG photos in two class folders: gradients of random direction and colour, plus noise."""
    rng = np.random.default_rng(seed)
    width, height = PHOTO_SIZE
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    for i in range(count):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1.0) / 2.0
        low, high = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        pixels = low + ramp[..., None] * (high - low) + rng.normal(0, 8, (height, width, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.jpg", quality=90)
    return root


def images_per_second(get_item: Callable[[int], object], n: int) -> float:
    """Load items ``0..n-1`` once; images per second."""
    start = time.perf_counter()
    for index in range(n):
        get_item(index)
    return n / (time.perf_counter() - start)


def ours(root: Path) -> ImageSampleDataset:
    """The eval dataset as ImageFolderDataModule builds it."""
    names = list_classes(root)
    return ImageSampleDataset(
        list_samples(root, names),
        names,
        build_eval_transform(PREPROCESSING),
        min_size=min_decode_size(PREPROCESSING),
    )


def stock(root: Path) -> ImageFolder:
    """torchvision's ImageFolder with its default loader and the same transform."""
    return ImageFolder(str(root), transform=build_eval_transform(PREPROCESSING))


def scan_ms_per_image(root: Path) -> float:
    """Milliseconds per image of the setup scan (open + verify + JPEG end check)."""
    samples = list_samples(root, list_classes(root))
    start = time.perf_counter()
    report = scan_samples(samples)
    elapsed = time.perf_counter() - start
    assert not report.unreadable
    return elapsed / len(samples) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit status :data:`BELOW_TARGET` when the median ratio misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48, help="number of generated photos")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of both pipelines")
    parser.add_argument("--keep", type=Path, default=None, help="write (or reuse) the photos here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core for each pipeline's resize, whatever the machine

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        root = args.keep or Path(tmp) / "photos"
        if not list(root.glob("*/*.jpg")):
            start = time.perf_counter()
            write_photos(root, args.images)
            elapsed = time.perf_counter() - start
            print(f"wrote {args.images} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} in {elapsed:.1f} s")
        ours_set, stock_set = ours(root), stock(root)
        n = len(ours_set)
        assert n == len(stock_set)
        ours_set[0], stock_set[0]  # warm up: imports, first-call allocations
        ratios, ours_speeds, stock_speeds = [], [], []
        for round_index in range(args.rounds):
            # Alternate which pipeline goes first, so neither always gets the warmer cache.
            pair = [("ours", ours_set), ("stock", stock_set)]
            if round_index % 2:
                pair.reverse()
            speeds = {name: images_per_second(dataset.__getitem__, n) for name, dataset in pair}
            ours_speeds.append(speeds["ours"])
            stock_speeds.append(speeds["stock"])
            ratios.append(speeds["ours"] / speeds["stock"])
            print(
                f"round {round_index + 1}: transferlab {speeds['ours']:.1f} img/s, "
                f"torchvision ImageFolder {speeds['stock']:.1f} img/s, ratio {ratios[-1]:.2f}"
            )
        scan_ms = scan_ms_per_image(root)

    ratio = statistics.median(ratios)
    command = "python benchmarks/bench_data_pipeline.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print()
    header = (
        "command",
        "machine",
        "date",
        "images",
        "transferlab img/s",
        "torchvision img/s",
        "median ratio",
    )
    print("| " + " | ".join((*header, "scan ms/img")) + " |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| `{command.strip()}` | {machine} | {datetime.date.today().isoformat()} | {n} x "
        f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG | {statistics.median(ours_speeds):.1f} | "
        f"{statistics.median(stock_speeds):.1f} | **{ratio:.2f}x** | {scan_ms:.2f} |"
    )
    return 0 if ratio >= TARGET_RATIO else BELOW_TARGET


if __name__ == "__main__":
    sys.exit(main())
