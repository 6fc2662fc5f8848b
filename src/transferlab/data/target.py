"""The target domain of domain adaptation: its images found and split without looking at any label.

A target tree may be labelled like any image folder (``root/<class>/*`` or
``root/{train,val,test}/<class>/*``) or hold just images (``root/*``). Labels, where they exist, are only
kept for measuring accuracy on the held-out splits; which image goes to which split and the order of the
training images depend on the images alone (their path below the class folder, and their bytes where two
share that path), so the same images filed under other class folders give the same training data.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferlab.data.folders import SPLITS, list_classes, list_samples
from transferlab.data.images import DEFAULT_MAX_IMAGE_PIXELS, is_image_file
from transferlab.data.records import relative_samples, write_record
from transferlab.data.scan import report_unreadable, scan_samples
from transferlab.errors import UserError

log = logging.getLogger(__name__)

UNLABELLED = -1
"""The label of a target image that has none (and of every target training image)."""

TARGET_SPLIT_FILE = "target_split.json"

_LAYOUTS = "class folders (<class>/*), train/, val/ and test/ folders of class folders, or just the images"

Sample = tuple[str, int]


@dataclass(frozen=True)
class TargetSplits:
    """The target images of each split.

    Attributes:
        root: the target root, absolute.
        labelled: whether the images came with class folders.
        splits: ``{"train", "val", "test"}`` to ``(path, label)`` lists; labels are source class indices,
            or :data:`UNLABELLED`. The train list is in a label-independent order.
        unreadable: how many image files were skipped as unreadable.
    """

    root: Path
    labelled: bool
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    unreadable: int = 0

    def counts(self) -> dict[str, int]:
        """Images per split."""
        return {split: len(samples) for split, samples in self.splits.items()}

    def record(self, class_names: Sequence[str]) -> dict[str, Any]:
        """The split as a JSON-able document (paths relative to the root)."""
        return {
            "version": 1,
            "root": str(self.root),
            "labelled": self.labelled,
            "class_names": list(class_names) if self.labelled else None,
            "splits": {split: relative_samples(samples, self.root) for split, samples in self.splits.items()},
        }

    def write(self, path: str | os.PathLike[str], class_names: Sequence[str]) -> Path:
        """Write :meth:`record` to ``path`` atomically."""
        return write_record(self.record(class_names), path)


def find_target_splits(
    root: str | os.PathLike[str],
    source_classes: Sequence[str],
    *,
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
    source_root: str | os.PathLike[str] | None = None,
    strict: bool = False,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    report: bool = True,
) -> TargetSplits:
    """Scan the target tree and split it into train/val/test without using its labels.

    A tree with ``train/``, ``val/`` and ``test/`` is used as split. Otherwise the images are shuffled in
    an order that depends on ``split_seed`` and the images alone, and ``val_fraction`` and
    ``test_fraction`` of them held out (not per class: that would use the labels).

    Args:
        root: the target root.
        source_classes: the source domain's class names (a labelled target must have the same ones).
        val_fraction: share of the images held out for validation (tree without split folders).
        test_fraction: share held out for test.
        split_seed: seed of that split.
        source_root: the source root, for error messages.
        strict: make unreadable image files an error instead of skipping them.
        max_pixels: largest accepted ``width * height``.
        report: log a warning about skipped unreadable files.

    Raises:
        UserError: the root is missing or holds no images, its class folders differ from the source's,
            or too few images are left for training.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "not found"
        raise UserError(
            f"Target data root {what}: {root}. Set data.target_root to a folder of target-domain images: "
            f"{_LAYOUTS}."
        )
    present = [split for split in SPLITS if (root / split).is_dir()]
    if present and len(present) < len(SPLITS):
        missing = [f"{split}/" for split in SPLITS if split not in present]
        raise UserError(
            f"Target data root {root} has {', '.join(s + '/' for s in present)} but no {', '.join(missing)}. "
            "Create the missing split folders, or put the images (or class folders) directly in the root."
        )
    folders = {split: root / split for split in SPLITS} if present else {"all": root}
    listed = {key: _list_folder(folder) for key, folder in folders.items()}
    kinds = {key: labelled for key, (labelled, _, _) in listed.items()}
    if len(set(kinds.values())) > 1:
        raise UserError(
            f"Target data root {root}: some split folders have class folders and some only images "
            f"({', '.join(f'{k}/: ' + ('classes' if v else 'images') for k, v in kinds.items())}). "
            "Use class folders in all of them or in none."
        )
    labelled = next(iter(kinds.values()))
    if labelled:
        for key, (_, classes, _) in listed.items():
            check_same_classes(source_classes, classes, source_root=source_root, target=folders[key])
    index = {name: i for i, name in enumerate(source_classes)}
    samples = {
        key: [(path, index[name] if labelled else UNLABELLED) for path, name in found]
        for key, (_, _, found) in listed.items()
    }
    if sum(len(s) for s in samples.values()) == 0:
        raise UserError(
            f"Target data root {root} holds no image files. Put target-domain images there: {_LAYOUTS}."
        )
    scan = scan_samples([s for group in samples.values() for s in group], max_pixels=max_pixels)
    if strict or report:
        report_unreadable(scan, strict=strict)
    bad = {path for path, _ in scan.unreadable}
    usable = {key: [s for s in group if s[0] not in bad] for key, group in samples.items()}
    if present:
        splits = {split: _label_free_order(usable[split], folders[split], labelled) for split in SPLITS}
    else:
        ordered = _label_free_order(usable["all"], root, labelled)
        splits = _split_by_fractions(ordered, val_fraction, test_fraction, split_seed)
    if not splits["train"]:
        raise UserError(
            f"Target data root {root} leaves no readable image for training ({len(scan.unreadable)} "
            "unreadable). Add target images, or lower data.val_fraction/data.test_fraction."
        )
    return TargetSplits(root=root, labelled=labelled, splits=splits, unreadable=len(scan.unreadable))


def check_same_classes(
    source_classes: Sequence[str],
    target_classes: Sequence[str],
    *,
    source_root: str | os.PathLike[str] | None,
    target: str | os.PathLike[str],
) -> None:
    """Raise one clear error when a labelled target's class folders differ from the source's.

    Raises:
        UserError: the message names the classes only in the source and only in the target.
    """
    only_source = sorted(set(source_classes) - set(target_classes))
    only_target = sorted(set(target_classes) - set(source_classes))
    if not only_source and not only_target:
        return
    parts = []
    if only_source:
        parts.append(f"only in the source{f' ({source_root})' if source_root else ''}: {only_source}")
    if only_target:
        parts.append(f"only in the target ({target}): {only_target}")
    raise UserError(
        f"Source and target class folders differ ({'; '.join(parts)}). Domain adaptation needs the same "
        "classes: rename or remove folders so both have the same class names, or put the target images "
        "directly in data.target_root (without class folders) to use them unlabelled."
    )


def _list_folder(folder: Path) -> tuple[bool, list[str], list[tuple[str, str]]]:
    """Whether ``folder`` has class folders, their names, and ``(path, class name or "")`` of its images."""
    classes = list_classes(folder)
    if classes:
        found = list_samples(folder, classes)
        return True, classes, [(path, classes[label]) for path, label in found]
    images = sorted(
        os.path.join(folder, entry.name)
        for entry in os.scandir(folder)
        if entry.is_file() and is_image_file(entry.name)
    )
    return False, [], [(path, "") for path in images]


def _label_free_order(samples: list[Sample], folder: Path, labelled: bool) -> list[Sample]:
    """Samples sorted by a key that ignores their class folder.

    The key is the path below the class folder; files sharing it (``cat/1.png`` and ``dog/1.png``) are
    told apart by their content, never by their class.
    """

    def below_class(path: str) -> str:
        relative = Path(os.path.relpath(path, folder)).parts
        return "/".join(relative[1:] if labelled else relative)

    names = [below_class(path) for path, _ in samples]
    repeated = {name for name, count in Counter(names).items() if count > 1}
    keys = [
        (name, _digest(path) if name in repeated else "")
        for name, (path, _) in zip(names, samples, strict=True)
    ]
    order = sorted(range(len(samples)), key=lambda i: keys[i])
    return [samples[i] for i in order]


def _digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _split_by_fractions(
    ordered: list[Sample], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Sample]]:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1):
            raise UserError(f"data.{name} must be a number in [0, 1), got {value!r}.")
    n = len(ordered)
    shuffled = list(range(n))
    random.Random(seed).shuffle(shuffled)

    def share(fraction: float) -> int:
        return max(1, math.floor(n * fraction + 0.5)) if fraction > 0 and n > 2 else 0

    n_val, n_test = share(val_fraction), share(test_fraction)
    held_out = {"val": sorted(shuffled[:n_val]), "test": sorted(shuffled[n_val : n_val + n_test])}
    taken = set(held_out["val"]) | set(held_out["test"])
    # Training images keep the label-free order; held-out ones too (their order only affects logging).
    return {
        "train": [ordered[i] for i in range(n) if i not in taken],
        "val": [ordered[i] for i in held_out["val"]],
        "test": [ordered[i] for i in held_out["test"]],
    }
