"""A map-style dataset over a list of ``(image path, class index)`` samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from transferlab.data.images import load_rgb


class ImageSampleDataset(Dataset):
    """Images read from disk on access, transformed, and returned with their class index.

    Args:
        samples: ``(path, class_index)`` pairs.
        class_names: names by class index.
        transform: applied to each PIL RGB image (e.g. from :mod:`transferlab.data.transforms`); None
            returns the PIL image itself.

    Attributes:
        samples: the ``(path, class_index)`` pairs, in dataset order.
        class_names: names by class index.
        transform: the current transform (may be replaced, e.g. when the preprocessing changes).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        class_names: Sequence[str],
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        self.samples: list[tuple[str, int]] = [(str(path), int(label)) for path, label in samples]
        self.class_names: list[str] = list(class_names)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = load_rgb(path)
        return (self.transform(image) if self.transform is not None else image), label

    @property
    def targets(self) -> list[int]:
        """Class index of every sample (the name torchvision datasets use)."""
        return [label for _, label in self.samples]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {len(self.class_names)} classes)"
