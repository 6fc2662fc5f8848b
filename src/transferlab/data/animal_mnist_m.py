"""A real domain shift from installed packages: Animal-MNIST silhouettes -> silhouettes on photos.

The MNIST -> MNIST-M construction of Ganin & Lempitsky (2015), applied to the ten animals of
Animal-MNIST: a target image is a silhouette blended into a random 28 x 28 patch of a real colour photo,
``|patch - silhouette|`` per channel, so the animal's outline stays where it was while colour, texture
and contrast come from the photo. Source and target use disjoint silhouettes (a seeded half of each
class's images each), so the target is not the source in disguise. The photos are the two JPEGs that
scikit-learn ships (``china.jpg``, ``flower.jpg``; scikit-learn is installed with animal-mnist), read
from the package folder without importing it.

Source: ``<source_root>/<animal>/<index>.png`` (28 x 28 grayscale); target: ``<target_root>/<animal>/
<index>.png`` (28 x 28 RGB; the labels serve only to measure, never to train).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.data.demo import ANIMAL_MNIST_CLASSES, load_animal_mnist
from transferlab.data.domain_demos import write_class_tree
from transferlab.errors import UserError

PER_CLASS = 300
"""Images of each animal in each domain (3,000 per domain)."""

PHOTO_FILES: tuple[str, ...] = ("china.jpg", "flower.jpg")
"""scikit-learn's sample photos (427 x 640 RGB) the target's backgrounds are cut from."""

_FORMAT = 1  # bump when the written images change, so old folders are not silently reused


def photo_paths() -> list[Path]:
    """The sample photos inside the installed scikit-learn.

    Raises:
        UserError: scikit-learn or one of its photos is missing.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "The animal_mnist_m demo needs the photos scikit-learn ships, and scikit-learn is not installed. "
            "Install the project's demo extra (`make env`, or `pip install scikit-learn`)."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "images"
    paths = [folder / name for name in PHOTO_FILES]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"scikit-learn's sample photos {missing} are missing from {folder}. Reinstall it.")
    return paths


def blend_into_photos(silhouettes: np.ndarray, photos: list[np.ndarray], seed: int) -> np.ndarray:
    """Each ``(h, w)`` silhouette blended into a random patch of a random photo: ``(n, h, w, 3)`` uint8.

    Args:
        silhouettes: uint8 ``(n, h, w)`` grayscale images.
        photos: uint8 ``(H, W, 3)`` photos, each larger than a silhouette.
        seed: seed of the photo and patch chosen for each image.
    """
    rng = np.random.default_rng(seed)
    n, height, width = silhouettes.shape
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for index, silhouette in enumerate(silhouettes):
        photo = photos[rng.integers(len(photos))]
        y = rng.integers(photo.shape[0] - height + 1)
        x = rng.integers(photo.shape[1] - width + 1)
        patch = photo[y : y + height, x : x + width].astype(np.int16)
        out[index] = np.abs(patch - silhouette[..., None].astype(np.int16)).astype(np.uint8)
    return out


def split_silhouettes(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint indices of ``per_class`` source and ``per_class`` target images of each class, sorted.

    Raises:
        UserError: a class has fewer than ``2 * per_class`` images.
    """
    rng = np.random.default_rng(seed)
    source, target = [], []
    for label in range(len(ANIMAL_MNIST_CLASSES)):
        order = rng.permutation(np.flatnonzero(labels == label))
        if len(order) < 2 * per_class:
            raise UserError(
                f"Animal-MNIST has {len(order)} images of {ANIMAL_MNIST_CLASSES[label]}; the demo needs "
                f"{2 * per_class} (per_class={per_class} in each domain)."
            )
        source.append(order[:per_class])
        target.append(order[per_class : 2 * per_class])
    return np.sort(np.concatenate(source)), np.sort(np.concatenate(target))


def write_animal_mnist_m(
    source_root: str | os.PathLike[str],
    target_root: str | os.PathLike[str],
    per_class: int = PER_CLASS,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write the silhouettes to ``source_root`` and the blended images to ``target_root``.

    Returns:
        Both roots, absolute.
    """
    parameters = {"format": _FORMAT, "per_class": per_class, "seed": seed}

    def chosen() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        images, labels = load_animal_mnist()
        source, target = split_silhouettes(labels, per_class, seed)
        return images[source], labels[source], images[target], labels[target]

    def load_source() -> tuple[np.ndarray, np.ndarray]:
        images, labels, _, _ = chosen()
        return images, labels

    def load_target() -> tuple[np.ndarray, np.ndarray]:
        _, _, images, labels = chosen()
        photos = [np.asarray(Image.open(path).convert("RGB")) for path in photo_paths()]
        return blend_into_photos(images, photos, seed), labels

    source = write_class_tree(
        source_root, ANIMAL_MNIST_CLASSES, load_source, {"dataset": "animal_mnist_m/source", **parameters}
    )
    target = write_class_tree(
        target_root,
        ANIMAL_MNIST_CLASSES,
        load_target,
        {"dataset": "animal_mnist_m/target", "photos": list(PHOTO_FILES), **parameters},
    )
    return source, target
