"""Training-set samplers whose draws depend only on (seed, epoch): every rank, every loader worker and every
resumed run draws the same order and the same per-sample augmentation randomness.

Three independent random streams are derived from the run's seed and the epoch:

- the order (:func:`epoch_permutation`, or a class-weighted draw): the same on every DDP rank, which
  Lightning's ``DistributedSamplerWrapper`` then slices, so the ranks together see the epoch once;
- one seed per position in the epoch (:func:`epoch_sample_seeds`), carried by each :class:`SampleIndex` to
  the dataset, which seeds the augmentation of that sample with it (:func:`seeded_randomness`), in the main
  process or in any loader worker, persistent or not;
- the main process's generators (:func:`epoch_seed`), reseeded when an epoch's data starts, per rank, so
  dropout masks differ between ranks but repeat exactly in a resumed run.

All of it is drawn when the epoch's first batch is asked for: :class:`EpochStartDataLoader` makes sure
that happens after Lightning has set the epoch, also with loader workers and on a resumed run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

# Stream numbers: they keep the order, the sample seeds and the process seeds of an epoch independent.
_ORDER_STREAM, _SAMPLE_STREAM, _PROCESS_STREAM = 0, 1, 2


def _stream_seed(stream: int, seed: int, epoch: int, *more: int) -> int:
    """A well-mixed 63-bit seed for one stream of one epoch (NumPy's SeedSequence hashes the inputs)."""
    entropy = [stream, seed % 2**64, epoch, *more]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _generator(stream: int, seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(_stream_seed(stream, seed, epoch))


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The 32-bit seed of the main process's generators for one epoch on one rank (dropout and the like)."""
    return _stream_seed(_PROCESS_STREAM, seed, epoch, rank) % 2**32


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of one epoch: a permutation of ``range(num_samples)``, the same on every rank.

    Args:
        num_samples: size of the dataset.
        seed: the run's seed.
        epoch: the epoch (from 0).

    Returns:
        An ``int64`` tensor of the dataset indices in the order to visit them.
    """
    return torch.randperm(num_samples, generator=_generator(_ORDER_STREAM, seed, epoch))


def epoch_weighted_draw(weights: torch.Tensor, num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """``num_samples`` indices drawn with replacement in proportion to ``weights``, the same on every rank."""
    generator = _generator(_ORDER_STREAM, seed, epoch)
    return torch.multinomial(weights, num_samples, replacement=True, generator=generator)


def epoch_sample_seeds(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """One seed per position of an epoch of ``num_samples``: a function of ``(seed, epoch, position)``.

    Returns:
        An ``int64`` tensor of non-negative seeds.
    """
    return torch.randint(0, 2**62, (num_samples,), generator=_generator(_SAMPLE_STREAM, seed, epoch))


class SampleIndex(int):
    """A dataset index (an ``int``) that also carries the seed of that sample's augmentation.

    Any dataset indexed by ints accepts it unchanged (lists, tensors and arrays treat it as the int it is);
    a dataset that augments reads :attr:`seed` and draws its random numbers under
    :func:`seeded_randomness`, so the result does not depend on which process loads the sample.

    Args:
        index: the dataset index.
        seed: the sample's seed.
    """

    seed: int

    def __new__(cls, index: int, seed: int) -> SampleIndex:
        obj = super().__new__(cls, index)
        obj.seed = int(seed)
        return obj

    def __reduce__(self) -> tuple[type[SampleIndex], tuple[int, int]]:
        # Sent to loader workers by pickling: keep the seed.
        return type(self), (int(self), self.seed)

    def __repr__(self) -> str:
        return f"SampleIndex({int(self)}, seed={self.seed})"


@contextmanager
def seeded_randomness(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's CPU generators from ``seed`` inside, restore them on exit.

    Restoring keeps the caller's stream (e.g. dropout, when samples load in the main process with
    ``num_workers=0``) exactly as if no sample had been loaded, as with loader workers. The CUDA
    generators are not touched.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    torch_state = torch.default_generator.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.default_generator.set_state(torch_state)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class EpochSampler(Sampler[int]):
    """Shuffled (or class-weighted) indices for one epoch, a function of ``(seed, epoch)`` alone.

    Lightning calls :meth:`set_epoch` before every training epoch (also through its distributed sampler
    wrapper, which lists this sampler's epoch on every rank and gives each rank a slice of it: the epoch
    must be, and is, the same on every rank). Checkpoints do not hold random-number generators, so a
    sampler drawing from the global generator would shuffle a resumed run differently from the run it
    continues; this one does not.

    Each index is a :class:`SampleIndex` carrying the seed of its position in the epoch, so augmentation
    draws the same numbers in the main process or any loader worker, and after a resume. When the epoch's
    data starts, the main process's Python, NumPy and torch generators are reseeded from ``(seed, epoch,
    rank)`` too, so that dropout repeats in a resumed run (and differs between ranks).

    Args:
        num_samples: size of the dataset (and of an epoch).
        seed: the run's seed (under DDP, the same on every rank).
        weights: per-sample weights to draw with replacement (class balancing); None = a permutation.
    """

    def __init__(self, num_samples: int, seed: int, weights: torch.Tensor | None = None) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.weights = weights
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each training epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[SampleIndex]:
        value = epoch_seed(self.seed, self.epoch, _rank())
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)
        if self.weights is None:
            order = epoch_permutation(self.num_samples, self.seed, self.epoch)
        else:
            order = epoch_weighted_draw(self.weights, self.num_samples, self.seed, self.epoch)
        seeds = epoch_sample_seeds(self.num_samples, self.seed, self.epoch)
        for index, seed in zip(order.tolist(), seeds.tolist(), strict=True):
            yield SampleIndex(index, seed)


def balanced_sampler(labels: Sequence[int], class_counts: Sequence[int], seed: int = 0) -> EpochSampler:
    """A sampler drawing ``len(labels)`` indices with replacement, each weighted by 1 / its class's count.

    Under DDP, Lightning wraps a custom sampler in its ``DistributedSamplerWrapper``, which gives each rank
    its own ``1 / world_size`` share of the indices drawn here (``Trainer(use_distributed_sampler=True)``,
    the default); the draw is the same on every rank, so the shares together are one draw.

    Args:
        labels: class index of every sample of the dataset.
        class_counts: number of samples of each class (all positive for the classes in ``labels``).
        seed: the run's seed (draws depend on it and on the epoch only).

    Returns:
        The sampler; its epoch length is the dataset's size.
    """
    weights = torch.tensor([1.0 / class_counts[label] for label in labels], dtype=torch.double)
    return EpochSampler(len(labels), seed, weights=weights)


class EpochStartDataLoader(DataLoader):
    """A ``DataLoader`` that starts drawing from its sampler at the first batch, not when iterated.

    With worker processes, a torch data-loader iterator sends the first indices to the workers as soon as
    it is created. Lightning (2.5.3 to at least 2.6.6, its issue #21938) creates the training iterator
    before it calls the sampler's ``set_epoch``, and on a resumed run it trains the first epoch from that
    iterator: that epoch would replay epoch 0's order and sample seeds. This loader creates the real
    iterator on the first ``next()``, after ``set_epoch``, as a loader without workers does anyway.
    Otherwise it is a plain ``DataLoader`` (same arguments; Lightning can rebuild it with its own sampler).
    """

    def __iter__(self) -> Iterator:
        return _StartOnFirstBatch(self)


class _StartOnFirstBatch:
    """The iterator of :class:`EpochStartDataLoader`: creates the loader's own iterator when first used."""

    def __init__(self, loader: DataLoader) -> None:
        self._loader = loader
        self._iterator: Iterator | None = None

    def __iter__(self) -> _StartOnFirstBatch:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = DataLoader.__iter__(self._loader)
        return next(self._iterator)

    def __len__(self) -> int:
        return len(self._loader)
