"""Reading image files: which files count as images, and opening any of them as an upright RGB image."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transferlab.errors import UserError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
)
"""Lower-case file extensions treated as images (matching is case-insensitive)."""

_WHITE = (255, 255, 255)
# Modes whose alpha channel must be composited away; palette and plain L/RGB images may carry a
# transparency key in ``info["transparency"]`` instead, handled separately.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an image file transferlab reads.

    Hidden files (``.DS_Store``, macOS ``._photo.jpg`` resource forks) are never images, whatever their
    extension. The check looks at the name only; it does not open the file.

    Args:
        path: a file path or name.

    Returns:
        True for a non-hidden name ending in one of :data:`IMAGE_EXTENSIONS`, in any letter case.
    """
    name = os.path.basename(os.fspath(path))
    if name.startswith("."):
        return False
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as an upright 8-bit RGB image.

    The EXIF orientation is applied, so photos taken with a rotated camera come out the way they are
    displayed. Transparent images (RGBA, LA, palette or grayscale with a transparency key) are composited
    onto a white background; converting them directly would expose whatever colour the transparent
    pixels happen to store. 16-bit grayscale is scaled down to 8 bits rather than clipped. Animated
    images give their first frame.

    Args:
        path: the image file.

    Returns:
        A loaded (file closed) PIL image in mode ``"RGB"``.

    Raises:
        UserError: the file is missing, unreadable, truncated or not an image.
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as image:
            image.load()
            image = _apply_exif_orientation(image)
            return _to_rgb(image)
    except FileNotFoundError:
        raise UserError(f"Image not found: {path}. Check that the file still exists.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        # PIL reports truncated and corrupt files as OSError/SyntaxError/ValueError depending on format.
        raise UserError(
            f"Cannot read image {path}: {err}. The file is corrupt or not an image; delete or replace it."
        ) from None


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except (ValueError, TypeError, KeyError, OSError, SyntaxError):
        # A malformed EXIF block should not make an otherwise good image unusable: keep it as stored.
        return image.copy()


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        image = _wide_to_8bit(image)
        mode = image.mode
    if mode in _ALPHA_MODES or (mode in {"P", "L", "RGB"} and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _wide_to_8bit(image: Image.Image) -> Image.Image:
    # Pillow's convert("RGB") clips 16/32-bit values at 255, turning a 16-bit scan almost all white.
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.max(initial=0) > 255):
        values = values / 257.0
    elif image.mode == "F" and values.max(initial=0) <= 1.0:
        values = values * 255.0  # float images are usually in [0, 1]
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))  # 2-D uint8: mode L
