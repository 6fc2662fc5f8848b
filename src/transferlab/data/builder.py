"""Building train/val/test datasets from an image-folder tree: scan, split (or fold), count and record.

:func:`build_imagefolder_splits` is the one place a data folder becomes datasets; data modules call it
once per data root (a two-domain module calls it twice). It reads files but writes nothing: the records
(``split.json``, ``folds.json``) are written by :meth:`ImageFolderSplits.write_records`, explicitly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferlab.data.class_counts import count_per_class
from transferlab.data.dataset import ImageSampleDataset
from transferlab.data.folders import SPLITS, FolderLayout, find_layout, list_samples
from transferlab.data.folds import check_fold_args, fold_split, stratified_folds, write_folds
from transferlab.data.images import DEFAULT_MAX_IMAGE_PIXELS
from transferlab.data.scan import report_unreadable, scan_samples
from transferlab.data.split_record import make_split_record
from transferlab.data.splits import Sample, stratified_split, write_split
from transferlab.errors import UserError

SPLIT_FILE = "split.json"
FOLDS_FILE = "folds.json"


@dataclass
class ImageFolderSplits:
    """The datasets of one data root, with what is known about them.

    Attributes:
        train: the training images (no transform yet: the data module sets it).
        val: the validation images.
        test: the test images.
        class_names: names by class index (sorted class folder names).
        counts: per split (``"train"``, ``"val"``, ``"test"``), the number of images of each class.
        record: JSON-able settings and file-list hashes of the split
            (:func:`~transferlab.data.split_record.make_split_record`); checkpoints carry it.
        layout: how the root is organised.
        folds: the k folds of the training pool when cross-validating, else None.
        fold: the fold validated on (meaningful with ``folds``).
        split_seed: the seed the split or folds were made with.
    """

    train: ImageSampleDataset
    val: ImageSampleDataset
    test: ImageSampleDataset
    class_names: list[str]
    counts: dict[str, list[int]]
    record: dict[str, Any]
    layout: FolderLayout
    folds: list[list[Sample]] | None = None
    fold: int = 0
    split_seed: int = 0

    @property
    def root(self) -> Path:
        """The data root, absolute."""
        return self.layout.root

    def dataset(self, split: str) -> ImageSampleDataset:
        """The dataset of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        return getattr(self, split)

    def write_records(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Write the split to ``folder/split.json`` and the folds to ``folder/folds.json``, atomically.

        A split made here (class folders, or folds) is recorded; a pre-split tree used as it is needs no
        record (its folders are the record), so nothing is written for it.

        Returns:
            The files written.
        """
        folder = Path(folder)
        written: list[Path] = []
        if self.folds is not None:
            written.append(
                write_folds(
                    self.folds,
                    folder / FOLDS_FILE,
                    fold=self.fold,
                    seed=self.split_seed,
                    root=self.root,
                    class_names=self.class_names,
                    test=self.test.samples,
                )
            )
        if self.folds is not None or not self.layout.presplit:
            samples = {split: self.dataset(split).samples for split in SPLITS}
            written.append(
                write_split(samples, folder / SPLIT_FILE, root=self.root, class_names=self.class_names)
            )
        return written


def build_imagefolder_splits(
    root: str | os.PathLike[str],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    split_seed: int = 0,
    num_folds: int | None = None,
    fold: int = 0,
    strict: bool = False,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    report: bool = True,
) -> ImageFolderSplits:
    """Scan an image-folder tree and build its train/val/test datasets.

    ``root/{train,val,test}/<class>/*`` is used as it is; ``root/<class>/*`` is split per class by
    :func:`~transferlab.data.splits.stratified_split` (``val_fraction``, ``test_fraction``,
    ``split_seed``). With ``num_folds=K``, validation is fold ``fold`` of K stratified folds
    (:func:`~transferlab.data.folds.stratified_folds`, seeded by ``split_seed``) of the training pool:
    train + val of a pre-split tree, or what is left of a class-folder tree after the test share is held
    out (``val_fraction`` is then unused); the test split is the same for every fold.

    Every image file is checked cheaply first (:mod:`transferlab.data.scan`): unreadable files are skipped
    (reported once when ``report``) or are an error with ``strict``; an image above ``max_image_pixels``
    is always an error.

    Args:
        root: the data folder.
        val_fraction: share of each class used for validation when ``root`` is not pre-split.
        test_fraction: share of each class used for test when ``root`` is not pre-split.
        split_seed: seed of the split and of the folds.
        num_folds: number of cross-validation folds K (at least 2), or None for a plain split.
        fold: the fold used for validation when ``num_folds`` is set, in ``[0, K)``.
        strict: make unreadable image files an error instead of skipping them.
        max_image_pixels: largest accepted ``width * height`` of an image; None turns the check off.
        report: log the warning about skipped unreadable files (e.g. only on the first of several
            processes doing the same scan).

    Returns:
        The datasets (without transforms), class names, per-class counts and the split's record.

    Raises:
        UserError: the tree is invalid (missing root, unequal class folders, a single class...); images
            are unreadable with ``strict`` or too large; a class has no usable images, or too few for the
            split or the folds; a setting is out of range.
    """
    check_fold_args(num_folds, fold)
    check_max_image_pixels(max_image_pixels)
    layout = find_layout(root)
    names = list(layout.class_names)
    usable = _usable_samples(layout, strict=strict, max_image_pixels=max_image_pixels, report=report)
    folds: list[list[Sample]] | None = None
    if num_folds is not None:
        if layout.presplit:
            pool, test = sorted(usable["train"] + usable["val"]), usable["test"]
        else:
            held_out = stratified_split(usable["all"], 0.0, test_fraction, split_seed, class_names=names)
            pool, test = held_out["train"], held_out["test"]
        folds = stratified_folds(pool, num_folds, split_seed, class_names=names)
        train, val = fold_split(folds, fold)
        samples = {"train": train, "val": val, "test": test}
    elif layout.presplit:
        samples = usable
    else:
        samples = stratified_split(usable["all"], val_fraction, test_fraction, split_seed, class_names=names)
    settings = {
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "split_seed": split_seed,
        "num_folds": num_folds,
        "fold": fold,
        "max_image_pixels": max_image_pixels,
    }
    record = make_split_record(
        root=layout.root,
        presplit=layout.presplit,
        class_names=names,
        settings=settings,
        pool=[sample for part in usable.values() for sample in part],
        splits=samples,
    )
    datasets = {
        split: ImageSampleDataset(samples[split], names, max_pixels=max_image_pixels) for split in SPLITS
    }
    return ImageFolderSplits(
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        class_names=names,
        counts={split: count_per_class(samples[split], len(names)) for split in SPLITS},
        record=record,
        layout=layout,
        folds=folds,
        fold=fold,
        split_seed=split_seed,
    )


def check_max_image_pixels(max_image_pixels: int | None) -> None:
    """Check ``data.max_image_pixels``.

    Raises:
        UserError: it is neither None nor a positive whole number.
    """
    if max_image_pixels is not None and (
        isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, int) or max_image_pixels < 1
    ):
        raise UserError(
            f"data.max_image_pixels must be a positive whole number or null, got {max_image_pixels!r}."
        )


def _usable_samples(
    layout: FolderLayout, *, strict: bool, max_image_pixels: int | None, report: bool
) -> dict[str, list[Sample]]:
    """The readable samples of each split folder (``"all"`` for a class-folder tree)."""
    listed = {key: list_samples(folder, layout.class_names) for key, folder in layout.split_dirs().items()}
    scanned = scan_samples([s for samples in listed.values() for s in samples], max_pixels=max_image_pixels)
    if strict or report:
        report_unreadable(scanned, strict=strict)
    bad = {path for path, _ in scanned.unreadable}
    usable = {key: [s for s in samples if s[0] not in bad] for key, samples in listed.items()}
    for key, samples in usable.items():
        for index, count in enumerate(count_per_class(samples, len(layout.class_names))):
            if count == 0:
                folder = layout.split_dirs()[key] / layout.class_names[index]
                raise UserError(
                    f"Class folder {folder} has no usable images: every image file in it is unreadable "
                    f"({scanned.describe()}). Replace them with readable images, or remove the folder."
                )
    return usable
