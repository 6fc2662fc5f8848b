"""Shared fixtures: tiny ImageFolder trees made on the fly and the real configs, shrunk for speed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, open_dict
from PIL import Image

import transferlab
from transferlab.utils.compose import compose_run_config

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")

# The environment is shared between clones: make sure the code under test is this clone's.
if Path(transferlab.__file__).resolve().parents[2] != ROOT:
    pytest.exit(f"transferlab is imported from {transferlab.__file__}, not from {ROOT}: run `make env`.", 2)
CLASSES = ("circle", "cross", "square")

# Overrides that make any train run tiny: the small CNN, one epoch, one process, no progress bars.
FAST_OVERRIDES = [
    "backbone=small_cnn",
    "data=imagefolder",
    "data.num_workers=0",
    "data.batch_size=8",
    "data.augmentation=none",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "callbacks.rich_progress_bar=null",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A noisy image of a simple shape: learnable from a handful of examples by a tiny CNN."""
    img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    lo, hi = size // 4, 3 * size // 4
    jitter = int(rng.integers(-1, 2))
    if shape == "square":
        img[lo + jitter : hi + jitter, lo:hi] = (220, 40, 40)
    elif shape == "cross":
        img[size // 2 - 1 : size // 2 + 2, :] = (40, 220, 40)
        img[:, size // 2 - 1 + jitter : size // 2 + 2 + jitter] = (40, 220, 40)
    else:
        yy, xx = np.mgrid[:size, :size]
        mask = (yy - size / 2) ** 2 + (xx - size / 2 - jitter) ** 2 < (size / 4) ** 2
        img[mask] = (40, 40, 220)
    return Image.fromarray(img)


def make_imagefolder(root: Path, per_split: dict[str, int], size: int = 24, seed: int = 0) -> Path:
    """Write root/{split}/{class}/{i}.png for the three shape classes."""
    rng = np.random.default_rng(seed)
    for split, count in per_split.items():
        for shape in CLASSES:
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                draw_shape(shape, size, rng).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-class ImageFolder tree with train/val/test splits (12/4/4 images per class)."""
    return make_imagefolder(tmp_path_factory.mktemp("tiny_data"), {"train": 12, "val": 4, "test": 4})


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose a real config of conf/ as the entry point would, with its output dir at ``output_dir``."""
    cfg = compose_run_config(config_name, overrides, output_dir)
    with open_dict(cfg):
        cfg.paths.root_dir = str(output_dir)
    return cfg


@pytest.fixture
def train_config(tiny_data: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """Factory: the real train config on the tiny data, with extra overrides."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        args = [*FAST_OVERRIDES, f"data.root={tiny_data}", *overrides]
        return compose_config("train", args, output_dir or tmp_path / "run")

    return make


def run_cli(
    module: str, *args: str, cwd: Path, timeout: float = 600, warnings: bool = False
) -> subprocess.CompletedProcess:
    """Run an entry point as a user would (``python -m transferlab.train ...``) and capture its output.

    Python's warnings are off unless ``warnings`` is true (then the output is what a user sees). The
    capture ends when every process holding the output pipes has ended (children included).
    """
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    if warnings:
        env.pop("PYTHONWARNINGS", None)
    else:
        env["PYTHONWARNINGS"] = "ignore"
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
