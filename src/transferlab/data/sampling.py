"""Class-balanced sampling: every class drawn equally often in expectation, whatever its size."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import WeightedRandomSampler


def balanced_sampler(labels: Sequence[int], class_counts: Sequence[int]) -> WeightedRandomSampler:
    """A sampler drawing ``len(labels)`` indices with replacement, each weighted by 1 / its class's count.

    Under DDP, Lightning wraps a custom sampler in its ``DistributedSamplerWrapper``, which gives each rank
    its own ``1 / world_size`` share of the indices drawn here (``Trainer(use_distributed_sampler=True)``,
    the default).

    Args:
        labels: class index of every sample of the dataset.
        class_counts: number of samples of each class (all positive for the classes in ``labels``).

    Returns:
        The sampler; its epoch length is the dataset's size.
    """
    weights = torch.tensor([1.0 / class_counts[label] for label in labels], dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True)
