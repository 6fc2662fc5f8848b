"""A real domain shift from installed packages: printed digits (source) -> handwritten digits (target).

Target: the 1,797 handwritten digits of scikit-learn's ``load_digits`` (UCI optdigits: 32 x 32 scanned
bitmaps reduced to 8 x 8 by counting the ink pixels of each 4 x 4 block, values 0-16), read from the data
file the package ships, without importing it.

Source: the digits 0-9 typeset in the TrueType fonts matplotlib ships (DejaVu, STIX, Computer Modern),
each drawn several times with a random size, slant, stroke width and position into a 32 x 32 bitmap and
reduced the same way. Both domains therefore have the same pixel format and the same classes; what differs
is what the digits look like: typefaces against handwriting by 43 people. A model trained on the printed
digits sees the handwritten ones only as unlabelled target images.

Both are written as ``<root>/<digit>/<index>.png`` class-folder trees (8 x 8 grayscale PNGs).
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from transferlab.data.domain_demos import write_class_tree
from transferlab.errors import UserError

DIGIT_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

FONT_FILES: tuple[str, ...] = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf",
)  # fmt: skip
"""matplotlib's fonts whose code points 0-9 hold ordinary digits (the symbol fonts do not)."""

PRINTED_PER_FONT = 12
"""Drawings of each digit in each font (21 fonts: 252 images per class)."""

_FORMAT = 1  # bump when the written images change, so old folders are not silently reused
_BITMAP = 32  # side of the bitmap a digit is drawn into, as in UCI optdigits
_BLOCK = 4  # 32 / 4 = 8 x 8 ink counts in 0..16
_INSTALL_HINT = "Install the project's demo extra (`make env`), which brings scikit-learn and matplotlib"


# ---------------------------------------------------------------------------------------------- data
def _package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"The digits_shift demo needs the Python package {package}. {_INSTALL_HINT}.")
    return Path(next(iter(spec.submodule_search_locations)))


def load_handwritten_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits: ``(1797, 8, 8)`` uint8 ink counts in 0-16, and labels 0-9.

    Raises:
        UserError: scikit-learn or its data file is missing, or the file is not what this code expects.
    """
    path = _package_folder("sklearn") / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise UserError(f"scikit-learn is installed but {path} is missing. {_INSTALL_HINT}.")
    with gzip.open(path, "rt", encoding="ascii") as handle:
        rows = np.array([[int(v) for v in row] for row in csv.reader(handle) if row], dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != 65 or rows[:, :64].max() > 16 or rows[:, 64].max() > 9:
        raise UserError(f"Unexpected content in {path} (shape {rows.shape}). {_INSTALL_HINT}.")
    return rows[:, :64].reshape(-1, 8, 8).astype(np.uint8), rows[:, 64]


def font_paths() -> list[Path]:
    """The TrueType files of :data:`FONT_FILES` inside the installed matplotlib.

    Raises:
        UserError: matplotlib or one of the fonts is missing.
    """
    folder = _package_folder("matplotlib") / "mpl-data" / "fonts" / "ttf"
    paths = [folder / name for name in FONT_FILES]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"matplotlib's fonts {missing} are missing from {folder}. {_INSTALL_HINT}.")
    return paths


def render_printed_digits(per_font: int = PRINTED_PER_FONT, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Typeset digits reduced like optdigits: ``(n, 8, 8)`` uint8 ink counts in 0-16, and labels.

    Each drawing picks a size (the digit's height fills 75-100% of the 32 px bitmap, as the scanned
    digits do), a slant of -12 to 12 degrees, a stroke widened by 0-2 px, and a shift of up to 2 px.

    Args:
        per_font: drawings of each digit per font.
        seed: seed of the random variations.
    """
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for path in font_paths():
        font = ImageFont.truetype(str(path), 96)
        for digit in range(10):
            glyph = _glyph(font, str(digit))
            for _ in range(per_font):
                images.append(_reduce(_draw_variant(glyph, rng)))
                labels.append(digit)
    return np.stack(images), np.array(labels, dtype=np.int64)


def _glyph(font: ImageFont.FreeTypeFont, text: str) -> Image.Image:
    """The digit in white on black, cropped to its ink."""
    canvas = Image.new("L", (160, 160), 0)
    ImageDraw.Draw(canvas).text((80, 80), text, fill=255, font=font, anchor="mm")
    box = canvas.getbbox()
    assert box is not None, text
    return canvas.crop(box)


def _draw_variant(glyph: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """A 32 x 32 binary bitmap of one random variation of ``glyph``."""
    slanted = glyph.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR, expand=True)
    slanted = slanted.crop(slanted.getbbox())
    height = _BITMAP * float(rng.uniform(0.75, 1.0))
    scale = min(height / slanted.height, _BITMAP / slanted.width)
    size = (max(1, round(slanted.width * scale)), max(1, round(slanted.height * scale)))
    small = slanted.resize(size, Image.Resampling.LANCZOS)
    widen = int(rng.integers(0, 3))
    if widen:
        small = small.filter(ImageFilter.MaxFilter(2 * widen + 1))
    bitmap = Image.new("L", (_BITMAP + 8, _BITMAP + 8), 0)
    x = (bitmap.width - small.width) // 2 + int(rng.integers(-2, 3))
    y = (bitmap.height - small.height) // 2 + int(rng.integers(-2, 3))
    bitmap.paste(small, (x, y))
    inner = np.asarray(bitmap)[4:-4, 4:-4]
    return inner > 127


def _reduce(bitmap: np.ndarray) -> np.ndarray:
    """Ink pixels per 4 x 4 block of a 32 x 32 bitmap: 8 x 8 counts in 0..16 (optdigits' reduction)."""
    blocks = bitmap.reshape(8, _BLOCK, 8, _BLOCK)
    return blocks.sum(axis=(1, 3)).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- writing
def write_digits_shift(
    source_root: str | os.PathLike[str], target_root: str | os.PathLike[str], seed: int = 0
) -> tuple[Path, Path]:
    """Write printed digits to ``source_root`` and the handwritten ones to ``target_root``.

    Both as ``<root>/<digit>/<index>.png``: 8 x 8 grayscale, ink 0-16 scaled to 0-255.

    Returns:
        Both roots, absolute.
    """
    source = write_class_tree(
        source_root,
        DIGIT_CLASSES,
        lambda: _as_pixels(render_printed_digits(PRINTED_PER_FONT, seed)),
        {"dataset": "digits_shift/printed", "format": _FORMAT, "fonts": list(FONT_FILES),
         "per_font": PRINTED_PER_FONT, "seed": seed},
    )  # fmt: skip
    target = write_class_tree(
        target_root,
        DIGIT_CLASSES,
        lambda: _as_pixels(load_handwritten_digits()),
        {"dataset": "digits_shift/handwritten", "format": _FORMAT, "source": "sklearn digits"},
    )
    return source, target


def _as_pixels(ink_and_labels: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ink, labels = ink_and_labels
    return (ink.astype(np.uint16) * 255 // 16).astype(np.uint8), labels
