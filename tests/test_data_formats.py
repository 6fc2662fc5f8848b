"""Issue 3, point 1: what real class folders hold becomes RGB tensors of the configured size, unaided."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.data import ImageFolderDataModule, is_image_file, list_samples, load_rgb

PRE = {"input_size": 16, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "crop_pct": 0.875}
RED = (255, 0, 0)


def write_png16_rgb(path: Path, array: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG (what scanners and RAW converters write), built chunk by chunk."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)  # filter type 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # bit depth 16, colour type RGB
    signature = b"\x89PNG\r\n\x1a\n"
    path.write_bytes(
        signature + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def _rotated_jpeg(path: Path) -> Path:
    # Stored 40 wide x 20 high, left half red; EXIF orientation 6 shows the stored left edge at the top.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif, quality=95)
    return path


def _messy_class_folder(folder: Path) -> dict[str, Path]:
    """One file of every kind a real class folder holds; returns the image files by a short name."""
    folder.mkdir(parents=True, exist_ok=True)
    red = Image.new("RGB", (24, 20), RED)
    files = {
        "upper_jpg": folder / "a.JPG",
        "mixed_jpeg": folder / "b.Jpeg",
        "upper_png": folder / "c.PNG",
        "webp": folder / "d.webp",
        "bmp": folder / "e.bmp",
        "tif": folder / "f.tif",
    }
    for path in files.values():
        red.save(path, quality=95)  # quality only matters to the lossy formats
    Image.new("L", (24, 20), 80).save(folder / "gray.png")
    red.convert("P").save(folder / "palette.gif")
    rgba = Image.new("RGBA", (24, 20), (0, 255, 0, 0))  # transparent green: must not show as green
    rgba.save(folder / "rgba.png")
    Image.new("CMYK", (24, 20), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(np.full((20, 24), 65535, dtype=np.uint16)).save(folder / "gray16.png")
    write_png16_rgb(folder / "rgb16.png", np.full((20, 24, 3), (65535, 0, 0), dtype=np.uint16))
    _rotated_jpeg(folder / "rotated.jpg")
    Image.new("RGB", (5, 3), RED).save(folder / "tiny.png")  # smaller than the 16 px crop
    files.update(
        gray=folder / "gray.png",
        palette=folder / "palette.gif",
        rgba=folder / "rgba.png",
        cmyk=folder / "cmyk.jpg",
        gray16=folder / "gray16.png",
        rgb16=folder / "rgb16.png",
        rotated=folder / "rotated.jpg",
        tiny=folder / "tiny.png",
    )
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + bytes(64))
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(64))
    (folder / "notes.txt").write_text("shot on holiday")
    return files


def test_non_image_files_are_ignored_whatever_the_extension_case() -> None:
    for name in ("a.JPG", "b.Jpeg", "c.PNG", "d.webp", "e.BMP", "f.tif", "g.TIFF", "h.WebP"):
        assert is_image_file(name), name
    for name in (".DS_Store", "Thumbs.db", "notes.txt", "._a.jpg", "desktop.ini", "photo.jpg.part"):
        assert not is_image_file(name), name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cmyk", RED),
        ("rgb16", RED),
        ("gray16", (255, 255, 255)),
        ("rgba", (255, 255, 255)),
        ("gray", (80, 80, 80)),
        ("palette", RED),
        ("webp", RED),
        ("tif", RED),
        ("bmp", RED),
    ],
)
def test_special_modes_give_the_right_colour(
    tmp_path: Path, name: str, expected: tuple[int, int, int]
) -> None:
    image = load_rgb(_messy_class_folder(tmp_path / "c")[name])
    assert image.mode == "RGB"
    pixel = np.asarray(image, dtype=int)[image.height // 2, image.width // 2]
    assert np.abs(pixel - expected).max() <= 8, (name, pixel)  # JPEG and WebP are lossy


def test_messy_folder_gives_tensors_of_the_configured_size(tmp_path: Path) -> None:
    root = tmp_path / "data"
    files = _messy_class_folder(root / "train" / "messy")
    for split in ("train", "val", "test"):
        for name in ("messy", "plain"):
            if (split, name) != ("train", "messy"):
                (root / split / name).mkdir(parents=True)
                Image.new("RGB", (20, 20), (0, 0, 255)).save(root / split / name / "x.png")

    assert {Path(p).name for p, _ in list_samples(root / "train", ["messy"])} == {
        p.name for p in files.values()
    }
    dm = ImageFolderDataModule(str(root), preprocessing=PRE, augmentation="none", batch_size=32)
    dm.setup("fit")
    assert dm.train_set is not None
    by_name = {Path(p).name: i for i, (p, _) in enumerate(dm.train_set.samples)}
    assert len(by_name) == len(files) + 1  # the messy files and train/plain/x.png, nothing else
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (len(by_name), 3, 16, 16) and images.dtype == torch.float32
    assert labels.tolist().count(0) == len(files)

    rotated = dm.train_set[by_name["rotated.jpg"]][0]
    top, bottom = rotated[:, 1, 8], rotated[:, 14, 8]
    assert top[0] > 0.8 and top[2] < 0.2  # red at the top: the EXIF rotation was applied
    assert bottom[2] > 0.8 and bottom[0] < 0.2
    tiny = dm.train_set[by_name["tiny.png"]][0]
    assert torch.allclose(tiny, torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 16, 16), atol=1e-6)
    rgba = dm.train_set[by_name["rgba.png"]][0]
    assert torch.allclose(rgba, torch.ones(3, 16, 16))  # composited on white, not the hidden green
