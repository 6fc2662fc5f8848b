"""The Lightning data module for image-folder datasets (and the demo data written as one)."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from transferlab.data.class_counts import add_class_counts_to_tensorboard, count_per_class, log_class_counts
from transferlab.data.dataset import ImageSampleDataset
from transferlab.data.demo import check_demo, prepare_demo
from transferlab.data.folders import FolderLayout, find_layout, list_samples
from transferlab.data.folds import check_fold_args, fold_split, stratified_folds, write_folds
from transferlab.data.images import DEFAULT_MAX_IMAGE_PIXELS
from transferlab.data.sampling import EpochSampler, EpochStartDataLoader, balanced_sampler
from transferlab.data.scan import report_unreadable, scan_samples
from transferlab.data.splits import Sample, stratified_split, write_split
from transferlab.data.transforms import (
    build_eval_transform,
    build_train_transform,
    check_augmentation,
    min_decode_size,
)
from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing, as_preprocessing

log = logging.getLogger(__name__)

SPLIT_FILE = "split.json"
FOLDS_FILE = "folds.json"


class ImageFolderDataModule(L.LightningDataModule):
    """Train/val/test loaders over ``root/{train,val,test}/<class>/*`` or ``root/<class>/*``.

    A pre-split tree is used as is. A tree of class folders is split per class by
    :func:`~transferlab.data.splits.stratified_split` (``val_fraction``, ``test_fraction``, ``split_seed``),
    and the split is written to ``split_dir/split.json`` when ``split_dir`` is given.

    With ``num_folds=K``, validation is fold ``fold`` of K stratified folds
    (:func:`~transferlab.data.folds.stratified_folds`, seeded by ``split_seed``) over the training pool:
    train + val of a pre-split tree, or what is left of a class-folder tree after the test share
    (``test_fraction``) is held out; ``val_fraction`` is then unused. The test split is the same for every
    fold. The folds go to ``split_dir/folds.json`` and the resulting split to ``split_dir/split.json``.

    At setup every image file is checked cheaply (:mod:`transferlab.data.scan`): unreadable files are
    reported once (count and first paths) and skipped, or are an error with ``strict``; an image above
    ``max_image_pixels`` is always an error. The images per class and split are logged, and added to the
    text tab of a TensorBoard logger if the trainer has one.

    The image transforms come from the backbone's preprocessing, given here or later with
    :meth:`set_preprocessing` (the training entry point builds the data module from the config, then hands
    it the backbone's preprocessing).

    Args:
        root: the data folder.
        preprocessing: the backbone's preprocessing (object with ``input_size``, ``mean``, ``std``,
            ``crop_pct``, ``interpolation``, or a mapping with those keys); may be set later.
        batch_size: the global batch size, divided evenly between devices.
        num_workers: loader worker processes per device (0 loads in the main process).
        pin_memory: pin batches in page-locked memory (faster copies to a GPU).
        persistent_workers: keep workers alive between epochs (only applies when ``num_workers > 0``).
        augmentation: training augmentation preset, ``"none"``, ``"light"`` or ``"strong"``.
        val_fraction: share of each class used for validation when ``root`` is not pre-split.
        test_fraction: share of each class used for test when ``root`` is not pre-split.
        split_seed: seed of that split.
        split_dir: folder to write ``split.json`` to (the run's output folder), or None.
        demo: ``"animal_mnist"`` to write that demo dataset into ``root`` in :meth:`prepare_data` when
            ``root`` holds no data yet, or None.
        demo_per_class: images per class and split for the demo, e.g. ``{"train": 100, "val": 30,
            "test": 100}`` (the default).
        strict: make unreadable image files an error instead of skipping them with a warning.
        balanced_sampling: draw training images with probability inversely proportional to their class
            size (:func:`~transferlab.data.sampling.balanced_sampler`) instead of shuffling.
        num_folds: number of cross-validation folds K (at least 2), or None for a plain split.
        fold: the fold used for validation when ``num_folds`` is set, in ``[0, K)``.
        max_image_pixels: largest accepted ``width * height`` of an image (Pillow's decompression-bomb
            guard, whose default this is); None turns the check off.
        shuffle_seed: seed of the training order; each epoch's order depends on it and the epoch only
            (:class:`~transferlab.data.sampling.EpochSampler`), so a resumed run continues exactly.

    Raises:
        UserError: an argument is invalid (checked here, before any training starts).
    """

    def __init__(
        self,
        root: str,
        preprocessing: Preprocessing | Mapping[str, Any] | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
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
    ) -> None:
        super().__init__()
        if not root:
            raise UserError(
                "data.root is not set: give the folder holding the images (or the demo's target)."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"data.batch_size must be a positive whole number, got {batch_size!r}.")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise UserError(f"data.num_workers must be 0 or more, got {num_workers!r}.")
        check_fold_args(num_folds, fold)
        if max_image_pixels is not None and (
            isinstance(max_image_pixels, bool)
            or not isinstance(max_image_pixels, int)
            or max_image_pixels < 1
        ):
            raise UserError(
                f"data.max_image_pixels must be a positive whole number or null, got {max_image_pixels!r}."
            )
        self.root = Path(root).expanduser()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.augmentation = check_augmentation(augmentation)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = int(split_seed)
        self.split_dir = Path(split_dir).expanduser() if split_dir is not None else None
        self.demo = check_demo(demo)
        # Plain dict: a Hydra DictConfig must not end up in checkpoints or worker pickles.
        self.demo_per_class = {str(k): v for k, v in demo_per_class.items()} if demo_per_class else None
        self.strict = bool(strict)
        self.balanced_sampling = bool(balanced_sampling)
        self.num_folds = num_folds
        self.fold = fold
        self.max_image_pixels = max_image_pixels
        # None (a run without a seed): a fresh random seed, so epochs still differ from run to run.
        self.shuffle_seed = int(shuffle_seed) if shuffle_seed is not None else random.randrange(2**31)
        self._layout: FolderLayout | None = None
        self._counts_logged = False
        self._counts_in_tensorboard = False
        self.per_device_batch_size = batch_size
        self.train_set: ImageSampleDataset | None = None
        self.val_set: ImageSampleDataset | None = None
        self.test_set: ImageSampleDataset | None = None
        self._preprocessing: Preprocessing | None = None
        if preprocessing is not None:
            self.set_preprocessing(preprocessing)

    # ------------------------------------------------------------------ configuration

    @property
    def preprocessing(self) -> Preprocessing | None:
        """The preprocessing in use, or None before :meth:`set_preprocessing`."""
        return self._preprocessing

    def set_preprocessing(self, preprocessing: Preprocessing | Mapping[str, Any]) -> None:
        """Use the backbone's preprocessing for the transforms (also on datasets already set up).

        Args:
            preprocessing: object with ``input_size``, ``mean``, ``std``, ``crop_pct``, ``interpolation``
                or a mapping with those keys.

        Raises:
            UserError: a field is missing or invalid.
        """
        self._preprocessing = as_preprocessing(preprocessing)
        if self.train_set is not None:
            self._apply_transforms()

    @property
    def class_names(self) -> list[str]:
        """Sorted class folder names; class ``i`` of the model is ``class_names[i]``.

        Only lists folders, so it is cheap and works right after :meth:`prepare_data`, before ``setup()``.
        """
        return list(self.layout.class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.layout.class_names)

    @property
    def class_counts(self) -> list[int]:
        """Training images per class, in class order (e.g. for inverse-frequency loss weights).

        Scans and splits the data on first use if :meth:`setup` has not run yet.
        """
        self._build_datasets()
        assert self.train_set is not None
        return count_per_class(self.train_set.samples, len(self.train_set.class_names))

    @property
    def layout(self) -> FolderLayout:
        """How ``root`` is organised (found on first use, then cached)."""
        if self._layout is None:
            self._layout = find_layout(self.root)
        return self._layout

    # ------------------------------------------------------------------ Lightning hooks

    def prepare_data(self) -> None:
        """Write the demo dataset into ``root`` if ``demo`` is set and ``root`` holds no data yet.

        Safe to call repeatedly and from several processes at once.
        """
        if self.demo is not None and not prepare_demo(self.demo, self.root, self.demo_per_class):
            log.info("data.root %s already holds data; not writing the %s demo there", self.root, self.demo)
        self._layout = None  # the folder may have just been created

    def setup(self, stage: str | None = None) -> None:
        """Scan the images, split them if needed, build the three datasets and report the class counts.

        Args:
            stage: Lightning's stage (``"fit"``, ``"validate"``, ``"test"``, ``"predict"``); all datasets
                are built whatever the stage, once (images are read lazily).

        Raises:
            UserError: no preprocessing was set; the folder tree is invalid; images are unreadable with
                ``strict`` or too large; a class has no usable images, or too few for the split or folds;
                the global batch size does not divide by the number of devices; or balanced sampling is
                asked for under DDP without Lightning's distributed sampler.
        """
        if self._preprocessing is None:
            raise UserError(
                "ImageFolderDataModule has no preprocessing: call set_preprocessing(...) with the backbone's "
                "preprocessing (or pass preprocessing=...) before setup()."
            )
        self.per_device_batch_size = self._per_device_batch_size()
        self._check_balanced_sampling()
        self._build_datasets()
        self._apply_transforms()
        self._report_class_counts()

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or class-balanced) batches of ``(images, class_indices)`` for training."""
        if self.train_set is None:
            return self._loader(None, "train", shuffle=False)
        if self.balanced_sampling:
            sampler = balanced_sampler(self.train_set.targets, self.class_counts, seed=self.shuffle_seed)
        else:
            sampler = EpochSampler(len(self.train_set), seed=self.shuffle_seed)
        return self._loader(self.train_set, "train", shuffle=False, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        """Batches of the validation set, in a fixed order."""
        return self._loader(self.val_set, "val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Batches of the test set, in a fixed order."""
        return self._loader(self.test_set, "test", shuffle=False)

    # ------------------------------------------------------------------ helpers

    def _build_datasets(self) -> None:
        if self.train_set is not None:
            return  # Lightning calls setup once per stage; the datasets do not depend on it
        layout = self.layout
        usable = self._usable_samples(layout)
        if self.num_folds is not None:
            splits = self._fold_splits(layout, usable)
        elif layout.presplit:
            splits = usable
        else:
            splits = stratified_split(
                usable["all"],
                self.val_fraction,
                self.test_fraction,
                self.split_seed,
                class_names=layout.class_names,
            )
        if (self.num_folds is not None or not layout.presplit) and self._writes_records():
            assert self.split_dir is not None
            write_split(splits, self.split_dir / SPLIT_FILE, root=layout.root, class_names=layout.class_names)
        names = list(layout.class_names)
        datasets = {
            split: ImageSampleDataset(splits[split], names, max_pixels=self.max_image_pixels)
            for split in ("train", "val", "test")
        }
        self.train_set, self.val_set, self.test_set = datasets["train"], datasets["val"], datasets["test"]

    def _usable_samples(self, layout: FolderLayout) -> dict[str, list[Sample]]:
        """The readable samples of each split folder (``"all"`` for a class-folder tree)."""
        listed = {
            key: list_samples(folder, layout.class_names) for key, folder in layout.split_dirs().items()
        }
        report = scan_samples(
            [s for samples in listed.values() for s in samples], max_pixels=self.max_image_pixels
        )
        if self.strict or self._is_global_zero():
            report_unreadable(report, strict=self.strict)
        bad = {path for path, _ in report.unreadable}
        usable = {key: [s for s in samples if s[0] not in bad] for key, samples in listed.items()}
        for key, samples in usable.items():
            for index, count in enumerate(count_per_class(samples, len(layout.class_names))):
                if count == 0:
                    folder = layout.split_dirs()[key] / layout.class_names[index]
                    raise UserError(
                        f"Class folder {folder} has no usable images: every image file in it is unreadable "
                        f"({report.describe()}). Replace them with readable images, or remove the folder."
                    )
        return usable

    def _fold_splits(self, layout: FolderLayout, usable: dict[str, list[Sample]]) -> dict[str, list[Sample]]:
        assert self.num_folds is not None
        if layout.presplit:
            pool, test = sorted(usable["train"] + usable["val"]), usable["test"]
        else:
            held_out = stratified_split(
                usable["all"], 0.0, self.test_fraction, self.split_seed, class_names=layout.class_names
            )
            pool, test = held_out["train"], held_out["test"]
        folds = stratified_folds(pool, self.num_folds, self.split_seed, class_names=layout.class_names)
        train, val = fold_split(folds, self.fold)
        if self._writes_records():
            assert self.split_dir is not None
            write_folds(
                folds,
                self.split_dir / FOLDS_FILE,
                fold=self.fold,
                seed=self.split_seed,
                root=layout.root,
                class_names=layout.class_names,
                test=test,
            )
        return {"train": train, "val": val, "test": test}

    def _report_class_counts(self) -> None:
        # Logged at the first setup; put in TensorBoard at the first setup with a trainer attached (the
        # training entry point sets up once before the trainer exists, to give the model the counts).
        if not self._is_global_zero() or (self._counts_logged and self._counts_in_tensorboard):
            return
        assert self.train_set is not None and self.val_set is not None and self.test_set is not None
        names = self.train_set.class_names
        counts = {
            split: count_per_class(dataset.samples, len(names))
            for split, dataset in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set))
        }
        if not self._counts_logged:
            log_class_counts(names, counts)
            self._counts_logged = True
        if self.trainer is not None:
            add_class_counts_to_tensorboard(self.trainer, names, counts)
            self._counts_in_tensorboard = True

    def _check_balanced_sampling(self) -> None:
        trainer = self.trainer
        if not self.balanced_sampling or trainer is None or int(getattr(trainer, "world_size", 1) or 1) < 2:
            return
        # Lightning shards a custom sampler per rank only with its distributed sampler switched on.
        connector = getattr(trainer, "_accelerator_connector", None)
        if not getattr(connector, "use_distributed_sampler", True):
            raise UserError(
                "data.balanced_sampling=true on several devices needs Lightning's distributed sampler to "
                "give each device its share: remove trainer.use_distributed_sampler=false, or set "
                "data.balanced_sampling=false."
            )

    def _apply_transforms(self) -> None:
        assert self._preprocessing is not None
        assert self.train_set is not None and self.val_set is not None and self.test_set is not None
        self.train_set.transform = build_train_transform(self._preprocessing, augmentation=self.augmentation)
        self.train_set.min_size = min_decode_size(self._preprocessing, augmentation=self.augmentation)
        eval_transform = build_eval_transform(self._preprocessing)
        for dataset in (self.val_set, self.test_set):
            dataset.transform = eval_transform
            dataset.min_size = min_decode_size(self._preprocessing)

    def _per_device_batch_size(self) -> int:
        trainer = self.trainer
        world_size = int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1
        if self.batch_size % world_size:
            raise UserError(
                f"data.batch_size={self.batch_size} is the global batch size and must divide evenly between "
                f"the {world_size} devices; use a multiple of {world_size} (e.g. "
                f"{max(world_size, self.batch_size // world_size * world_size)})."
            )
        return self.batch_size // world_size

    def _is_global_zero(self) -> bool:
        if self.trainer is None:
            # Before a trainer is attached, the rank Lightning's launcher put in the environment.
            return getattr(rank_zero_only, "rank", 0) == 0
        return bool(getattr(self.trainer, "is_global_zero", True))

    def _writes_records(self) -> bool:
        return self.split_dir is not None and self._is_global_zero()

    def _loader(
        self,
        dataset: ImageSampleDataset | None,
        split: str,
        *,
        shuffle: bool,
        sampler: torch.utils.data.Sampler[int] | None = None,
    ) -> DataLoader:
        if dataset is None:
            raise UserError(f"The {split} dataset is not ready: call setup() before {split}_dataloader().")
        return EpochStartDataLoader(
            dataset,
            batch_size=self.per_device_batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            drop_last=False,
        )
