"""A map-style dataset over a list of ``(image path, class index)`` samples."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from transferlab.data.images import DEFAULT_MAX_IMAGE_PIXELS, load_rgb
from transferlab.data.sampling import seeded_randomness
from transferlab.errors import UserError

log = logging.getLogger(__name__)


class ImageSampleDataset(Dataset):
    """Images read from disk on access, transformed, and returned with their class index.

    A file that cannot be read when it is accessed (deleted, truncated or corrupted since the setup scan,
    or damaged in a way the scan cannot see) does not stop training: with ``substitute_unreadable`` the
    next readable sample of the same class takes its place, and the first such file is logged once per
    process (each loader worker is a process).

    An index may carry a seed (a :class:`~transferlab.data.sampling.SampleIndex`, as the training sampler
    yields): the transform then draws its random numbers from that seed alone, so a sample is augmented
    the same way in the main process or any loader worker, and in a resumed run. A plain int draws from the
    process's generators.

    Args:
        samples: ``(path, class_index)`` pairs.
        class_names: names by class index.
        transform: applied to each PIL RGB image (e.g. from :mod:`transferlab.data.transforms`); None
            returns the PIL image itself.
        max_pixels: largest accepted ``width * height``; None accepts any size.
        min_size: shortest side the transform needs: large JPEGs are decoded at a reduced scale down to
            it (see :func:`~transferlab.data.images.load_rgb`); None decodes at full resolution.
        substitute_unreadable: replace an unreadable image by another of its class instead of raising.

    Attributes:
        samples: the ``(path, class_index)`` pairs, in dataset order.
        class_names: names by class index.
        transform: the current transform (may be replaced, e.g. when the preprocessing changes).
        min_size: as above (may be replaced along with the transform).
        unreadable: indices found unreadable so far in this process.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        class_names: Sequence[str],
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        min_size: int | None = None,
        substitute_unreadable: bool = True,
    ) -> None:
        self.samples: list[tuple[str, int]] = [(str(path), int(label)) for path, label in samples]
        self.class_names: list[str] = list(class_names)
        self.transform = transform
        self.max_pixels = max_pixels
        self.min_size = min_size
        self.substitute_unreadable = substitute_unreadable
        self.unreadable: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = self._load(int(index)) if self.substitute_unreadable else self._read(path)
        if self.transform is None:
            return image, label
        seed = getattr(index, "seed", None)
        if seed is None:
            return self.transform(image), label
        with seeded_randomness(seed):
            return self.transform(image), label

    @property
    def targets(self) -> list[int]:
        """Class index of every sample (the name torchvision datasets use)."""
        return [label for _, label in self.samples]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {len(self.class_names)} classes)"

    def _read(self, path: str) -> Image.Image:
        return load_rgb(path, max_pixels=self.max_pixels, min_size=self.min_size)

    def _load(self, index: int) -> Image.Image:
        if index not in self.unreadable:
            try:
                return self._read(self.samples[index][0])
            except UserError as err:
                self._mark_unreadable(index, err)
        for candidate in self._same_class_after(index):
            if candidate not in self.unreadable:
                try:
                    return self._read(self.samples[candidate][0])
                except UserError as err:
                    self._mark_unreadable(candidate, err)
        raise UserError(
            f"No image of class '{self._name(self.samples[index][1])}' can be read any more (the first was "
            f"{self.samples[index][0]}); the files changed after the run started. Check the data folder."
        )

    def _mark_unreadable(self, index: int, err: UserError) -> None:
        if not self.unreadable:
            log.warning(
                "%s Using another image of class '%s' in its place; further unreadable images are replaced "
                "without a message.",
                err,
                self._name(self.samples[index][1]),
            )
        self.unreadable.add(index)

    def _same_class_after(self, index: int) -> list[int]:
        # In dataset order after ``index``, wrapping round: deterministic, and only searched after a failure.
        label = self.samples[index][1]
        order = [*range(index + 1, len(self.samples)), *range(index)]
        return [i for i in order if self.samples[i][1] == label]

    def _name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)
