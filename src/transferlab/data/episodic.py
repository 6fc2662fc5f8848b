"""Few-shot episodes: class-disjoint splits of an image folder, an episodic sampler, and the data module.

An episode is an ``n_way``-way ``k_shot``-shot task: ``n_way`` classes drawn from one split, with
``k_shot`` support and ``q_query`` query images each, labelled ``0 .. n_way - 1`` within the episode.
Training, validation and test use different classes (Snell et al., 2017): the model is tested on
classes it never saw.

Episodes are drawn in the main process by :class:`EpisodeSampler` as index tuples, a function of
``(seed, epoch)`` alone; loader workers only read the images of the episode they are handed. Under DDP,
Lightning's distributed sampler wrapper gives each rank its own share of the epoch's episodes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset, Sampler

from transferlab.data.class_counts import count_per_class
from transferlab.data.dataset import ImageSampleDataset
from transferlab.data.folders import SPLITS, list_classes, list_samples
from transferlab.data.glyphs import GLYPHS_DEMO, prepare_glyphs
from transferlab.data.images import DEFAULT_MAX_IMAGE_PIXELS
from transferlab.data.records import relative_samples, write_record
from transferlab.data.scan import report_unreadable, scan_samples
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

SPLIT_FILE = "split.json"
SPLIT_FILE_VERSION = 1
FEWSHOT_DEMOS: tuple[str, ...] = (GLYPHS_DEMO,)
"""Names accepted by ``data.demo`` of the few-shot data module."""

Sample = tuple[str, int]

# Streams of the episode generator: training, validation and each test setting draw independently.
_TRAIN_STREAM, _VAL_STREAM, _TEST_STREAM = 0, 1, 2


# ---------------------------------------------------------------------------------------------- episodes


@dataclass(frozen=True)
class EpisodeShape:
    """The size of an episode: ``n_way`` classes, each with ``k_shot`` support and ``q_query`` query images.

    Raises:
        UserError: a number is not a whole number in range (``n_way >= 2``, ``k_shot >= 1``,
            ``q_query >= 1``).
    """

    n_way: int
    k_shot: int
    q_query: int

    def __post_init__(self) -> None:
        for name, value, least in (
            ("n_way", self.n_way, 2),
            ("k_shot", self.k_shot, 1),
            ("q_query", self.q_query, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UserError(f"data.{name} must be a whole number >= {least}, got {value!r}.")

    @property
    def per_class(self) -> int:
        """Images an episode takes from each of its classes."""
        return self.k_shot + self.q_query

    @property
    def name(self) -> str:
        """``"5way_1shot"``: the metric prefix of this shape."""
        return f"{self.n_way}way_{self.k_shot}shot"

    def check_fits(
        self, split: str, class_names: Sequence[str], counts: Sequence[int], settings: str
    ) -> None:
        """Raise one clear error if the split cannot give episodes of this shape.

        Args:
            split: the split's name, for the message.
            class_names: the split's classes.
            counts: usable images per class of the split.
            settings: the config keys that set this shape, for the message.

        Raises:
            UserError: fewer than ``n_way`` classes, or classes with fewer than ``k_shot + q_query`` images.
        """
        if len(class_names) < self.n_way:
            raise UserError(
                f"The {split} split has {len(class_names)} classes, fewer than the {self.n_way} an episode "
                f"needs ({settings}). Lower the way, or give the {split} split more classes."
            )
        small = [
            (name, count) for name, count in zip(class_names, counts, strict=True) if count < self.per_class
        ]
        if small:
            shown = ", ".join(f"'{name}' ({count})" for name, count in small[:5])
            more = f" and {len(small) - 5} more" if len(small) > 5 else ""
            raise UserError(
                f"{len(small)} class(es) of the {split} split have fewer than k_shot + q_query = "
                f"{self.k_shot} + {self.q_query} = {self.per_class} usable images ({settings}): "
                f"{shown}{more}. "
                "Lower the shots or queries, add images, or remove those class folders."
            )


class Episode(NamedTuple):
    """One episode as the model receives it.

    Attributes:
        support: ``(n_way * k_shot, ...)`` images or features, class by class.
        support_labels: ``(n_way * k_shot,)`` episode labels in ``[0, n_way)``.
        query: ``(n_way * q_query, ...)`` images or features, class by class.
        query_labels: ``(n_way * q_query,)`` episode labels.
        classes: ``(n_way,)`` the split's class index of each episode label.
        index: ``()`` the episode's number within its epoch (or evaluation set).
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    classes: torch.Tensor
    index: torch.Tensor


class EpisodeSampler(Sampler[tuple[int, tuple[int, ...]]]):
    """Draws episodes as ``(episode number, dataset indices)``, a function of ``(seed, epoch)`` alone.

    The indices come class by class: for each of the ``n_way`` classes (in random order, which is the
    order of the episode labels), ``k_shot`` support then ``q_query`` query images, all different. Every
    rank draws the same list; under DDP Lightning's ``DistributedSamplerWrapper`` hands each rank its own
    share of it (and forwards :meth:`set_epoch`).

    Args:
        labels: the class index of every item of the dataset.
        shape: the episode size.
        episodes: episodes per epoch.
        seed: seed of the draw.
        stream: separates independent draws from the same seed (training, validation, test settings).
        fixed: draw the same episodes every epoch (evaluation) instead of new ones per epoch.

    Raises:
        UserError: the labels do not allow the shape (see :meth:`EpisodeShape.check_fits`).
    """

    def __init__(
        self,
        labels: Sequence[int],
        shape: EpisodeShape,
        episodes: int,
        seed: int,
        *,
        stream: int = _TRAIN_STREAM,
        fixed: bool = False,
    ) -> None:
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise UserError(f"The number of episodes must be a whole number >= 1, got {episodes!r}.")
        labels_array = np.asarray(list(labels), dtype=np.int64)
        present = np.unique(labels_array)
        self.by_class: list[np.ndarray] = [np.flatnonzero(labels_array == c) for c in present]
        self.shape = shape
        self.episodes = episodes
        self.seed = int(seed)
        self.stream = stream
        self.fixed = fixed
        self.epoch = 0
        names = [str(c) for c in present]
        shape.check_fits("sampled", names, [len(i) for i in self.by_class], "episode sampler")

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch; a fixed sampler ignores it."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.episodes

    def __iter__(self) -> Iterator[tuple[int, tuple[int, ...]]]:
        epoch = 0 if self.fixed else self.epoch
        rng = np.random.default_rng([self.seed, self.stream, epoch])
        n_way, per_class = self.shape.n_way, self.shape.per_class
        for number in range(self.episodes):
            classes = rng.choice(len(self.by_class), size=n_way, replace=False)
            indices: list[int] = []
            for c in classes:
                members = self.by_class[c]
                indices.extend(members[rng.choice(len(members), size=per_class, replace=False)].tolist())
            yield number, tuple(indices)


class EpisodeDataset(Dataset):
    """Builds an :class:`Episode` from the indices an :class:`EpisodeSampler` drew.

    Use it with ``DataLoader(dataset, sampler=EpisodeSampler(...), batch_size=None)``: each sampler item
    is one whole episode.

    Args:
        base: the split's dataset, returning ``(image or feature tensor, class index)``; a dataset with a
            ``features`` tensor (the feature cache) is read by indexing that tensor directly.
        shape: the episode size the sampler uses.
    """

    def __init__(self, base: Dataset, shape: EpisodeShape) -> None:
        self.base = base
        self.shape = shape

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, Sequence[int]]) -> Episode:
        number, indices = item
        n_way, k_shot, per_class = self.shape.n_way, self.shape.k_shot, self.shape.per_class
        if len(indices) != n_way * per_class:
            raise ValueError(f"Episode {number} has {len(indices)} indices, expected {n_way} x {per_class}.")
        features = getattr(self.base, "features", None)
        if isinstance(features, torch.Tensor):
            x = features[torch.as_tensor(list(indices))]
            targets = self.base.targets  # type: ignore[attr-defined]
            labels = torch.as_tensor([targets[i] for i in indices])
        else:
            items = [self.base[i] for i in indices]
            x = torch.stack([torch.as_tensor(image) for image, _ in items])
            labels = torch.as_tensor([label for _, label in items])
        blocks = labels.view(n_way, per_class)
        if not bool((blocks == blocks[:, :1]).all()) or len(set(blocks[:, 0].tolist())) != n_way:
            raise ValueError(f"Episode {number} does not hold {n_way} different classes in blocks.")
        x = x.view(n_way, per_class, *x.shape[1:])
        episode_labels = torch.arange(n_way)
        return Episode(
            support=x[:, :k_shot].reshape(n_way * k_shot, *x.shape[2:]),
            support_labels=episode_labels.repeat_interleave(k_shot),
            query=x[:, k_shot:].reshape(n_way * self.shape.q_query, *x.shape[2:]),
            query_labels=episode_labels.repeat_interleave(self.shape.q_query),
            classes=blocks[:, 0].clone(),
            index=torch.tensor(number),
        )


# ---------------------------------------------------------------------------------------------- splits


@dataclass
class ClassSplits:
    """A few-shot data root split by class: each split has its own classes and their images.

    Attributes:
        root: the data root, absolute.
        presplit: True for ``root/{train,val,test}/<class>/``, False for ``root/<class>/`` split by class.
        classes: the class names of each split (sorted); no name is in two splits.
        samples: ``(path, class index within the split)`` of each split, sorted by path.
    """

    root: Path
    presplit: bool
    classes: dict[str, list[str]]
    samples: dict[str, list[Sample]]

    def counts(self, split: str) -> list[int]:
        """Images per class of ``split``, in class order."""
        return count_per_class(self.samples[split], len(self.classes[split]))

    def record(self, **settings: Any) -> dict[str, Any]:
        """The JSON document of ``split.json``: settings, classes and image paths of each split."""
        return {
            "version": SPLIT_FILE_VERSION,
            "kind": "class_disjoint",
            "root": str(self.root),
            **settings,
            "classes": {split: list(names) for split, names in self.classes.items()},
            "splits": {split: relative_samples(items, self.root) for split, items in self.samples.items()},
        }


def split_classes(
    class_names: Sequence[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Split a list of classes into train/val/test classes with a seeded shuffle.

    Val gets ``round(n * val_fraction)`` classes and test ``round(n * test_fraction)``, at least one
    each; train gets the rest. The result depends on the set of names and the seed only.

    Raises:
        UserError: fractions out of range, or too few classes to give every split one.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise UserError(f"data.{name} (a share of the classes) must be in (0, 1), got {value!r}.")
    if val_fraction + test_fraction >= 1:
        raise UserError(
            f"data.val_fraction + data.test_fraction = {val_fraction} + {test_fraction} must be below 1 to "
            "leave training classes."
        )
    names = sorted(class_names)
    n = len(names)
    n_val = max(1, int(n * val_fraction + 0.5))
    n_test = max(1, int(n * test_fraction + 0.5))
    if n - n_val - n_test < 1:
        raise UserError(
            f"{n} class folders are too few to split by class into train, val and test (each needs at "
            "least one class, and an episode needs data.n_way of them). Add classes."
        )
    random.Random(seed).shuffle(names)
    parts = {"val": names[:n_val], "test": names[n_val : n_val + n_test], "train": names[n_val + n_test :]}
    return {split: sorted(parts[split]) for split in SPLITS}


def build_class_splits(
    root: str | Path,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    strict: bool = False,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    report: bool = True,
) -> ClassSplits:
    """Scan a few-shot data root and split it by class.

    ``root/{train,val,test}/<class>/*`` is used as it is, and its splits must hold different classes;
    ``root/<class>/*`` is split by class (:func:`split_classes`). Unreadable images are reported once
    and skipped (an error with ``strict``).

    Args:
        root: the data root.
        val_fraction: share of the classes for validation (class folders only).
        test_fraction: share of the classes for test (class folders only).
        split_seed: seed of that split.
        strict: make unreadable images an error.
        max_image_pixels: largest accepted ``width * height``; None turns the check off.
        report: log the unreadable images (turned off on all but one DDP rank).

    Raises:
        UserError: the root is missing or has no class folders; only some of train/, val/, test/; a class
            in two splits; a class without usable images; too few classes to split.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "not found"
        raise UserError(
            f"Data root {what}: {root}. Set data.root to a folder of class folders (root/<class>/*), or "
            "root/train/<class>/, root/val/<class>/ and root/test/<class>/ holding different classes."
        )
    present = [split for split in SPLITS if (root / split).is_dir()]
    if present:
        missing = [split for split in SPLITS if split not in present]
        if missing:
            raise UserError(
                f"Data root {root} has {', '.join(s + '/' for s in present)} but no "
                f"{', '.join(s + '/' for s in missing)}. Create them (each with its own classes), or put "
                "every class folder directly in the root so that transferlab splits the classes itself."
            )
        classes = {split: list_classes(root / split) for split in SPLITS}
        _check_disjoint(root, classes)
        folders = {split: root / split for split in SPLITS}
    else:
        every = list_classes(root)
        if not every:
            raise UserError(
                f"Data root {root} has no class folders. Expected one folder of images per class, "
                "root/<class>/*, or root/{train,val,test}/<class>/* with different classes per split."
            )
        classes = split_classes(every, val_fraction, test_fraction, split_seed)
        folders = {split: root for split in SPLITS}
    for split in SPLITS:
        if not classes[split]:
            raise UserError(f"{folders[split]} has no class folders; the {split} split needs classes.")
    listed = {split: list_samples(folders[split], classes[split]) for split in SPLITS}
    scan = scan_samples([s for items in listed.values() for s in items], max_pixels=max_image_pixels)
    if strict or report:
        report_unreadable(scan, strict=strict)
    bad = {path for path, _ in scan.unreadable}
    samples = {split: [s for s in items if s[0] not in bad] for split, items in listed.items()}
    splits = ClassSplits(root=root, presplit=bool(present), classes=classes, samples=samples)
    for split in SPLITS:
        for name, count in zip(classes[split], splits.counts(split), strict=True):
            if count == 0:
                raise UserError(
                    f"Class folder {folders[split] / name} has no usable images: every image file in it "
                    f"is unreadable ({scan.describe()}). Replace them with readable images, or remove the "
                    "folder."
                )
    return splits


def _check_disjoint(root: Path, classes: Mapping[str, list[str]]) -> None:
    shared = []
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1 :]:
            shared += [(name, first, second) for name in sorted(set(classes[first]) & set(classes[second]))]
    if shared:
        shown = "; ".join(f"'{name}' in {a}/ and {b}/" for name, a, b in shared[:5])
        more = f"; and {len(shared) - 5} more" if len(shared) > 5 else ""
        raise UserError(
            f"Few-shot splits must hold different classes, but in {root}: {shown}{more}. Move each class to "
            "one split, or put every class folder directly in the root (without train/val/test) so that "
            "transferlab splits the classes itself."
        )


# ---------------------------------------------------------------------------------------------- data module


class EpisodicDataModule(L.LightningDataModule):
    """Episodes over an image folder whose train, val and test splits hold different classes.

    Training draws ``episodes_per_epoch`` new ``n_way``-way ``k_shot``-shot episodes (``q_query`` queries
    per class) each epoch from the training classes, as a function of ``(episode_seed, epoch)``.
    Validation uses ``val_episodes`` fixed episodes of the same shape from the validation classes. Test
    has one loader per entry of ``test_shots``: ``test_episodes`` fixed ``test_way``-way episodes each.
    Val and test episodes depend on ``eval_seed`` only, so runs are compared on the same episodes.

    Every split is checked at :meth:`setup`, before any training: a split with fewer classes than the way,
    or a class with fewer images than shots + queries, is one error naming them.

    There is no fixed class set: :attr:`class_names` and :attr:`class_counts` are None.

    Args:
        root: the data folder (see :func:`build_class_splits`).
        preprocessing: the backbone's preprocessing, or None to set it later with :meth:`set_preprocessing`.
        n_way, k_shot, q_query: the training (and validation) episode shape.
        episodes_per_epoch: training episodes per epoch, over all devices together.
        val_episodes: validation episodes.
        test_episodes: test episodes per shot setting.
        test_way: classes per test episode.
        test_shots: support images per class of each test setting, e.g. ``[1, 5]``.
        test_query: query images per class of test episodes.
        episode_seed: seed of the training episodes (the run's seed).
        eval_seed: seed of the validation and test episodes.
        val_fraction, test_fraction: shares of the classes for val and test when ``root`` is not split.
        split_seed: seed of that class split.
        split_dir: folder to write ``split.json`` to (the run folder), or None.
        demo: ``"glyphs"`` writes the font-glyph dataset (:mod:`transferlab.data.glyphs`) into an empty
            ``root`` in :meth:`prepare_data`, or None.
        num_workers: loader worker processes reading images (episodes on cached features need none).
        pin_memory: pin batches in page-locked memory.
        persistent_workers: keep the workers between epochs.
        augmentation: training augmentation preset (images only: cached features are never augmented).
        strict: make unreadable images an error instead of skipping them.
        max_image_pixels: largest accepted ``width * height``; None turns the check off.

    Raises:
        UserError: an invalid argument (checked here, before anything is read).
    """

    def __init__(
        self,
        root: str,
        preprocessing: Preprocessing | Mapping[str, Any] | None = None,
        n_way: int = 5,
        k_shot: int = 5,
        q_query: int = 10,
        episodes_per_epoch: int = 200,
        val_episodes: int = 200,
        test_episodes: int = 1000,
        test_way: int = 5,
        test_shots: Sequence[int] = (1, 5),
        test_query: int = 15,
        episode_seed: int | None = 0,
        eval_seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        split_dir: str | None = None,
        demo: str | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        augmentation: str = "none",
        strict: bool = False,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        super().__init__()
        if not root:
            raise UserError("data.root is not set: give the folder holding the class folders.")
        if demo is not None and demo not in FEWSHOT_DEMOS:
            raise UserError(
                f"Unknown few-shot demo {demo!r}; set data.demo to one of {FEWSHOT_DEMOS} or null."
            )
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise UserError(f"data.num_workers must be 0 or more, got {num_workers!r}.")
        self.root = Path(root).expanduser()
        self.train_shape = EpisodeShape(n_way, k_shot, q_query)
        shots = [test_shots] if isinstance(test_shots, int) else list(test_shots)
        if not shots:
            raise UserError("data.test_shots is empty: give at least one shot count, e.g. [1, 5].")
        self.test_shapes = [EpisodeShape(test_way, shot, test_query) for shot in shots]
        for name, value in (
            ("episodes_per_epoch", episodes_per_epoch), ("val_episodes", val_episodes),
            ("test_episodes", test_episodes),
        ):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"data.{name} must be a whole number >= 1, got {value!r}.")
        self.episodes_per_epoch, self.val_episodes, self.test_episodes = (
            episodes_per_epoch, val_episodes, test_episodes,
        )  # fmt: skip
        # None (a run without a seed): a fresh random seed, so that runs still differ.
        self.episode_seed = int(episode_seed) if episode_seed is not None else random.randrange(2**31)
        self.eval_seed = int(eval_seed)
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, int(split_seed)
        self.split_dir = Path(split_dir).expanduser() if split_dir is not None else None
        self.demo = demo
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.augmentation = check_augmentation(augmentation)
        self.strict = bool(strict)
        self.max_image_pixels = max_image_pixels
        self.splits: ClassSplits | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._preprocessing: Preprocessing | None = None
        if preprocessing is not None:
            self.set_preprocessing(preprocessing)

    # ------------------------------------------------------------------ contract used by the entry points

    @property
    def preprocessing(self) -> Preprocessing | None:
        """The preprocessing in use, or None before :meth:`set_preprocessing`."""
        return self._preprocessing

    def set_preprocessing(self, preprocessing: Preprocessing | Mapping[str, Any]) -> None:
        """Use the backbone's preprocessing for the image transforms (also on datasets already built)."""
        self._preprocessing = as_preprocessing(preprocessing)
        if self.train_set is not None:
            self._apply_transforms()

    @property
    def class_names(self) -> None:
        """None: a few-shot model has no fixed classes (each episode brings its own)."""
        return None

    @property
    def class_counts(self) -> None:
        """None: there is no fixed class set to count images for."""
        return None

    @property
    def split_class_names(self) -> dict[str, list[str]]:
        """The class names of each split (scans the folder on first use)."""
        return dict(self._build().classes)

    # ------------------------------------------------------------------ Lightning hooks

    def prepare_data(self) -> None:
        """Write the demo data into ``root`` if ``demo`` is set and ``root`` holds no data yet."""
        if self.demo == GLYPHS_DEMO and not prepare_glyphs(self.root):
            log.info("data.root %s already holds data; not writing the %s demo there", self.root, self.demo)

    def setup(self, stage: str | None = None) -> None:
        """Scan and split the folder, check every split fits its episodes, and build the datasets.

        Raises:
            UserError: no preprocessing was set, or see :func:`build_class_splits` and
                :meth:`EpisodeShape.check_fits`.
        """
        if self._preprocessing is None:
            raise UserError(
                "EpisodicDataModule has no preprocessing: call set_preprocessing(...) with the backbone's "
                "preprocessing before setup()."
            )
        if self.train_set is not None:
            return  # Lightning calls setup once per stage; nothing depends on the stage
        splits = self._build()
        self.train_shape.check_fits(
            "train", splits.classes["train"], splits.counts("train"), self._train_settings()
        )
        self.train_shape.check_fits(
            "val", splits.classes["val"], splits.counts("val"), self._train_settings()
        )
        for shape in self.test_shapes:
            settings = f"data.test_way={shape.n_way}, data.test_shots, data.test_query={shape.q_query}"
            shape.check_fits("test", splits.classes["test"], splits.counts("test"), settings)
        datasets = {
            split: ImageSampleDataset(
                splits.samples[split], splits.classes[split], max_pixels=self.max_image_pixels
            )
            for split in SPLITS
        }
        self.train_set, self.val_set, self.test_set = datasets["train"], datasets["val"], datasets["test"]
        self._apply_transforms()
        if not splits.presplit and self.split_dir is not None and self._is_global_zero():
            record = splits.record(
                val_fraction=self.val_fraction, test_fraction=self.test_fraction, split_seed=self.split_seed
            )
            write_record(record, self.split_dir / SPLIT_FILE)
        if self._is_global_zero():
            counts = {split: len(splits.classes[split]) for split in SPLITS}
            images = {split: len(splits.samples[split]) for split in SPLITS}
            log.info("Few-shot classes per split: %s; images: %s", counts, images)

    def train_dataloader(self) -> DataLoader:
        """``episodes_per_epoch`` new training episodes each epoch."""
        sampler = EpisodeSampler(
            self._targets(self.train_set, "train"),
            self.train_shape,
            self.episodes_per_epoch,
            self.episode_seed,
        )
        return self._loader(self.train_set, self.train_shape, sampler)

    def val_dataloader(self) -> DataLoader:
        """``val_episodes`` fixed validation episodes of the training shape."""
        sampler = EpisodeSampler(
            self._targets(self.val_set, "val"), self.train_shape, self.val_episodes, self.eval_seed,
            stream=_VAL_STREAM, fixed=True,
        )  # fmt: skip
        return self._loader(self.val_set, self.train_shape, sampler)

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per test shot setting, ``test_episodes`` fixed episodes each."""
        loaders = []
        for number, shape in enumerate(self.test_shapes):
            sampler = EpisodeSampler(
                self._targets(self.test_set, "test"), shape, self.test_episodes, self.eval_seed,
                stream=_TEST_STREAM + number, fixed=True,
            )  # fmt: skip
            loaders.append(self._loader(self.test_set, shape, sampler))
        return loaders

    # ------------------------------------------------------------------ helpers

    def _build(self) -> ClassSplits:
        if self.splits is None:
            self.splits = build_class_splits(
                self.root, val_fraction=self.val_fraction, test_fraction=self.test_fraction,
                split_seed=self.split_seed, strict=self.strict, max_image_pixels=self.max_image_pixels,
                report=self._is_global_zero(),
            )  # fmt: skip
        return self.splits

    def _train_settings(self) -> str:
        shape = self.train_shape
        return f"data.n_way={shape.n_way}, data.k_shot={shape.k_shot}, data.q_query={shape.q_query}"

    def _apply_transforms(self) -> None:
        assert self._preprocessing is not None
        eval_transform = build_eval_transform(self._preprocessing)
        for split, dataset in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set)):
            if not isinstance(dataset, ImageSampleDataset):
                continue  # already replaced by cached features
            if split == "train":
                dataset.transform = build_train_transform(self._preprocessing, augmentation=self.augmentation)
                dataset.min_size = min_decode_size(self._preprocessing, augmentation=self.augmentation)
            else:
                dataset.transform = eval_transform
                dataset.min_size = min_decode_size(self._preprocessing)

    @staticmethod
    def _targets(dataset: Dataset | None, split: str) -> list[int]:
        if dataset is None:
            raise UserError(f"The {split} episodes are not ready: call setup() before {split}_dataloader().")
        return list(dataset.targets)  # type: ignore[attr-defined]

    def _loader(self, dataset: Dataset | None, shape: EpisodeShape, sampler: EpisodeSampler) -> DataLoader:
        assert dataset is not None
        # Cached features are one tensor in memory: worker processes would only add start-up and copying.
        workers = 0 if isinstance(getattr(dataset, "features", None), torch.Tensor) else self.num_workers
        return DataLoader(
            EpisodeDataset(dataset, shape),
            sampler=sampler,
            batch_size=None,  # each sampler item is a whole episode
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers > 0,
            multiprocessing_context=loader_worker_context(workers),
        )

    def _is_global_zero(self) -> bool:
        trainer = self.trainer
        if trainer is None:
            # Before a trainer is attached, the rank Lightning's launcher put in the environment.
            return getattr(rank_zero_only, "rank", 0) == 0
        return bool(getattr(trainer, "is_global_zero", True))
