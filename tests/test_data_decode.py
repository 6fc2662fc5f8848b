"""Issue 3, point 6: large JPEGs are decoded at a reduced scale before resizing, without visible change;
small images and other formats are decoded exactly as before."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.data import (
    ImageFolderDataModule,
    ImageSampleDataset,
    build_eval_transform,
    load_rgb,
    min_decode_size,
)
from transferlab.preprocessing import Preprocessing

PRE = Preprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.875)


def _photo(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """Smooth gradients plus mild noise: a stand-in for a photo that compresses like one."""
    width, height = size
    yy, xx = np.mgrid[:height, :width]
    pixels = np.stack([xx / width * 255, yy / height * 255, (xx + yy) / (width + height) * 255], axis=-1)
    pixels += np.random.default_rng(seed).normal(0, 6, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    image.save(path, quality=90)  # quality is ignored by the lossless formats
    return path


def test_min_decode_size() -> None:
    assert min_decode_size(PRE) == PRE.resize_size == 36
    assert min_decode_size(PRE, augmentation="light") == math.ceil(32 / math.sqrt(0.6 * 0.75)) == 48
    assert min_decode_size(PRE, augmentation="strong") == 48


def test_large_jpeg_is_decoded_smaller_but_never_below_the_size_needed(tmp_path: Path) -> None:
    path = _photo(tmp_path / "big.jpg", (400, 300))
    full = load_rgb(path)
    reduced = load_rgb(path, min_size=36)
    assert full.size == (400, 300)
    assert reduced.size == (50, 38)  # 1/8 scale: the largest that keeps both sides >= 36
    assert load_rgb(path, min_size=100).size == (200, 150)  # 1/2: 1/4 would give 75 < 100
    transform = build_eval_transform(PRE)
    difference = (transform(full) - transform(reduced)).abs()
    # Same picture: the decoder's scaling is an area average, like the antialiased resize it replaces.
    assert difference.mean() < 0.02 and difference.max() < 0.25


def test_rotated_large_jpeg_keeps_the_needed_size(tmp_path: Path) -> None:
    path = tmp_path / "portrait.jpg"
    image = Image.open(_photo(tmp_path / "src.png", (400, 300)))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif, quality=90)
    assert load_rgb(path, min_size=36).size == (38, 50)  # upright, both sides still >= 36


@pytest.mark.parametrize(("name", "size"), [("small.jpg", (60, 50)), ("big.png", (400, 300))])
def test_small_jpegs_and_other_formats_are_unchanged(
    tmp_path: Path, name: str, size: tuple[int, int]
) -> None:
    path = _photo(tmp_path / name, size)  # 60x50 is under twice the 36 px needed: nothing to gain
    transform = build_eval_transform(PRE)
    assert torch.equal(transform(load_rgb(path)), transform(load_rgb(path, min_size=36)))
    assert np.array_equal(np.asarray(load_rgb(path)), np.asarray(load_rgb(path, min_size=36)))


def test_data_module_datasets_decode_at_reduced_size(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(4):
            _photo(tmp_path / name / f"{i}.jpg", (400, 300), seed=i)
    dm = ImageFolderDataModule(
        str(tmp_path), preprocessing=PRE, augmentation="light", val_fraction=0.25, test_fraction=0.25
    )
    dm.setup("fit")
    assert dm.train_set is not None and dm.val_set is not None
    assert dm.train_set.min_size == 48 and dm.val_set.min_size == 36
    assert dm.val_set[0][0].shape == dm.train_set[0][0].shape == (3, 32, 32)
    plain = ImageSampleDataset(dm.val_set.samples, dm.val_set.class_names, dm.val_set.transform)
    assert (plain[0][0] - dm.val_set[0][0]).abs().mean() < 0.02
