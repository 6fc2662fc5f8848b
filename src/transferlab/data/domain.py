"""Two-domain data for domain adaptation: a labelled source tree and a target tree, paired batch by batch.

Each training batch is ``(source images, source labels, target images)``: one labelled source batch and one
target batch of the same size. Target labels never reach training (see :mod:`transferlab.data.target`).
Validation and test give the source loader first, then the target loader.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from transferlab.data.dataset import ImageSampleDataset
from transferlab.data.domain_demos import check_domain_demo, prepare_domain_demo
from transferlab.data.imagefolder import ImageFolderDataModule
from transferlab.data.images import DEFAULT_MAX_IMAGE_PIXELS
from transferlab.data.sampling import SampleIndex, epoch_sample_seeds, epoch_seed
from transferlab.data.target import TARGET_SPLIT_FILE, TargetSplits, find_target_splits
from transferlab.data.transforms import build_eval_transform, build_train_transform, min_decode_size
from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing

log = logging.getLogger(__name__)

EPOCH_LENGTHS: tuple[str, ...] = ("source", "target", "longer")
"""Named epoch lengths: one pass over the source training images, over the target's, or the longer one."""


class DomainPairDataset(Dataset):
    """Items ``(source image, source label, target image)`` addressed by ``(source index, target index)``.

    The target dataset's labels are dropped here, so nothing a target label could change reaches a
    training batch.
    """

    def __init__(self, source: ImageSampleDataset, target: ImageSampleDataset) -> None:
        self.source = source
        self.target = target

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, pair: tuple[int, int]) -> tuple[Any, int, Any]:
        source_index, target_index = pair
        image, label = self.source[source_index]
        target_image, _ = self.target[target_index]
        return image, label, target_image


class DomainPairSampler(Sampler[tuple[int, int]]):
    """``num_pairs`` pairs ``(source index, target index)`` per epoch, a function of ``(seed, epoch)``.

    Each domain is walked through in a fresh random order every epoch, and restarts in a new order when an
    epoch needs more of its images than it has (the shorter domain is cycled). The pairs are the same on
    every process; under DDP Lightning's sampler wrapper gives each process its share. Like
    :class:`~transferlab.data.sampling.EpochSampler`, it reseeds Python, NumPy and torch when the epoch's
    data starts, and gives each image of a pair its own augmentation seed (a
    :class:`~transferlab.data.sampling.SampleIndex`), so a resumed run draws the same numbers as the run
    it continues, with or without loader workers.

    Args:
        num_source: source training images.
        num_target: target training images.
        num_pairs: pairs (source images) per epoch.
        seed: the run's seed.
    """

    def __init__(self, num_source: int, num_target: int, num_pairs: int, seed: int) -> None:
        if min(num_source, num_target, num_pairs) < 1:
            raise ValueError(f"Empty domain pairing: {num_source=}, {num_target=}, {num_pairs=}")
        self.num_source = num_source
        self.num_target = num_target
        self.num_pairs = num_pairs
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each training epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_pairs

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        value = epoch_seed(self.seed, self.epoch, rank)
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        source = _cycled_order(self.num_source, self.num_pairs, generator)
        target = _cycled_order(self.num_target, self.num_pairs, generator)
        # One augmentation seed per image of the epoch, carried to the datasets (see SampleIndex): the same
        # numbers in any loader worker and in a resumed run.
        seeds = epoch_sample_seeds(2 * self.num_pairs, self.seed, self.epoch).tolist()
        for position, (source_index, target_index) in enumerate(zip(source, target, strict=True)):
            yield (
                SampleIndex(source_index, seeds[2 * position]),
                SampleIndex(target_index, seeds[2 * position + 1]),
            )


def _cycled_order(size: int, length: int, generator: torch.Generator) -> list[int]:
    """``length`` indices: random permutations of ``range(size)`` one after the other, cut to length."""
    rounds = -(-length // size)
    return torch.cat([torch.randperm(size, generator=generator) for _ in range(rounds)])[:length].tolist()


class DomainAdaptationDataModule(ImageFolderDataModule):
    """A labelled source image-folder tree and a target tree for domain adaptation.

    The source works as in :class:`~transferlab.data.ImageFolderDataModule` (``<class>/*`` split per
    class by the fractions, or ``{train,val,test}/<class>/*``); it defines the classes. The target may be
    labelled the same ways, with the same class names, or be a folder of images without classes; it is
    split without using labels (:func:`~transferlab.data.target.find_target_splits`), and the split is
    written to ``split_dir/target_split.json``.

    Training batches are ``(source images, source labels, target images)``, ``batch_size`` of each
    (divided between devices). An epoch lasts ``epoch_length``: ``"source"`` (one pass over the source
    training images; the target is cycled when shorter), ``"target"``, ``"longer"``, or a number of
    training steps. Validation loaders: source, then target when it is labelled. Test loaders: source,
    then target (unlabelled images give label -1: they serve domain measures only).

    Args:
        source_root: the labelled source tree.
        target_root: the target tree.
        preprocessing: the backbone's preprocessing (or set later with :meth:`set_preprocessing`).
        batch_size: images per domain in a training step (global: divided between devices).
        num_workers: loader worker processes per device.
        pin_memory: pin batches in page-locked memory.
        persistent_workers: keep workers alive between epochs.
        augmentation: training augmentation preset of both domains (``none``, ``light``, ``strong``).
        val_fraction: share held out for validation (per class in the source; of all images in the target).
        test_fraction: share held out for test.
        split_seed: seed of both splits.
        split_dir: folder for ``split.json`` (source) and ``target_split.json``, or None.
        demo: a name from :data:`~transferlab.data.domain_demos.DOMAIN_DEMOS` to write that demo pair into
            the two roots on first use, or None.
        strict: make unreadable image files an error instead of skipping them.
        max_image_pixels: largest accepted ``width * height`` of an image (None: no limit).
        shuffle_seed: seed of the training order (each epoch's pairs depend on it and the epoch only).
        epoch_length: ``"source"``, ``"target"``, ``"longer"`` or a positive number of steps.

    Raises:
        UserError: an argument is invalid.
    """

    def __init__(
        self,
        source_root: str,
        target_root: str,
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
        strict: bool = False,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        shuffle_seed: int | None = 0,
        epoch_length: str | int = "source",
    ) -> None:
        for name, value in (("source_root", source_root), ("target_root", target_root)):
            if not value:
                raise UserError(
                    f"data.{name} is not set: domain adaptation needs data.source_root (labelled images) "
                    "and data.target_root (images of the domain to adapt to)."
                )
        super().__init__(
            root=source_root, preprocessing=preprocessing, batch_size=batch_size, num_workers=num_workers,
            pin_memory=pin_memory, persistent_workers=persistent_workers, augmentation=augmentation,
            val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed,
            split_dir=split_dir, strict=strict, max_image_pixels=max_image_pixels, shuffle_seed=shuffle_seed,
        )  # fmt: skip
        self.source_root = self.root
        self.target_root = Path(target_root).expanduser()
        self.domain_demo = check_domain_demo(demo)
        self.epoch_length = _check_epoch_length(epoch_length)
        self.target: TargetSplits | None = None
        self.target_train_set: ImageSampleDataset | None = None
        self.target_val_set: ImageSampleDataset | None = None
        self.target_test_set: ImageSampleDataset | None = None

    # ------------------------------------------------------------------ what the model asks
    @property
    def target_labelled(self) -> bool:
        """Whether the target came with class folders (its held-out accuracy can be measured)."""
        return self._target_splits().labelled

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Write the demo pair into the two roots if ``demo`` is set and they hold no data yet."""
        if self.domain_demo is not None:
            prepare_domain_demo(self.domain_demo, self.source_root, self.target_root)
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """Set up the source (see the parent class), then scan and split the target.

        Raises:
            UserError: a root is missing or empty, the class names differ, or the source is invalid.
        """
        if not self.source_root.expanduser().is_dir():
            raise UserError(
                f"data.source_root not found: {self.source_root.absolute()}. Set it to the labelled "
                "image folder of the source domain (<class>/* or train/, val/, test/ of class folders)."
            )
        target = self._target_splits()  # checked before the source is scanned: cheap errors first
        super().setup(stage)
        if self.target_train_set is None:
            names = self.class_names
            self.target_train_set, self.target_val_set, self.target_test_set = (
                ImageSampleDataset(target.splits[split], names, max_pixels=self.max_image_pixels)
                for split in ("train", "val", "test")
            )
            # Labels of training images are replaced too: even the substitution of an unreadable image
            # (by another of "its class") must not depend on them.
            self.target_train_set.samples = [(path, -1) for path, _ in self.target_train_set.samples]
            self._report_target(target)
        self._apply_target_transforms()

    def train_dataloader(self) -> DataLoader:
        """Batches ``(source images, source labels, target images)``."""
        if self.train_set is None or self.target_train_set is None:
            raise UserError("The training data is not ready: call setup() before train_dataloader().")
        sampler = DomainPairSampler(
            len(self.train_set), len(self.target_train_set), self._pairs_per_epoch(), seed=self.shuffle_seed
        )
        pairs = DomainPairDataset(self.train_set, self.target_train_set)
        return self._loader(pairs, "train", sampler=sampler)  # type: ignore[arg-type]

    def val_dataloader(self) -> list[DataLoader]:
        """The source validation loader, then the target's when the target is labelled."""
        loaders = [super().val_dataloader()]
        if self.target_labelled:
            loaders.append(self._loader(self.target_val_set, "target val"))
        return loaders

    def test_dataloader(self) -> list[DataLoader]:
        """The source test loader, then the target's (label -1 for unlabelled images)."""
        return [super().test_dataloader(), self._loader(self.target_test_set, "target test")]

    # ------------------------------------------------------------------ helpers
    def _target_splits(self) -> TargetSplits:
        if self.target is None:
            self.target = find_target_splits(
                self.target_root,
                self.class_names,
                val_fraction=self.val_fraction,
                test_fraction=self.test_fraction,
                split_seed=self.split_seed,
                source_root=self.source_root,
                strict=self.strict,
                max_pixels=self.max_image_pixels,
                report=self._is_global_zero(),
            )
        return self.target

    def _pairs_per_epoch(self) -> int:
        assert self.train_set is not None and self.target_train_set is not None
        sizes = {"source": len(self.train_set), "target": len(self.target_train_set)}
        if isinstance(self.epoch_length, int):
            return self.epoch_length * self.batch_size
        if self.epoch_length == "longer":
            return max(sizes.values())
        return sizes[self.epoch_length]

    def apply_transforms(self) -> None:
        """Set the transforms of the source datasets (see the parent class) and of the target's."""
        super().apply_transforms()
        if self.target_train_set is not None:
            self._apply_target_transforms()

    def _apply_target_transforms(self) -> None:
        assert self._preprocessing is not None and self.target_train_set is not None
        self.target_train_set.transform = build_train_transform(
            self._preprocessing, augmentation=self.augmentation
        )
        self.target_train_set.min_size = min_decode_size(self._preprocessing, augmentation=self.augmentation)
        for dataset in (self.target_val_set, self.target_test_set):
            assert dataset is not None
            dataset.transform = build_eval_transform(self._preprocessing)
            dataset.min_size = min_decode_size(self._preprocessing)

    def _report_target(self, target: TargetSplits) -> None:
        if not self._is_global_zero():
            return
        counts = target.counts()
        log.info(
            "Target domain %s (%s): %d train, %d val, %d test images",
            target.root,
            "labelled" if target.labelled else "unlabelled",
            counts["train"],
            counts["val"],
            counts["test"],
        )
        if self.split_dir is not None:
            target.write(self.split_dir / TARGET_SPLIT_FILE, self.class_names)


def _check_epoch_length(value: str | int) -> str | int:
    if isinstance(value, bool) or not (value in EPOCH_LENGTHS or (isinstance(value, int) and value > 0)):
        raise UserError(
            f"data.epoch_length={value!r} is not valid: use {', '.join(EPOCH_LENGTHS)} or a positive number "
            "of training steps."
        )
    return value
