"""The record of a data split that travels inside checkpoints: its settings and a hash of its file lists.

A record lets ``transferlab-eval`` rebuild exactly the test split a model was trained with, and notice
when the data folder changed since (files added, removed or renamed), without storing the file lists
themselves in every checkpoint. Paths are hashed relative to the data root, so a moved folder still
matches.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transferlab.data.class_counts import count_per_class
from transferlab.data.folders import SPLITS

Sample = tuple[str, int]

RECORD_VERSION = 1

SPLIT_SETTINGS: tuple[str, ...] = (
    "val_fraction",
    "test_fraction",
    "split_seed",
    "num_folds",
    "fold",
    "max_image_pixels",
)
"""The settings that decide which images go to which split (the ``data.*`` keys of the same names)."""


def samples_sha256(samples: Sequence[Sample], root: str | os.PathLike[str]) -> str:
    """SHA-256 of the sorted ``relative/path<TAB>class_index`` lines of ``samples``, relative to ``root``."""
    base = Path(root).absolute()
    lines = sorted(f"{Path(os.path.relpath(Path(p).absolute(), base)).as_posix()}\t{y}" for p, y in samples)
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def make_split_record(
    *,
    root: str | os.PathLike[str],
    presplit: bool,
    class_names: Sequence[str],
    settings: Mapping[str, Any],
    pool: Sequence[Sample],
    splits: Mapping[str, Sequence[Sample]],
) -> dict[str, Any]:
    """The JSON-able record of a split.

    Args:
        root: the data root.
        presplit: whether the root holds ``train/``, ``val/`` and ``test/`` folders.
        class_names: names by class index.
        settings: the values of :data:`SPLIT_SETTINGS` the split was made with.
        pool: every usable image the split was made from.
        splits: the samples of ``train``, ``val`` and ``test``.

    Returns:
        ``{"version", "root", "layout", "class_names", "settings", "files": {count, class_counts, sha256},
        "splits": {split: {count, class_counts, sha256}}}``.
    """
    num_classes = len(class_names)

    def summary(samples: Sequence[Sample]) -> dict[str, Any]:
        return {
            "count": len(samples),
            "class_counts": count_per_class(samples, num_classes),
            "sha256": samples_sha256(samples, root),
        }

    return {
        "version": RECORD_VERSION,
        "root": str(Path(root).absolute()),
        "layout": "presplit" if presplit else "class_folders",
        "class_names": list(class_names),
        "settings": {key: settings[key] for key in SPLIT_SETTINGS},
        "files": summary(pool),
        "splits": {split: summary(splits[split]) for split in SPLITS},
    }


def is_split_record(value: Any) -> bool:
    """Whether ``value`` looks like a record made by :func:`make_split_record` (of a version this reads)."""
    return (
        isinstance(value, Mapping)
        and value.get("version") == RECORD_VERSION
        and isinstance(value.get("settings"), Mapping)
        and all(key in value["settings"] for key in SPLIT_SETTINGS)
        and isinstance(value.get("splits"), Mapping)
        and isinstance(value.get("files"), Mapping)
    )


def describe_difference(recorded: Mapping[str, Any], current: Mapping[str, Any], split: str) -> str | None:
    """What differs between two records for ``split``, in words; None when that split is the same.

    The split is the same when its file list hashes alike (with the same class names). Otherwise the
    description says how the folder changed: images added or removed (per class), or the same number of
    images under other names.
    """
    if list(recorded["class_names"]) != list(current["class_names"]):
        now, then = list(current["class_names"]), list(recorded["class_names"])
        return f"its class folders are {now}, the run had {then}"
    if recorded["splits"][split]["sha256"] == current["splits"][split]["sha256"]:
        return None
    if recorded.get("layout") != current.get("layout"):
        return f"it is organised as {current.get('layout')}, the run's was {recorded.get('layout')}"
    before, now = recorded["files"], current["files"]
    if before["sha256"] == now["sha256"]:
        settings = [
            f"data.{key}={current['settings'].get(key)} (was {value})"
            for key, value in recorded["settings"].items()
            if current["settings"].get(key) != value
        ]
        if settings:
            return f"the same images split with other settings: {', '.join(settings)}"
        return "the same images and settings split differently (made by another transferlab version)"
    names = current["class_names"]
    changes = [
        f"{name} {new} (was {old})"
        for name, old, new in zip(names, before["class_counts"], now["class_counts"], strict=True)
        if old != new
    ]
    delta = now["count"] - before["count"]
    if delta > 0:
        what = f"{delta} image{'s' if delta != 1 else ''} added"
    elif delta < 0:
        what = f"{-delta} image{'s' if delta != -1 else ''} removed"
    else:
        what = "images renamed, replaced, added and removed in equal numbers"
    per_class = f" (per class: {', '.join(changes)})" if changes else ""
    return f"{what} since training: {now['count']} usable images now, {before['count']} then{per_class}"
