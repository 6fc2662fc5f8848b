"""Issue 3, points 2 and 3: unreadable images are found at setup and skipped (or refused), never crash a
run mid-epoch, and images past the pixel limit are refused with the way to raise it."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.data import (
    ImageFolderDataModule,
    ImageSampleDataset,
    ImageTooLargeError,
    UnreadableImageError,
    check_image,
    load_rgb,
    scan_samples,
)
from transferlab.errors import UserError

PRE = {"input_size": 8, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def _noisy_jpeg_bytes(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _png_bytes(color: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, "PNG")
    return buffer.getvalue()


def _bad_files(folder: Path) -> list[Path]:
    """Four files a scan must reject, in the ways real folders break."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg, png = _noisy_jpeg_bytes(), _png_bytes()
    files = {
        "truncated.jpg": jpeg[: len(jpeg) // 2],  # an interrupted copy or download
        "truncated.png": png[: len(png) - 20],
        "garbage.jpg": b"<html>404 Not Found</html>",  # a failed download saved under an image name
        "empty.png": b"",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def _good_tree(root: Path, per_class: int = 4) -> Path:
    for label, name in enumerate(("cat", "dog")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"{i}.jpg").write_bytes(_noisy_jpeg_bytes(seed=10 * label + i))
    return root


def test_scan_rejects_broken_files_and_keeps_good_ones(tmp_path: Path) -> None:
    bad = _bad_files(tmp_path)
    good = tmp_path / "good.jpg"
    good.write_bytes(_noisy_jpeg_bytes())
    trailing = tmp_path / "motion_photo.jpg"  # a complete JPEG with other data after it (phone motion photos)
    trailing.write_bytes(_noisy_jpeg_bytes(seed=3) + b"ftypmp42" + bytes(range(256)) * 4)
    samples = [(str(p), 0) for p in [good, *bad, trailing]]
    report = scan_samples(samples)
    assert report.usable == [(str(good), 0), (str(trailing), 0)]
    assert [path for path, _ in report.unreadable] == [str(p) for p in bad]
    assert all(reason for _, reason in report.unreadable)
    with pytest.raises(UnreadableImageError, match=r"truncated\.jpg"):
        check_image(bad[0])


def test_unreadable_images_are_reported_once_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _good_tree(tmp_path / "data")
    bad = _bad_files(root / "cat")
    dm = ImageFolderDataModule(str(root), preprocessing=PRE, val_fraction=0.25, test_fraction=0.25)
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        dm.setup("fit")
        dm.setup("test")  # Lightning calls setup per stage: still one report
    reports = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(reports) == 1
    message = reports[0].getMessage()
    assert "4 of 12 images cannot be read" in message and "data.strict=true" in message
    for path in bad:
        assert str(path) in message
    used = {p for ds in (dm.train_set, dm.val_set, dm.test_set) for p, _ in ds.samples}  # type: ignore[union-attr]
    assert len(used) == 8 and not used & {str(p) for p in bad}
    assert dm.class_counts == [2, 2]


def test_strict_makes_unreadable_images_an_error(tmp_path: Path) -> None:
    root = _good_tree(tmp_path / "data")
    bad = _bad_files(root / "dog")
    dm = ImageFolderDataModule(
        str(root), preprocessing=PRE, strict=True, val_fraction=0.25, test_fraction=0.25
    )
    with pytest.raises(UserError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "4 of 12 images cannot be read" in message and str(bad[0]) in message
    assert "data.strict=false" in message


def test_class_folder_with_only_unreadable_images(tmp_path: Path) -> None:
    root = _good_tree(tmp_path / "data")
    _bad_files(root / "emu")
    dm = ImageFolderDataModule(str(root), preprocessing=PRE)
    with pytest.raises(
        UserError, match=rf"Class folder {root / 'emu'} has no usable images.*remove the folder"
    ):
        dm.setup("fit")


def test_image_broken_after_setup_is_replaced_by_one_of_its_class(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _good_tree(tmp_path / "data", per_class=6)
    dm = ImageFolderDataModule(
        str(root),
        preprocessing=PRE,
        batch_size=4,
        num_workers=0,  # the substitutions and the warning are per process: watch them in this one
        augmentation="none",
        val_fraction=0.2,
        test_fraction=0.2,
    )
    dm.setup("fit")
    assert dm.train_set is not None
    broken = [path for path, label in dm.train_set.samples if label == 1][:2]
    for path in broken:
        Path(path).write_bytes(b"overwritten")  # e.g. a sync client replacing files during the run
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        labels = [label for _ in range(2) for _, batch in dm.train_dataloader() for label in batch.tolist()]
    assert sorted(labels) == sorted(dm.train_set.targets * 2)  # a full epoch, twice, labels intact
    warnings = [r for r in caplog.records if "Cannot read image" in r.getMessage()]
    assert len(warnings) == 1 and any(path in warnings[0].getMessage() for path in broken)
    assert {dm.train_set.samples[i][0] for i in dm.train_set.unreadable} == set(broken)


def test_dataset_without_substitution_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(b"nope")
    with pytest.raises(UnreadableImageError, match=r"x\.jpg"):
        ImageSampleDataset([(str(path), 0)], ["a"], substitute_unreadable=False)[0]
    with pytest.raises(UserError, match="No image of class 'a' can be read"):
        ImageSampleDataset([(str(path), 0)], ["a"])[0]


def test_too_large_image_is_refused_with_the_way_to_raise_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    Image.new("RGB", (40, 30)).save(path)  # 1,200 pixels
    for check in (lambda: load_rgb(path, max_pixels=1000), lambda: check_image(path, max_pixels=1000)):
        with pytest.raises(ImageTooLargeError) as info:
            check()
        message = str(info.value)
        assert str(path) in message and "40 x 30" in message
        assert "data.max_image_pixels" in message and "decompression bomb" in message
    before = Image.MAX_IMAGE_PIXELS
    assert load_rgb(path, max_pixels=1200).size == (40, 30)
    assert before == Image.MAX_IMAGE_PIXELS  # a lower limit never changes Pillow's process-wide one


def test_raised_limit_overrides_pillows_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow itself would refuse 1,200 > 2 x 500
    with pytest.raises(ImageTooLargeError, match=r"data\.max_image_pixels=600"):
        load_rgb(path, max_pixels=600)
    assert load_rgb(path, max_pixels=5000).size == (40, 30)
    assert load_rgb(path, max_pixels=None).size == (40, 30)


def test_too_large_image_stops_setup_even_when_not_strict(tmp_path: Path) -> None:
    root = _good_tree(tmp_path / "data")
    Image.new("RGB", (64, 64)).save(root / "cat" / "huge.png")
    dm = ImageFolderDataModule(str(root), preprocessing=PRE, max_image_pixels=64 * 48)
    with pytest.raises(ImageTooLargeError, match=r"huge\.png.*64 x 64"):
        dm.setup("fit")
    with pytest.raises(UserError, match="max_image_pixels"):
        ImageFolderDataModule(str(root), max_image_pixels=0)
