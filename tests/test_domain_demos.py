"""The two-domain demos: written once from package data, disjoint domains, the MNIST-M blend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.data.animal_mnist_m import blend_into_photos, split_silhouettes, write_animal_mnist_m
from transferlab.data.demo import ANIMAL_MNIST_CLASSES, PARAMETER_FILE
from transferlab.data.domain_demos import check_domain_demo
from transferlab.errors import UserError


def test_blend_is_the_absolute_difference_of_a_photo_patch_and_the_silhouette() -> None:
    photo = np.zeros((10, 12, 3), dtype=np.uint8)
    photo[..., 0], photo[..., 1], photo[..., 2] = 100, 30, 220  # one colour: the patch's place is moot
    silhouette = np.zeros((2, 4, 4), dtype=np.uint8)
    silhouette[:, 1:3, 1:3] = 255
    blended = blend_into_photos(silhouette, [photo], seed=0)
    assert blended.shape == (2, 4, 4, 3) and blended.dtype == np.uint8
    assert blended[0, 0, 0].tolist() == [100, 30, 220]  # background: the photo
    assert blended[0, 1, 1].tolist() == [155, 225, 35]  # animal: |photo - 255|


def test_source_and_target_silhouettes_are_disjoint_and_balanced() -> None:
    labels = np.repeat(np.arange(len(ANIMAL_MNIST_CLASSES)), 20)
    source, target = split_silhouettes(labels, per_class=8, seed=0)
    assert not set(source) & set(target)
    assert np.bincount(labels[source]).tolist() == [8] * 10 == np.bincount(labels[target]).tolist()
    with pytest.raises(UserError, match="needs 42"):
        split_silhouettes(labels, per_class=21, seed=0)


def test_demo_writes_two_class_trees_once(tmp_path: Path) -> None:
    source, target = write_animal_mnist_m(tmp_path / "s", tmp_path / "t", per_class=3)
    for root, mode in ((source, "L"), (target, "RGB")):
        assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(ANIMAL_MNIST_CLASSES)
        files = sorted(root.rglob("*.png"))
        assert len(files) == 30
        assert {Image.open(f).mode for f in files} == {mode}
        assert {Image.open(f).size for f in files} == {(28, 28)}
    stamp = (target / PARAMETER_FILE).stat().st_mtime_ns
    write_animal_mnist_m(tmp_path / "s", tmp_path / "t", per_class=3)  # the same: nothing rewritten
    assert (target / PARAMETER_FILE).stat().st_mtime_ns == stamp
    assert json.loads((target / PARAMETER_FILE).read_text())["photos"] == ["china.jpg", "flower.jpg"]
    with pytest.raises(UserError, match="other parameters"):
        write_animal_mnist_m(tmp_path / "s", tmp_path / "t", per_class=4)


def test_unknown_demo_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="animal_mnist_m, digits_shift"):
        check_domain_demo("mnist_m")
