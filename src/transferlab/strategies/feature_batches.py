"""Batches of cached features served in the training process itself, read from the cache file by row.

A cached epoch of a linear head is a few matrix products: worker processes and per-sample collation
would cost far more than the arithmetic. :class:`FeatureBatches` is a plain iterable of
``(features, class_indices)`` batches that Lightning accepts as a data loader. Lightning only injects its
distributed sampler into ``torch.utils.data.DataLoader`` objects (``_DataConnector._prepare_dataloader``
returns anything else unchanged), so under DDP :class:`EpochBatches` shards each epoch across ranks
itself: every rank gets a disjoint share, the shares cover the epoch exactly once, and every rank takes
the same number of steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist

from transferlab.data.sampling import epoch_permutation, epoch_seed, epoch_weighted_draw
from transferlab.errors import UserError
from transferlab.strategies.feature_cache import FeatureFile


class FeatureSplit:
    """The cached features of one split with their labels; the features are attached once computed.

    Keeps the image ``samples`` and ``class_names`` too, for whoever wants to show the images.

    Args:
        samples: ``(image path, class index)`` pairs, in the row order of the features.
        class_names: names by class index.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], class_names: Sequence[str]) -> None:
        self.samples = [(str(path), int(label)) for path, label in samples]
        self.class_names = list(class_names)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.long)
        self.features: FeatureFile | np.ndarray | None = None
        self._positions: dict[tuple[str, int], int] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def attach(self, features: FeatureFile | np.ndarray) -> None:
        """Use ``features``: one row per sample, an open cache file or an array."""
        if len(features) != len(self):
            raise ValueError(f"{len(features)} feature rows for {len(self)} samples")
        self.features = features

    def release(self) -> None:
        """Close the cache file, if the features come from one."""
        if isinstance(self.features, FeatureFile):
            self.features.close()
        self.features = None

    def indices_of(self, samples: Sequence[tuple[str, int]]) -> torch.Tensor | None:
        """Positions of ``samples`` in this split, or None if one of them is not in it."""
        if self._positions is None:
            self._positions = {sample: index for index, sample in enumerate(self.samples)}
        positions = [self._positions.get((str(path), int(label))) for path, label in samples]
        return None if None in positions else torch.tensor(positions, dtype=torch.long)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The features (float32, one row per index) and class indices of ``indices``, in that order."""
        if self.features is None:
            raise RuntimeError("The features of this split are not computed yet (see FeatureSplit.attach).")
        rows = self.features[indices.numpy()]  # a copy of just these rows
        return torch.from_numpy(rows), self.labels[indices]


class EpochBatches:
    """Index batches of one rank for each epoch: its share of the epoch's order, the same on every rank.

    The order is :func:`~transferlab.data.sampling.epoch_permutation` of ``(seed, epoch)`` when
    shuffling, class-weighted draws with replacement from the same seed when ``weights`` are given, and
    ``0..n-1`` when ``seed`` is None (evaluation). Rank ``r`` of ``W`` takes positions ``r, r + W, ...``:
    step ``i`` of all ranks together covers positions ``[i * W * b, (i + 1) * W * b)``, the same samples
    as step ``i`` of a one-process run with the global batch. When the number of samples does not divide
    evenly, a rank's last batch may hold one sample more than ``batch_size``, so that every rank takes the
    same number of steps (DDP needs that) and no sample is dropped or repeated.

    When shuffling, each epoch also reseeds torch's global generator from ``(seed, epoch, rank)``, so
    dropout in the head draws the same numbers in a resumed run as in the run it continues.

    Args:
        num_samples: size of the split.
        batch_size: samples per step on one rank.
        seed: the run's seed for the training order, or None for the fixed order.
        weights: per-sample weights for class-balanced draws (with ``seed``), or None.
        rank: this process's rank (default: from torch.distributed, else 0).
        world_size: the number of processes (default: from torch.distributed, else 1).

    Raises:
        UserError: fewer samples than processes.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int | None = None,
        weights: torch.Tensor | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.world_size = (
            world_size if world_size is not None else (dist.get_world_size() if distributed else 1)
        )
        if weights is not None and seed is None:
            raise ValueError("class-weighted draws need a seed")
        if num_samples < self.world_size:
            raise UserError(
                f"{num_samples} cached samples cannot be shared between {self.world_size} processes: use "
                "fewer devices or more images."
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.weights = weights
        self.epoch = 0
        # The smallest share sets the number of steps; a larger share puts its extra sample in its last batch.
        self.num_batches = math.ceil((num_samples // self.world_size) / batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each training epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def order(self) -> torch.Tensor:
        """The whole epoch's order of sample indices (all ranks)."""
        if self.seed is None:
            return torch.arange(self.num_samples)
        if self.weights is None:
            return epoch_permutation(self.num_samples, self.seed, self.epoch)
        return epoch_weighted_draw(self.weights, self.num_samples, self.seed, self.epoch)

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.seed is not None:
            torch.manual_seed(epoch_seed(self.seed, self.epoch, self.rank))
        share = self.order()[self.rank :: self.world_size]
        size = self.batch_size
        for step in range(self.num_batches - 1):
            yield share[step * size : (step + 1) * size]
        yield share[(self.num_batches - 1) * size :]


class FeatureBatches:
    """An iterable of ``(features, class_indices)`` batches that Lightning takes as a data loader.

    Args:
        split: the features and labels.
        batches: the index batches; exposed as ``sampler``, where Lightning looks for ``set_epoch``.
    """

    def __init__(self, split: FeatureSplit, batches: EpochBatches) -> None:
        self.split = split
        self.sampler = batches
        # As on a DataLoader without automatic batching (Lightning reads it wherever it finds a sampler).
        self.batch_sampler = None

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for indices in self.sampler:
            yield self.split.batch(indices)
