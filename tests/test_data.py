"""Tests of transferlab.data: image loading, transforms, folder scanning, splits and the data module."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import SequentialSampler

from transferlab.data import (
    IMAGE_EXTENSIONS,
    EpochSampler,
    ImageFolderDataModule,
    build_eval_transform,
    build_train_transform,
    find_layout,
    is_image_file,
    list_classes,
    list_samples,
    load_rgb,
    read_split,
    stratified_split,
    write_split,
)
from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing, as_preprocessing

PRE = {"input_size": 8, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 0.875}


def _image(
    path: Path, color: tuple[int, int, int] = (255, 255, 255), size: tuple[int, int] = (12, 10)
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _tree(folder: Path, classes: dict[str, int], color: tuple[int, int, int] = (255, 255, 255)) -> Path:
    for name, count in classes.items():
        for i in range(count):
            _image(folder / name / f"{i:02d}.png", color)
    return folder


def _presplit(root: Path, classes: dict[str, int]) -> Path:
    for split in ("train", "val", "test"):
        _tree(root / split, classes)
    return root


# ---------------------------------------------------------------------------------------------- images


def test_rgba_transparent_pixels_become_white(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    image = Image.new("RGBA", (2, 1), (255, 0, 0, 0))  # fully transparent red
    image.putpixel((1, 0), (0, 0, 255, 255))  # opaque blue
    image.save(path)
    loaded = load_rgb(path)
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 0)) == (0, 0, 255)


def test_la_and_palette_transparency_composited_on_white(tmp_path: Path) -> None:
    Image.new("LA", (1, 1), (0, 0)).save(tmp_path / "la.png")
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png", transparency=0)  # palette entry 0 (red) is transparent
    assert load_rgb(tmp_path / "la.png").getpixel((0, 0)) == (255, 255, 255)
    loaded = load_rgb(tmp_path / "p.png")
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 0)) == (0, 255, 0)


def test_grayscale_palette_and_16bit_load_as_rgb(tmp_path: Path) -> None:
    Image.new("L", (3, 2), 77).save(tmp_path / "g.png")
    Image.new("RGB", (3, 2), (10, 200, 30)).convert("P").save(tmp_path / "p.gif")
    Image.fromarray(np.full((2, 3), 65535, dtype=np.uint16)).save(tmp_path / "w.png")
    assert load_rgb(tmp_path / "g.png").getpixel((0, 0)) == (77, 77, 77)
    for name in ("g.png", "p.gif", "w.png"):
        loaded = load_rgb(tmp_path / name)
        assert loaded.mode == "RGB" and np.asarray(loaded).shape == (2, 3, 3)
    assert load_rgb(tmp_path / "w.png").getpixel((0, 0)) == (255, 255, 255)  # scaled, not clipped


def test_exif_orientation_applied(tmp_path: Path) -> None:
    # Stored 20 wide x 10 high, left half red, right half blue; orientation 6 = rotate 90 degrees clockwise
    # for display, so the stored left edge becomes the top.
    stored = Image.new("RGB", (20, 10), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.JPG"
    stored.save(path, exif=exif, quality=95)
    upright = load_rgb(path)
    assert upright.size == (10, 20)
    top, bottom = upright.getpixel((5, 2)), upright.getpixel((5, 17))
    assert top[0] > 200 and top[2] < 60  # red
    assert bottom[2] > 200 and bottom[0] < 60  # blue


def test_unreadable_image_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"broken\.jpg.*delete or replace"):
        load_rgb(path)


def test_is_image_file() -> None:
    assert {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"} == set(IMAGE_EXTENSIONS)
    assert is_image_file("a/b/Photo.JPEG") and is_image_file("x.TiFf") and is_image_file(Path("y.webp"))
    assert not is_image_file(".DS_Store")
    assert not is_image_file("._photo.jpg")
    assert not is_image_file("notes.txt")


# ---------------------------------------------------------------------------------------------- transforms


def test_eval_transform_resizes_crops_and_normalises() -> None:
    transform = build_eval_transform(PRE)
    white = transform(Image.new("RGB", (5, 3), (255, 255, 255)))  # smaller than the crop
    black = transform(Image.new("RGB", (40, 30), (0, 0, 0)))
    assert white.shape == black.shape == (3, 8, 8)
    assert white.dtype == torch.float32
    assert torch.allclose(white, torch.ones(3, 8, 8)) and torch.allclose(black, -torch.ones(3, 8, 8))


def test_eval_transform_keeps_centre(tmp_path: Path) -> None:
    # 32x32 with a 2-pixel red border: resize to round(8 / 0.5) = 16, centre crop 8 -> no border left.
    image = Image.new("RGB", (32, 32), (255, 0, 0))
    image.paste((0, 0, 0), (2, 2, 30, 30))
    out = build_eval_transform({**PRE, "crop_pct": 0.5, "interpolation": "nearest"})(image)
    assert torch.allclose(out, -torch.ones(3, 8, 8))


@pytest.mark.parametrize("augmentation", ["none", "light", "strong"])
def test_train_presets_give_input_size(augmentation: str) -> None:
    preprocessing = Preprocessing(
        input_size=8,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        crop_pct=1.0,
        interpolation="bicubic",
    )
    transform = build_train_transform(preprocessing, augmentation=augmentation)
    for size in [(4, 6), (30, 20)]:
        out = transform(Image.new("RGB", size, (120, 30, 200)))
        assert out.shape == (3, 8, 8) and out.dtype == torch.float32


def test_unknown_augmentation_lists_presets() -> None:
    with pytest.raises(UserError, match=r"'heavy'.*none, light, strong"):
        build_train_transform(PRE, augmentation="heavy")


def test_preprocessing_validation() -> None:
    assert (
        as_preprocessing({"input_size": 8, "mean": [0, 0, 0], "std": [1, 1, 1]}).interpolation == "bilinear"
    )
    with pytest.raises(UserError, match=r"interpolation.*bilinear, bicubic, nearest"):
        as_preprocessing({**PRE, "interpolation": "lanczos"})
    with pytest.raises(UserError, match="std"):
        as_preprocessing({**PRE, "std": (1, 0, 1)})
    with pytest.raises(UserError, match="input_size"):
        as_preprocessing({"mean": (0, 0, 0), "std": (1, 1, 1)})


# ---------------------------------------------------------------------------------------------- folders


def test_listing_ignores_hidden_and_non_images(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"b": 2, "a": 1})
    (root / ".hidden").mkdir()
    (root / "a" / ".DS_Store").write_bytes(b"\0")
    (root / "a" / "notes.txt").write_text("x")
    _image(root / "a" / "nested" / "deep.PNG")
    _image(root / "a" / ".cache" / "skip.png")
    assert list_classes(root) == ["a", "b"]
    samples = list_samples(root, ["a", "b"])
    assert samples == sorted(samples)
    assert [(Path(p).relative_to(root).as_posix(), y) for p, y in samples] == [
        ("a/00.png", 0),
        ("a/nested/deep.PNG", 0),
        ("b/00.png", 1),
        ("b/01.png", 1),
    ]


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"not found: .*nowhere.*data\.root"):
        find_layout(tmp_path / "nowhere")


def test_root_without_splits_or_classes(tmp_path: Path) -> None:
    _image(tmp_path / "loose.png")
    with pytest.raises(
        UserError, match=rf"{re.escape(str(tmp_path))}.*neither train/.*nor class folders.*root/<class>/"
    ):
        find_layout(tmp_path)


def test_missing_split_folder(tmp_path: Path) -> None:
    _tree(tmp_path / "train", {"a": 1, "b": 1})
    _tree(tmp_path / "test", {"a": 1, "b": 1})
    with pytest.raises(UserError, match=r"has train/, test/ but no val/\. Create .*val"):
        find_layout(tmp_path)


def test_class_folder_without_images(tmp_path: Path) -> None:
    _tree(tmp_path, {"a": 1, "b": 1})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "readme.txt").write_text("x")
    with pytest.raises(
        UserError, match=rf"{re.escape(str(tmp_path / 'c'))} has no image files.*Add images of 'c'"
    ):
        list_samples(tmp_path, list_classes(tmp_path))


def test_class_sets_differ_between_splits(tmp_path: Path) -> None:
    _tree(tmp_path / "train", {"cat": 1, "dog": 1, "cow": 1})
    _tree(tmp_path / "val", {"cat": 1, "dog": 1})
    _tree(tmp_path / "test", {"cat": 1, "dog": 1, "cow": 1, "emu": 1})
    with pytest.raises(UserError) as info:
        find_layout(tmp_path)
    message = str(info.value)
    assert "train/ lacks emu" in message and "val/ lacks cow, emu" in message
    assert str(tmp_path) in message and "same class folders" in message


def test_fewer_than_two_classes(tmp_path: Path) -> None:
    _tree(tmp_path, {"only": 2})
    with pytest.raises(UserError, match=r"1 class folder.*only.*at least 2"):
        find_layout(tmp_path)


# ---------------------------------------------------------------------------------------------- splits


def _flat_samples(counts: list[int]) -> list[tuple[str, int]]:
    return [(f"c{label}/{i:03d}.png", label) for label, n in enumerate(counts) for i in range(n)]


def test_stratified_split_is_deterministic_disjoint_and_complete() -> None:
    samples = _flat_samples([20, 3, 7])
    split = stratified_split(samples, 0.15, 0.15, seed=1)
    assert split == stratified_split(list(reversed(samples)), 0.15, 0.15, seed=1)  # order-independent
    assert split != stratified_split(samples, 0.15, 0.15, seed=2)
    all_paths = [p for part in split.values() for p, _ in part]
    assert sorted(all_paths) == sorted(p for p, _ in samples) and len(set(all_paths)) == len(all_paths)
    for part in split.values():
        assert {label for _, label in part} == {0, 1, 2}
    assert sum(1 for _, label in split["val"] if label == 0) == 3  # round(20 * 0.15)


def test_zero_fraction_gives_empty_split() -> None:
    split = stratified_split(_flat_samples([4, 4]), 0.25, 0.0, seed=0)
    assert split["test"] == [] and len(split["val"]) == 2 and len(split["train"]) == 6


def test_class_too_small_for_split() -> None:
    with pytest.raises(UserError, match=r"Class 'tiny' has 2 images.*at least 3.*val_fraction"):
        stratified_split(_flat_samples([10, 2]), 0.15, 0.15, seed=0, class_names=["big", "tiny"])
    with pytest.raises(UserError, match="below 1"):
        stratified_split(_flat_samples([10, 10]), 0.5, 0.5, seed=0)


def test_write_and_read_split(tmp_path: Path) -> None:
    root = tmp_path / "data"
    samples = [(str(root / p), y) for p, y in _flat_samples([3, 3])]
    split = stratified_split(samples, 0.3, 0.3, seed=0)
    path = write_split(split, tmp_path / "out" / "split.json", root=root, class_names=["a", "b"])
    document = json.loads(path.read_text())
    assert document["class_names"] == ["a", "b"]
    assert document["splits"]["val"] == [[Path(p).relative_to(root).as_posix(), y] for p, y in split["val"]]
    assert read_split(path) == (split, ["a", "b"])


# ---------------------------------------------------------------------------------------------- data module


def _check_batches(dm: ImageFolderDataModule, expected: int) -> None:
    seen = 0
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for images, labels in loader:
            assert images.shape[1:] == (3, 8, 8) and images.dtype == torch.float32
            assert labels.dtype == torch.int64
            assert images.min() >= -1 and images.max() <= 1  # white images normalised with mean=std=0.5
            seen += len(labels)
    assert seen == expected


def test_datamodule_presplit_layout(tmp_path: Path) -> None:
    root = _presplit(tmp_path / "data", {"cat": 3, "dog": 2})
    dm = ImageFolderDataModule(str(root), batch_size=4, augmentation="none", split_dir=str(tmp_path / "out"))
    dm.prepare_data()
    assert dm.class_names == ["cat", "dog"] and dm.num_classes == 2  # before setup
    dm.set_preprocessing(PRE)
    dm.setup("fit")
    assert dm.train_set is not None and len(dm.train_set.samples) == 5
    images, labels = next(iter(dm.val_dataloader()))
    assert torch.allclose(images, torch.ones_like(images)) and labels.tolist() == [0, 0, 0, 1]
    _check_batches(dm, 15)
    assert not (tmp_path / "out").exists()  # nothing to record for a pre-split tree


def test_datamodule_flat_layout_splits_and_records(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data", {"a": 6, "b": 5, "c": 4})
    out = tmp_path / "run"
    dm = ImageFolderDataModule(str(root), preprocessing=PRE, batch_size=4, split_dir=str(out), split_seed=3)
    dm.setup()
    sets = {"train": dm.train_set, "val": dm.val_set, "test": dm.test_set}
    for dataset in sets.values():
        assert dataset is not None and {y for _, y in dataset.samples} == {0, 1, 2}
    document = json.loads((out / "split.json").read_text())
    assert document["class_names"] == ["a", "b", "c"]
    for name, dataset in sets.items():
        assert document["splits"][name] == [
            [Path(p).relative_to(root).as_posix(), y] for p, y in dataset.samples
        ]
    _check_batches(dm, 15)


def test_datamodule_loader_settings(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"a": 4, "b": 4})
    dm = ImageFolderDataModule(str(root), preprocessing=PRE, batch_size=4, num_workers=0)
    dm.setup()
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert isinstance(train.sampler, EpochSampler) and isinstance(val.sampler, SequentialSampler)
    assert not train.persistent_workers and not train.drop_last
    dm_workers = ImageFolderDataModule(str(root), preprocessing=PRE, num_workers=1, pin_memory=True)
    dm_workers.setup()
    loader = dm_workers.test_dataloader()  # not iterated: no worker process is started
    assert loader.persistent_workers and loader.pin_memory and loader.num_workers == 1


def test_datamodule_per_device_batch(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"a": 4, "b": 4})
    dm = ImageFolderDataModule(str(root), preprocessing=PRE, batch_size=8)
    dm.trainer = SimpleNamespace(world_size=2, is_global_zero=True)
    dm.setup("fit")
    assert dm.per_device_batch_size == 4 and dm.train_dataloader().batch_size == 4
    odd = ImageFolderDataModule(str(root), preprocessing=PRE, batch_size=7)
    odd.trainer = SimpleNamespace(world_size=2, is_global_zero=True)
    with pytest.raises(UserError, match=r"batch_size=7.*2 devices.*multiple of 2"):
        odd.setup("fit")


def test_datamodule_needs_preprocessing(tmp_path: Path) -> None:
    dm = ImageFolderDataModule(str(_tree(tmp_path, {"a": 3, "b": 3})))
    with pytest.raises(UserError, match="set_preprocessing"):
        dm.setup()


def test_set_preprocessing_after_setup_updates_transforms(tmp_path: Path) -> None:
    dm = ImageFolderDataModule(str(_tree(tmp_path, {"a": 3, "b": 3})), preprocessing=PRE, batch_size=2)
    dm.setup()
    dm.set_preprocessing({**PRE, "input_size": 12})
    assert dm.val_set is not None and dm.val_set[0][0].shape == (3, 12, 12)


def test_datamodule_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="augmentation"):
        ImageFolderDataModule(str(tmp_path), augmentation="wild")
    with pytest.raises(UserError, match=r"data\.demo"):
        ImageFolderDataModule(str(tmp_path), demo="imagenet")
    with pytest.raises(UserError, match="batch_size"):
        ImageFolderDataModule(str(tmp_path), batch_size=0)
    with pytest.raises(UserError, match="not found"):
        _ = ImageFolderDataModule(str(tmp_path / "missing")).class_names
