"""Reading image files: which files count as images, and opening any of them as an upright RGB image."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transferlab.errors import UserError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
)
"""Lower-case file extensions treated as images (matching is case-insensitive)."""

DEFAULT_MAX_IMAGE_PIXELS: int = 89_478_485
"""Pillow's own default decompression-bomb limit (about 89 megapixels, a 9500 x 9500 image)."""

_WHITE = (255, 255, 255)
# Modes whose alpha channel must be composited away; palette and plain L/RGB images may carry a
# transparency key in ``info["transparency"]`` instead, handled separately.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class UnreadableImageError(UserError):
    """An image file that is missing, truncated, corrupt or not an image at all.

    Args:
        path: the file.
        reason: what is wrong with it, without the path.

    Attributes:
        path: the file.
        reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"Cannot read image {path}: {reason}. The file is corrupt or not an image; delete or replace it."
        )


class ImageTooLargeError(UserError):
    """An image with more pixels than the configured limit (``data.max_image_pixels``)."""


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an image file transferlab reads.

    Hidden files (``.DS_Store``, macOS ``._photo.jpg`` resource forks) are never images, whatever their
    extension; nor are other files without an image extension (``Thumbs.db``, ``notes.txt``). The check
    looks at the name only; it does not open the file.

    Args:
        path: a file path or name.

    Returns:
        True for a non-hidden name ending in one of :data:`IMAGE_EXTENSIONS`, in any letter case.
    """
    name = os.path.basename(os.fspath(path))
    if name.startswith("."):
        return False
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@contextmanager
def open_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> Iterator[Image.Image]:
    """Open an image lazily (header only), refusing images with more than ``max_pixels`` pixels.

    Args:
        path: the image file.
        max_pixels: largest accepted ``width * height``; None accepts any size.

    Yields:
        The opened, not yet decoded, PIL image; the file is closed on exit.

    Raises:
        UnreadableImageError: the file is missing or not an image Pillow can open.
        ImageTooLargeError: the image is larger than ``max_pixels``.
    """
    path = os.fspath(path)
    _allow_pixels(max_pixels)
    try:
        # Pillow warns, then fails, above its own limit; the limit is checked below with a clear message.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise _too_large(path, str(err), max_pixels) from None
    except FileNotFoundError:
        raise UnreadableImageError(path, "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UnreadableImageError(path, str(err)) from None
    with image:
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise _too_large(path, f"{width} x {height} = {width * height:,} pixels", max_pixels)
        yield image


def load_rgb(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    min_size: int | None = None,
) -> Image.Image:
    """Open an image file as an upright 8-bit RGB image.

    The EXIF orientation is applied, so photos taken with a rotated camera come out the way they are
    displayed. Transparent images (RGBA, LA, palette or grayscale with a transparency key) are composited
    onto a white background; converting them directly would expose whatever colour the transparent
    pixels happen to store. 16-bit grayscale is scaled down to 8 bits rather than clipped. CMYK is
    converted by Pillow. Animated images give their first frame.

    Args:
        path: the image file.
        max_pixels: largest accepted ``width * height`` of the stored image; None accepts any size.
        min_size: the shortest side the caller's transforms need, or None for full resolution. A JPEG at
            least twice as large on both sides is then decoded at a reduced scale (1/2, 1/4 or 1/8, done
            by the JPEG decoder itself, several times faster than decoding everything and resizing
            afterwards), never below ``min_size`` on either side. Smaller JPEGs and other formats are
            decoded as stored, so their pixels do not change.

    Returns:
        A loaded (file closed) PIL image in mode ``"RGB"``.

    Raises:
        UnreadableImageError: the file is missing, unreadable, truncated or not an image.
        ImageTooLargeError: the image is larger than ``max_pixels``.
    """
    with open_image(path, max_pixels=max_pixels) as image:
        try:
            if min_size is not None and image.format == "JPEG":
                # A square request keeps both sides >= min_size, whichever way EXIF later rotates them.
                image.draft("RGB", (min_size, min_size))
            image.load()
            image = _apply_exif_orientation(image)
            return _to_rgb(image)
        except (OSError, SyntaxError, ValueError) as err:
            # PIL reports truncated and corrupt files as OSError/SyntaxError/ValueError depending on format.
            raise UnreadableImageError(os.fspath(path), str(err)) from None


def _allow_pixels(max_pixels: int | None) -> None:
    # Pillow checks its own process-wide limit inside Image.open, before open_image can. That limit is
    # only ever raised here, to what the user asked for, so that Pillow does not refuse images which
    # data.max_image_pixels allows; a lower limit is enforced by open_image and leaves Pillow alone.
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and (max_pixels is None or max_pixels > current):
        Image.MAX_IMAGE_PIXELS = max_pixels


def _too_large(path: str, size: str, max_pixels: int | None) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"Image {path} is too large ({size}): data.max_image_pixels={max_pixels} guards against "
        "decompression bombs (small files that expand to gigabytes of memory). If you trust the file, "
        "raise the limit, e.g. data.max_image_pixels=300000000, or set data.max_image_pixels=null to "
        "turn the check off; otherwise shrink or remove the image."
    )


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
