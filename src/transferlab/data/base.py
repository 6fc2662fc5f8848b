"""The base Lightning data module: preprocessing, per-device batch size, samplers, loaders and class counts.

A data module for a new kind of data subclasses :class:`BaseDataModule` and implements
:meth:`~BaseDataModule.build_splits` (e.g. with :func:`~transferlab.data.builder.build_imagefolder_splits`).
Everything else (transforms from the backbone's preprocessing, the global batch size divided between
devices, the shuffled or class-balanced training order with one seed on every rank, the loaders, the
class-count report) is inherited. Customising the training loader takes one
override: :meth:`~BaseDataModule.train_sampler` for another order of the same images, or
:meth:`~BaseDataModule.train_dataloader` built with :meth:`~BaseDataModule._loader` (a batch sampler for
episodes, or Lightning's ``CombinedLoader`` over two domains' loaders).
"""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset, Sampler

from transferlab.data.builder import ImageFolderSplits
from transferlab.data.class_counts import add_class_counts_to_tensorboard, log_class_counts
from transferlab.data.folders import SPLITS
from transferlab.data.sampling import EpochSampler, EpochStartDataLoader, balanced_sampler
from transferlab.data.split_record import describe_difference, is_split_record
from transferlab.data.transforms import (
    build_eval_transform,
    build_train_transform,
    check_augmentation,
    min_decode_size,
)
from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing, as_preprocessing
from transferlab.utils.processes import loader_worker_context

log = logging.getLogger(__name__)

SPLIT_RECORD_KEY = "split_record"
"""Key of the split record in :meth:`BaseDataModule.state_dict`, so in every checkpoint (under the data
module's class name)."""


@runtime_checkable
class TrainingDataModule(Protocol):
    """What ``transferlab-train`` (and strategies such as the feature cache) rely on from a data module.

    The entry point builds the data module, hands it the backbone's preprocessing, calls
    ``prepare_data()`` and ``setup("fit")``, then builds the model from ``class_names`` and
    ``class_counts``. The feature cache reads and replaces ``train_set`` / ``val_set`` and reads
    ``num_workers``.
    """

    num_workers: int
    train_set: Dataset | None
    val_set: Dataset | None
    test_set: Dataset | None

    @property
    def class_names(self) -> list[str]: ...

    @property
    def class_counts(self) -> list[int]: ...

    @property
    def preprocessing(self) -> Preprocessing | None: ...

    def set_preprocessing(self, preprocessing: Preprocessing | Mapping[str, Any]) -> None: ...

    def prepare_data(self) -> None: ...

    def setup(self, stage: str | None = None) -> None: ...


class BaseDataModule(L.LightningDataModule, ABC):
    """Loaders over the train/val/test datasets a subclass builds in :meth:`build_splits`.

    Args:
        preprocessing: the backbone's preprocessing (object with ``input_size``, ``mean``, ``std``,
            ``crop_pct``, ``interpolation``, or a mapping with those keys); may be set later with
            :meth:`set_preprocessing`.
        batch_size: the global batch size, divided evenly between devices.
        num_workers: loader worker processes per device (0 loads in the main process).
        pin_memory: pin batches in page-locked memory (faster copies to a GPU).
        persistent_workers: keep workers alive between epochs (only applies when ``num_workers > 0``).
        augmentation: training augmentation preset, ``"none"``, ``"light"`` or ``"strong"``.
        balanced_sampling: draw training images with probability inversely proportional to their class
            size (:func:`~transferlab.data.sampling.balanced_sampler`) instead of shuffling.
        shuffle_seed: seed of the training order; each epoch's order depends on it and the epoch only
            (:class:`~transferlab.data.sampling.EpochSampler`), so a resumed run continues exactly. None
            draws one at random (on the first rank: :meth:`setup` gives every rank that one).
        split_dir: folder the split records (``split.json``, ``folds.json``) are written to at setup
            (the run's output folder), or None.

    Attributes:
        splits: what :meth:`build_splits` returned, or None before :meth:`setup`.
        train_set: the training dataset (None before :meth:`setup`; a strategy may replace it).
        val_set: the validation dataset.
        test_set: the test dataset.
        per_device_batch_size: the batch size of each device's loaders (set at :meth:`setup`).

    Raises:
        UserError: an argument is invalid (checked here, before any training starts).
    """

    def __init__(
        self,
        preprocessing: Preprocessing | Mapping[str, Any] | None = None,
        *,
        batch_size: int = 32,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        augmentation: str = "light",
        balanced_sampling: bool = False,
        shuffle_seed: int | None = 0,
        split_dir: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"data.batch_size must be a positive whole number, got {batch_size!r}.")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise UserError(f"data.num_workers must be 0 or more, got {num_workers!r}.")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.augmentation = check_augmentation(augmentation)
        self.balanced_sampling = bool(balanced_sampling)
        # None (a run without a seed): a fresh random seed, so epochs still differ from run to run (each
        # process draws one here; setup() makes every rank use the first rank's).
        self.shuffle_seed = int(shuffle_seed) if shuffle_seed is not None else random.randrange(2**31)
        self.split_dir = Path(split_dir).expanduser() if split_dir is not None else None
        self.splits: ImageFolderSplits | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.per_device_batch_size = batch_size
        self._preprocessing: Preprocessing | None = None
        self._expected_record: dict[str, Any] | None = None
        self._seed_shared = False
        self._counts_logged = False
        self._counts_in_tensorboard = False
        if preprocessing is not None:
            self.set_preprocessing(preprocessing)

    # ------------------------------------------------------------------ what subclasses provide

    @abstractmethod
    def build_splits(self) -> ImageFolderSplits:
        """Build the train/val/test datasets (without transforms); called once, by :meth:`setup`.

        Must not write anything: :meth:`setup` writes the records on the first rank.
        """

    # ------------------------------------------------------------------ configuration and contract

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
        if self.splits is not None:
            self.apply_transforms()

    @property
    def class_names(self) -> list[str]:
        """Names by class index; class ``i`` of the model is ``class_names[i]``."""
        return list(self._built("class_names").class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def class_counts(self) -> list[int]:
        """Training images per class, in class order (e.g. for inverse-frequency loss weights).

        Only reads what :meth:`setup` built: no scanning, no writing.

        Raises:
            UserError: :meth:`setup` has not run yet.
        """
        return list(self._built("class_counts").counts["train"])

    # ------------------------------------------------------------------ Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets (once), write the split records, set the transforms, report the class counts.

        Args:
            stage: Lightning's stage (``"fit"``, ``"validate"``, ``"test"``, ``"predict"``); all datasets
                are built whatever the stage, once (images are read lazily).

        Raises:
            UserError: no preprocessing was set; the global batch size does not divide by the number of
                devices; balanced sampling is asked for under DDP without Lightning's distributed sampler;
                the data no longer gives the test split of :meth:`restore_split`; or what
                :meth:`build_splits` raises.
        """
        if self._preprocessing is None:
            raise UserError(
                f"{type(self).__name__} has no preprocessing: call set_preprocessing(...) with the "
                "backbone's preprocessing (or pass preprocessing=...) before setup()."
            )
        self.per_device_batch_size = self._per_device_batch_size()
        self._check_balanced_sampling()
        self._share_shuffle_seed()
        if self.splits is None:  # Lightning calls setup once per stage; the datasets do not depend on it
            splits = self.build_splits()
            if self._expected_record is not None:
                self._check_expected_split(splits)
            if self.split_dir is not None and self._is_global_zero():
                splits.write_records(self.split_dir)
            self.splits = splits
            self.train_set, self.val_set, self.test_set = splits.train, splits.val, splits.test
        self.apply_transforms()
        self._report_class_counts()

    def train_dataloader(self) -> DataLoader:
        """Batches of ``(images, class_indices)`` for training, in the order :meth:`train_sampler` gives."""
        return self._loader(self.train_set, "train", sampler=self.train_sampler())

    def val_dataloader(self) -> DataLoader:
        """Batches of the validation set, in a fixed order."""
        return self._loader(self.val_set, "val")

    def test_dataloader(self) -> DataLoader:
        """Batches of the test set, in a fixed order."""
        return self._loader(self.test_set, "test")

    def state_dict(self) -> dict[str, Any]:
        """The split record (settings and file-list hashes); Lightning stores it in every checkpoint."""
        if self.splits is None:
            return {}
        return {SPLIT_RECORD_KEY: self.splits.record}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Called by Lightning when it loads a checkpoint (resume, test): warns if the split differs."""
        record = state_dict.get(SPLIT_RECORD_KEY)
        if self.splits is None or not is_split_record(record) or not self._is_global_zero():
            return
        for split in SPLITS:
            difference = describe_difference(record, self.splits.record, split)
            if difference is not None:
                log.warning(
                    "This run's %s split is not the one the checkpoint was trained with (%s); the run uses "
                    "its own.",
                    split,
                    difference,
                )
                return

    # ------------------------------------------------------------------ hooks for subclasses

    def restore_split(self, record: Mapping[str, Any]) -> None:
        """Test on the split a checkpoint recorded: :meth:`setup` then checks the data still gives it.

        Call before :meth:`setup`. Subclasses whose split depends on settings (fractions, seed, folds)
        extend this to adopt the recorded ones.

        Args:
            record: the split record of a checkpoint (:func:`split_record_from_checkpoint`).

        Raises:
            UserError: ``record`` is not a split record this version reads.
        """
        if self.splits is not None:
            raise RuntimeError("restore_split() must be called before setup() builds the datasets")
        if not is_split_record(record):
            raise UserError(
                "The checkpoint's split record is damaged or from another transferlab version; pass "
                "split_from_checkpoint=false to split data.root as the data config says."
            )
        self._expected_record = dict(record)

    def train_sampler(self, dataset: Dataset | None = None) -> Sampler[int]:
        """The training order: a shuffle (or a class-balanced draw), a function of the seed and epoch.

        Override for another order of the same images; Lightning shards it between ranks.

        Args:
            dataset: the dataset to order (with ``targets`` for balanced sampling); default ``train_set``
                (a two-domain module also orders its target domain's training set with it).
        """
        dataset = self._ready(dataset if dataset is not None else self.train_set, "train")
        if self.balanced_sampling:
            targets = list(dataset.targets)  # type: ignore[attr-defined]
            per_class = Counter(targets)
            counts = [per_class[label] for label in range(max(targets) + 1)]
            return balanced_sampler(targets, counts, seed=self.shuffle_seed)
        return EpochSampler(len(dataset), seed=self.shuffle_seed)  # type: ignore[arg-type]

    def apply_transforms(self) -> None:
        """Set the training transform on ``train_set`` and the evaluation one on ``val_set`` / ``test_set``.

        Called at setup and when the preprocessing changes; a subclass with more datasets extends it.
        Datasets a strategy swapped in (e.g. cached features, without a ``transform``) are left alone.
        """
        assert self._preprocessing is not None
        train = self._built("apply_transforms").train
        train.transform = build_train_transform(self._preprocessing, augmentation=self.augmentation)
        train.min_size = min_decode_size(self._preprocessing, augmentation=self.augmentation)
        eval_transform = build_eval_transform(self._preprocessing)
        for dataset in (self.splits.val, self.splits.test):  # type: ignore[union-attr]
            dataset.transform = eval_transform
            dataset.min_size = min_decode_size(self._preprocessing)

    # ------------------------------------------------------------------ helpers

    def _loader(
        self,
        dataset: Dataset | None,
        split: str,
        *,
        sampler: Sampler[int] | None = None,
        batch_sampler: Sampler[list[int]] | None = None,
        **kwargs: Any,
    ) -> DataLoader:
        """A loader over ``dataset`` with this module's batch size and worker settings.

        Args:
            dataset: the dataset (None: not set up yet, an error naming ``split``).
            split: its name, for messages.
            sampler: the order of the samples; None = in dataset order.
            batch_sampler: yields whole batches of indices instead (e.g. few-shot episodes); the batch
                size is then the batch sampler's.
            **kwargs: further ``DataLoader`` arguments (e.g. ``collate_fn``).
        """
        dataset = self._ready(dataset, split)
        batching: dict[str, Any] = (
            {"batch_sampler": batch_sampler}
            if batch_sampler is not None
            else {"batch_size": self.per_device_batch_size, "sampler": sampler, "drop_last": False}
        )
        return EpochStartDataLoader(  # draws the epoch at its first batch: see there why
            dataset,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            multiprocessing_context=loader_worker_context(self.num_workers),
            **batching,
            **kwargs,
        )

    @staticmethod
    def _ready(dataset: Dataset | None, split: str) -> Dataset:
        if dataset is None:
            raise UserError(f"The {split} dataset is not ready: call setup() before {split}_dataloader().")
        return dataset

    def _built(self, what: str) -> ImageFolderSplits:
        if self.splits is None:
            raise UserError(f"{type(self).__name__}.{what} is known after setup(): call setup() first.")
        return self.splits

    def _check_expected_split(self, splits: ImageFolderSplits) -> None:
        expected = self._expected_record
        assert expected is not None
        difference = describe_difference(expected, splits.record, "test")
        if difference is not None:
            raise UserError(
                f"{splits.root} no longer gives the test split the checkpoint was trained with (recorded "
                f"from {expected.get('root')}): {difference}. Restore the images as they were for training, "
                "or pass split_from_checkpoint=false to test on the split the data config makes now (it "
                "may hold images the model trained on)."
            )

    def _report_class_counts(self) -> None:
        # Logged at the first setup; put in TensorBoard at the first setup with a trainer attached (the
        # training entry point sets up once before the trainer exists, to give the model the counts).
        if not self._is_global_zero() or (self._counts_logged and self._counts_in_tensorboard):
            return
        splits = self._built("class counts")
        if not self._counts_logged:
            log_class_counts(splits.class_names, splits.counts)
            self._counts_logged = True
        if self.trainer is not None:
            add_class_counts_to_tensorboard(self.trainer, splits.class_names, splits.counts)
            self._counts_in_tensorboard = True

    def _share_shuffle_seed(self) -> None:
        # Under DDP started by re-running the command (popen, SLURM) every process built its own data
        # module, and with shuffle_seed=None each drew its own seed: the first rank's goes to all, so the
        # ranks shard one shared order instead of overlapping ones.
        if self._seed_shared or self._world_size() < 2:
            return
        strategy = getattr(self.trainer, "strategy", None)
        if strategy is None:  # a stand-in trainer without processes to agree with
            return
        self.shuffle_seed = int(strategy.broadcast(self.shuffle_seed, src=0))
        self._seed_shared = True

    def _check_balanced_sampling(self) -> None:
        if not self.balanced_sampling or self._world_size() < 2:
            return
        # Lightning shards a custom sampler per rank only with its distributed sampler switched on.
        connector = getattr(self.trainer, "_accelerator_connector", None)
        if not getattr(connector, "use_distributed_sampler", True):
            raise UserError(
                "data.balanced_sampling=true on several devices needs Lightning's distributed sampler to "
                "give each device its share: remove trainer.use_distributed_sampler=false, or set "
                "data.balanced_sampling=false."
            )

    def _per_device_batch_size(self) -> int:
        world_size = self._world_size()
        if self.batch_size % world_size:
            raise UserError(
                f"data.batch_size={self.batch_size} is the global batch size and must divide evenly between "
                f"the {world_size} devices; use a multiple of {world_size} (e.g. "
                f"{max(world_size, self.batch_size // world_size * world_size)})."
            )
        return self.batch_size // world_size

    def _world_size(self) -> int:
        trainer = self.trainer
        return int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1

    def _is_global_zero(self) -> bool:
        if self.trainer is None:
            # Before a trainer is attached, the rank Lightning's launcher put in the environment.
            return getattr(rank_zero_only, "rank", 0) == 0
        return bool(getattr(self.trainer, "is_global_zero", True))


def split_record_from_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The split record a data module stored in a loaded checkpoint, or None (a run before records).

    Lightning stores :meth:`BaseDataModule.state_dict` under the data module's class name; any class
    derived from :class:`BaseDataModule` is found.
    """
    for value in checkpoint.values():
        if isinstance(value, Mapping) and is_split_record(value.get(SPLIT_RECORD_KEY)):
            return dict(value[SPLIT_RECORD_KEY])
    return None
