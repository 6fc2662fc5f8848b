"""The Lightning data module for image-folder datasets (and the demo data written as one)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from transferlab.data.dataset import ImageSampleDataset
from transferlab.data.demo import check_demo, prepare_demo
from transferlab.data.folders import FolderLayout, find_layout, list_samples
from transferlab.data.splits import stratified_split, write_split
from transferlab.data.transforms import build_eval_transform, build_train_transform, check_augmentation
from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing, as_preprocessing

log = logging.getLogger(__name__)

SPLIT_FILE = "split.json"


class ImageFolderDataModule(L.LightningDataModule):
    """Train/val/test loaders over ``root/{train,val,test}/<class>/*`` or ``root/<class>/*``.

    A pre-split tree is used as is. A tree of class folders is split per class by
    :func:`~transferlab.data.splits.stratified_split` (``val_fraction``, ``test_fraction``, ``split_seed``),
    and the split is written to ``split_dir/split.json`` when ``split_dir`` is given.

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
        self._layout: FolderLayout | None = None
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
        """Scan the images, split them if needed, and build the three datasets.

        Args:
            stage: Lightning's stage (``"fit"``, ``"validate"``, ``"test"``, ``"predict"``); all datasets
                are built whatever the stage, which is cheap (images are read lazily).

        Raises:
            UserError: no preprocessing was set; the folder tree is invalid; or the global batch size does
                not divide by the number of devices.
        """
        if self._preprocessing is None:
            raise UserError(
                "ImageFolderDataModule has no preprocessing: call set_preprocessing(...) with the backbone's "
                "preprocessing (or pass preprocessing=...) before setup()."
            )
        self.per_device_batch_size = self._per_device_batch_size()
        if self.train_set is not None:
            return  # Lightning calls setup once per stage; the datasets do not depend on it
        layout = self.layout
        if layout.presplit:
            splits = {
                split: list_samples(folder, layout.class_names)
                for split, folder in layout.split_dirs().items()
            }
        else:
            samples = list_samples(layout.root, layout.class_names)
            splits = stratified_split(
                samples,
                self.val_fraction,
                self.test_fraction,
                self.split_seed,
                class_names=layout.class_names,
            )
            if self.split_dir is not None and self._is_global_zero():
                write_split(
                    splits, self.split_dir / SPLIT_FILE, root=layout.root, class_names=layout.class_names
                )
        names = list(layout.class_names)
        self.train_set = ImageSampleDataset(splits["train"], names)
        self.val_set = ImageSampleDataset(splits["val"], names)
        self.test_set = ImageSampleDataset(splits["test"], names)
        self._apply_transforms()

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of ``(images, class_indices)`` for training."""
        return self._loader(self.train_set, "train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Batches of the validation set, in a fixed order."""
        return self._loader(self.val_set, "val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Batches of the test set, in a fixed order."""
        return self._loader(self.test_set, "test", shuffle=False)

    # ------------------------------------------------------------------ helpers

    def _apply_transforms(self) -> None:
        assert self._preprocessing is not None
        assert self.train_set is not None and self.val_set is not None and self.test_set is not None
        self.train_set.transform = build_train_transform(self._preprocessing, augmentation=self.augmentation)
        eval_transform = build_eval_transform(self._preprocessing)
        self.val_set.transform = eval_transform
        self.test_set.transform = eval_transform

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
        return self.trainer is None or bool(getattr(self.trainer, "is_global_zero", True))

    def _loader(self, dataset: ImageSampleDataset | None, split: str, *, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise UserError(f"The {split} dataset is not ready: call setup() before {split}_dataloader().")
        return DataLoader(
            dataset,
            batch_size=self.per_device_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            drop_last=False,
        )
