"""Splitting one labelled sample list into train/val/test, and recording the split."""

from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transferlab.data.folders import SPLITS
from transferlab.data.records import relative_samples, write_record
from transferlab.errors import UserError

Sample = tuple[str, int]
"""An image path and its class index."""

SPLIT_FILE_VERSION = 1


def stratified_split(
    samples: Sequence[Sample],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    *,
    class_names: Sequence[str] | None = None,
) -> dict[str, list[Sample]]:
    """Split samples into train/val/test, class by class, so every class keeps its share in each split.

    Per class of ``n`` samples, val gets ``round(n * val_fraction)`` and test ``round(n * test_fraction)``,
    but at least one each when the fraction is above zero; train gets the rest and at least one. The
    result depends only on the set of samples and the seed, not on their order.

    Args:
        samples: ``(path, class_index)`` pairs.
        val_fraction: share of each class for validation, in [0, 1).
        test_fraction: share of each class for test, in [0, 1); ``val_fraction + test_fraction < 1``.
        seed: seed of the shuffle.
        class_names: names by class index, for error messages.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted by path.

    Raises:
        UserError: the fractions are out of range, or a class has too few samples to give each split
            with a nonzero fraction at least one (plus one for train).
    """
    _check_fractions(val_fraction, test_fraction)
    by_class: dict[int, list[str]] = defaultdict(list)
    for path, label in samples:
        by_class[label].append(path)
    rng = random.Random(seed)
    result: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    for label in sorted(by_class):
        paths = sorted(by_class[label])  # sort first: the input order must not change the split
        rng.shuffle(paths)
        n_val, n_test = _split_sizes(len(paths), val_fraction, test_fraction, label, class_names)
        parts = {
            "val": paths[:n_val],
            "test": paths[n_val : n_val + n_test],
            "train": paths[n_val + n_test :],
        }
        for split, part in parts.items():
            result[split].extend((path, label) for path in part)
    for split in SPLITS:
        result[split].sort()
    return result


def write_split(
    split: dict[str, list[Sample]],
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str],
    class_names: Sequence[str],
) -> Path:
    """Write a split as JSON, with image paths relative to ``root``, atomically.

    The file looks like ``{"version": 1, "root": "/abs/root", "class_names": [...],
    "splits": {"train": [["cat/001.jpg", 2], ...], "val": [...], "test": [...]}}``.

    Args:
        split: the split, as returned by :func:`stratified_split`.
        path: the JSON file to write (parent folders are created).
        root: the folder the image paths are made relative to.
        class_names: names by class index.

    Returns:
        The path written.
    """
    document: dict[str, Any] = {
        "version": SPLIT_FILE_VERSION,
        "root": str(Path(root).absolute()),
        "class_names": list(class_names),
        "splits": {name: relative_samples(items, root) for name, items in split.items()},
    }
    return write_record(document, path)


def read_split(
    path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None
) -> tuple[dict[str, list[Sample]], list[str]]:
    """Read a split written by :func:`write_split`.

    Args:
        path: the JSON file.
        root: where the images are now; defaults to the root recorded in the file.

    Returns:
        The split (paths joined to the root) and the class names.

    Raises:
        UserError: the file is missing or is not a split file.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        base = Path(root) if root is not None else Path(document["root"])
        split = {
            name: [(str(base / rel), int(label)) for rel, label in items]
            for name, items in document["splits"].items()
        }
        return split, [str(name) for name in document["class_names"]]
    except FileNotFoundError:
        raise UserError(f"Split file not found: {path}. Check the path.") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path} is not a transferlab split file ({err!r}); it may be damaged.") from None


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1):
            raise UserError(f"data.{name} must be a number in [0, 1), got {value!r}.")
    if val_fraction + test_fraction >= 1:
        raise UserError(
            f"data.val_fraction + data.test_fraction must be below 1 to leave training images, got "
            f"{val_fraction} + {test_fraction}."
        )


def _split_sizes(
    n: int, val_fraction: float, test_fraction: float, label: int, class_names: Sequence[str] | None
) -> tuple[int, int]:
    def share(fraction: float) -> int:
        # Half-up rounding (Python's round() is half-to-even), and at least one for a nonzero fraction.
        return max(1, math.floor(n * fraction + 0.5)) if fraction > 0 else 0

    n_val, n_test = share(val_fraction), share(test_fraction)
    # Large fractions of a small class can round up past n: give images back to train, one at a time
    # from the larger of val/test, before declaring the class too small.
    while n - n_val - n_test < 1 and max(n_val, n_test) > 1:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    if n - n_val - n_test < 1:
        needed = 1 + (val_fraction > 0) + (test_fraction > 0)
        name = class_names[label] if class_names is not None and 0 <= label < len(class_names) else label
        raise UserError(
            f"Class '{name}' has {n} image{'s' if n != 1 else ''}, too few for val_fraction={val_fraction} "
            f"and test_fraction={test_fraction}: each split needs at least one, so at least {needed} "
            "are required. Add images to that class, lower data.val_fraction/data.test_fraction, or "
            "provide ready-made train/, val/ and test/ folders."
        )
    return n_val, n_test
