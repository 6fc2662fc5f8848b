"""The Lightning data module for image-folder datasets (and the demo data written as one)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transferlab.data.base import BaseDataModule
from transferlab.data.builder import ImageFolderSplits, build_imagefolder_splits, check_max_image_pixels
from transferlab.data.demo import check_demo, folder_has_data, prepare_demo
from transferlab.data.folders import FolderLayout, find_layout
from transferlab.data.folds import check_fold_args
from transferlab.data.images import DEFAULT_MAX_IMAGE_PIXELS
from transferlab.data.split_record import SPLIT_SETTINGS
from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing

log = logging.getLogger(__name__)


class ImageFolderDataModule(BaseDataModule):
    """Train/val/test loaders over ``root/{train,val,test}/<class>/*`` or ``root/<class>/*``.

    The datasets come from :func:`~transferlab.data.builder.build_imagefolder_splits` (see there how a
    tree is split or folded, and how unreadable images are handled); the loaders, transforms and class
    count report from :class:`~transferlab.data.base.BaseDataModule`. At setup the split is written to
    ``split_dir/split.json`` (and the folds to ``split_dir/folds.json``) on the first rank, unless the
    tree is pre-split and used as it is.

    The image transforms come from the backbone's preprocessing, given here or later with
    :meth:`set_preprocessing` (the training entry point builds the data module from the config, then hands
    it the backbone's preprocessing).

    Args:
        root: the data folder.
        preprocessing: the backbone's preprocessing; may be set later.
        batch_size: the global batch size, divided evenly between devices.
        num_workers: loader worker processes per device (0 loads in the main process).
        pin_memory: pin batches in page-locked memory (faster copies to a GPU).
        persistent_workers: keep workers alive between epochs (only applies when ``num_workers > 0``).
        augmentation: training augmentation preset, ``"none"``, ``"light"`` or ``"strong"``.
        val_fraction: share of each class used for validation when ``root`` is not pre-split.
        test_fraction: share of each class used for test when ``root`` is not pre-split.
        split_seed: seed of that split (and of the folds).
        split_dir: folder to write ``split.json`` to (the run's output folder), or None.
        demo: ``"animal_mnist"`` to write that demo dataset in :meth:`prepare_data` into ``root``, when
            ``root`` is ``demo_root`` and holds no data yet; or None.
        demo_per_class: images per class and split for the demo, e.g. ``{"train": 100, "val": 30,
            "test": 100}`` (the default).
        strict: make unreadable image files an error instead of skipping them with a warning.
        balanced_sampling: draw training images with probability inversely proportional to their class
            size instead of shuffling.
        num_folds: number of cross-validation folds K (at least 2), or None for a plain split.
        fold: the fold used for validation when ``num_folds`` is set, in ``[0, K)``.
        max_image_pixels: largest accepted ``width * height`` of an image (Pillow's decompression-bomb
            guard, whose default this is); None turns the check off.
        shuffle_seed: seed of the training order (None: drawn at random, the same on every rank).
        demo_root: the only folder the demo is written to (its default place); None = ``root``. Any other
            ``root`` must hold images already: a mistyped path is an error, not a new demo folder.

    Raises:
        UserError: an argument is invalid (checked here, before any training starts).
    """

    def __init__(
        self,
        root: str,
        preprocessing: Preprocessing | Mapping[str, Any] | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        augmentation: str = "light",
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        split_dir: str | None = None,
        demo: str | None = None,
        demo_per_class: Mapping[str, int] | None = None,
        strict: bool = False,
        balanced_sampling: bool = False,
        num_folds: int | None = None,
        fold: int = 0,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        shuffle_seed: int | None = 0,
        demo_root: str | None = None,
    ) -> None:
        if not root:
            raise UserError(
                "data.root is not set: give the folder holding the images (or the demo's target)."
            )
        check_fold_args(num_folds, fold)
        check_max_image_pixels(max_image_pixels)
        super().__init__(
            preprocessing,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            augmentation=augmentation,
            balanced_sampling=balanced_sampling,
            shuffle_seed=shuffle_seed,
            split_dir=split_dir,
        )
        self.root = Path(root).expanduser()
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = int(split_seed)
        self.demo = check_demo(demo)
        self.demo_root = _normalised(demo_root) if demo_root else _normalised(self.root)
        # Plain dict: a Hydra DictConfig must not end up in checkpoints or worker pickles.
        self.demo_per_class = {str(k): v for k, v in demo_per_class.items()} if demo_per_class else None
        self.strict = bool(strict)
        self.num_folds = num_folds
        self.fold = fold
        self.max_image_pixels = max_image_pixels
        self._layout: FolderLayout | None = None

    @property
    def class_names(self) -> list[str]:
        """Sorted class folder names; class ``i`` of the model is ``class_names[i]``.

        Only lists folders, so it is cheap and works right after :meth:`prepare_data`, before ``setup()``.
        """
        if self.splits is not None:
            return list(self.splits.class_names)
        return list(self.layout.class_names)

    @property
    def layout(self) -> FolderLayout:
        """How ``root`` is organised (found on first use, then cached)."""
        if self._layout is None:
            self._layout = find_layout(self.root)
        return self._layout

    def prepare_data(self) -> None:
        """Write the demo into ``root`` if ``demo`` is set, ``root`` is ``demo_root`` and holds no data yet.

        Safe to call repeatedly and from several processes at once.

        Raises:
            UserError: ``demo`` is set but ``root`` is another folder that holds no data (a mistyped
                ``data.root`` must not quietly become a demo run).
        """
        self._layout = None  # the folder may be about to be created
        if self.demo is None:
            return
        if _normalised(self.root) != self.demo_root:
            if not folder_has_data(self.root):
                what = "is empty" if self.root.is_dir() else "not found"
                raise UserError(
                    f"Data root {what}: {self.root.absolute()}. Set data.root to the folder holding your "
                    f"images (root/<class>/ or root/train|val|test/<class>/); the {self.demo} demo is "
                    f"written only to {self.demo_root}, when data.root is left at its default."
                )
            return
        if not prepare_demo(self.demo, self.root, self.demo_per_class):
            log.info("data.root %s already holds data; not writing the %s demo there", self.root, self.demo)

    def restore_split(self, record: Mapping[str, Any]) -> None:
        """Rebuild the split a checkpoint recorded: its settings replace this module's split settings.

        The fractions, seed, folds and pixel limit the run was trained with replace the ones given here
        (those that differ are logged); :meth:`setup` then checks that ``root`` still gives the recorded
        test split.

        Raises:
            UserError: ``record`` is not a split record this version reads, or holds invalid settings.
        """
        super().restore_split(record)
        settings = {key: record["settings"][key] for key in SPLIT_SETTINGS}
        check_fold_args(settings["num_folds"], settings["fold"])
        check_max_image_pixels(settings["max_image_pixels"])
        changed = {key: value for key, value in settings.items() if getattr(self, key) != value}
        for key, value in settings.items():
            setattr(self, key, value)
        if changed:
            log.info(
                "Using the checkpoint's split settings instead of the data config's: %s",
                ", ".join(f"data.{key}={value}" for key, value in changed.items()),
            )

    def build_splits(self) -> ImageFolderSplits:
        """Scan ``root`` and build the datasets with :func:`~transferlab.data.build_imagefolder_splits`."""
        return build_imagefolder_splits(
            self.root,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            split_seed=self.split_seed,
            num_folds=self.num_folds,
            fold=self.fold,
            strict=self.strict,
            max_image_pixels=self.max_image_pixels,
            report=self._is_global_zero(),
        )


def _normalised(path: str | Path) -> Path:
    """``path`` absolute, with ``~``, ``.`` and ``..`` resolved (symlinks are kept)."""
    return Path(os.path.abspath(Path(path).expanduser()))
