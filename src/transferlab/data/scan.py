"""A cheap integrity check of every image before training, so bad files surface at setup, not mid-epoch.

Each file is opened (header only), its size checked against the pixel limit and ``verify()``-ed; JPEGs,
whose ``verify()`` checks nothing, also have their end-of-image marker looked for, and only a file
without one is decoded (at 1/8 scale) to tell a truncated photo from one with trailing data. That costs
well under a millisecond per file, against 10-40 ms to decode a photo; corruption that only full decoding
finds is left to :class:`~transferlab.data.dataset.ImageSampleDataset`, which skips such files at load
time. Nothing is cached: a cache could go stale when files change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from transferlab.data.images import DEFAULT_MAX_IMAGE_PIXELS, UnreadableImageError, open_image
from transferlab.errors import UserError

log = logging.getLogger(__name__)

Sample = tuple[str, int]

SHOWN_PATHS = 5
"""How many unreadable paths a report names."""

_JPEG_END = b"\xff\xd9"
_TAIL_BYTES = 32  # some encoders pad the file after the end-of-image marker


@dataclass(frozen=True)
class ScanReport:
    """The outcome of :func:`scan_samples`.

    Attributes:
        usable: the samples whose files passed, in input order.
        unreadable: ``(path, reason)`` of every file that failed, in input order.
    """

    usable: list[Sample]
    unreadable: list[tuple[str, str]]

    def describe(self, limit: int = SHOWN_PATHS) -> str:
        """Count and the first ``limit`` unreadable paths with their reasons, for a message."""
        shown = "; ".join(f"{path} ({reason})" for path, reason in self.unreadable[:limit])
        more = f"; and {len(self.unreadable) - limit} more" if len(self.unreadable) > limit else ""
        total = len(self.usable) + len(self.unreadable)
        return f"{len(self.unreadable)} of {total} images cannot be read: {shown}{more}"


def check_image(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Raise if ``path`` is not a readable image within the pixel limit (see the module docstring).

    Args:
        path: the image file.
        max_pixels: largest accepted ``width * height``; None accepts any size.

    Raises:
        UnreadableImageError: the file is missing, not an image, fails ``verify()`` or is a truncated JPEG.
        ImageTooLargeError: the image is larger than ``max_pixels``.
    """
    with open_image(path, max_pixels=max_pixels) as image:
        is_jpeg = image.format == "JPEG"
        try:
            image.verify()
        except Exception as err:  # verify() raises whatever the format's parser raises
            raise UnreadableImageError(os.fspath(path), f"{type(err).__name__}: {err}") from None
    if is_jpeg and not _ends_with_jpeg_marker(path):
        _decode_small(path, max_pixels)


def scan_samples(
    samples: Sequence[Sample], *, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> ScanReport:
    """Check every sample's file with :func:`check_image`.

    Args:
        samples: ``(path, class_index)`` pairs.
        max_pixels: largest accepted ``width * height``; None accepts any size.

    Returns:
        The usable samples and the unreadable files.

    Raises:
        ImageTooLargeError: an image is larger than ``max_pixels`` (never skipped: a user who trusts such
            files raises the limit, anyone else wants to know).
    """
    usable: list[Sample] = []
    unreadable: list[tuple[str, str]] = []
    for path, label in samples:
        try:
            check_image(path, max_pixels=max_pixels)
        except UnreadableImageError as err:
            unreadable.append((path, err.reason))
        else:
            usable.append((path, label))
    return ScanReport(usable=usable, unreadable=unreadable)


def report_unreadable(report: ScanReport, *, strict: bool) -> None:
    """Say once what the scan found: an error when ``strict``, otherwise one warning.

    Args:
        report: the scan's result.
        strict: turn unreadable files into an error instead of skipping them.

    Raises:
        UserError: ``strict`` and some files are unreadable.
    """
    if not report.unreadable:
        return
    if strict:
        raise UserError(
            f"{report.describe()}. Delete or replace them, or set data.strict=false to skip unreadable "
            "images with a warning."
        )
    log.warning(
        "Skipping unreadable images. %s. Set data.strict=true to make this an error.",
        report.describe(),
    )


def _ends_with_jpeg_marker(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - _TAIL_BYTES))
        return _JPEG_END in f.read()


def _decode_small(path: str | os.PathLike[str], max_pixels: int | None) -> None:
    # Files with data after the JPEG (phone "motion photos", camera trailers) also lack the marker at the
    # end: decoding settles it, and 1/8 scale still reads every byte of the compressed data.
    with open_image(path, max_pixels=max_pixels) as image:
        image.draft("RGB", (1, 1))
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise UnreadableImageError(os.fspath(path), str(err)) from None
