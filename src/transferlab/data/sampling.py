"""Training-set samplers whose draws depend only on (seed, epoch): resumed runs continue exactly."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 32-bit seed derived from the run's seed, the epoch and the process rank."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**32


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of one epoch: a permutation of ``range(num_samples)``, the same on every rank."""
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


class EpochSampler(Sampler[int]):
    """Shuffled (or class-weighted) indices for one epoch, a function of ``(seed, epoch, rank)`` alone.

    Lightning calls :meth:`set_epoch` before every training epoch (also through its distributed sampler
    wrapper). Checkpoints do not hold random-number generators, so a sampler drawing from the global
    generator would shuffle a resumed run differently from the run it continues. This one does not, and
    when the epoch's data starts it also reseeds Python, NumPy and torch from the same value, so that
    augmentation in the main process and dropout draw the same numbers too. (Augmentation inside
    DataLoader worker processes follows the workers' own seeds, which differ in the first resumed epoch.)

    Args:
        num_samples: size of the dataset (and of an epoch).
        seed: the run's seed.
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

    def __iter__(self) -> Iterator[int]:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        value = epoch_seed(self.seed, self.epoch, rank)
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)
        generator = torch.Generator().manual_seed(value)
        if self.weights is None:
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        yield from order.tolist()


def balanced_sampler(labels: Sequence[int], class_counts: Sequence[int], seed: int = 0) -> EpochSampler:
    """A sampler drawing ``len(labels)`` indices with replacement, each weighted by 1 / its class's count.

    Under DDP, Lightning wraps a custom sampler in its ``DistributedSamplerWrapper``, which gives each rank
    its own ``1 / world_size`` share of the indices drawn here (``Trainer(use_distributed_sampler=True)``,
    the default).

    Args:
        labels: class index of every sample of the dataset.
        class_counts: number of samples of each class (all positive for the classes in ``labels``).
        seed: the run's seed (draws depend on it and on the epoch only).

    Returns:
        The sampler; its epoch length is the dataset's size.
    """
    weights = torch.tensor([1.0 / class_counts[label] for label in labels], dtype=torch.double)
    return EpochSampler(len(labels), seed, weights=weights)
