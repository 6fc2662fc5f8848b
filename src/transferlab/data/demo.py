"""Demo datasets written to disk as image folders from data shipped in PyPI packages (no downloads).

``animal_mnist``: 28x28 grayscale silhouettes of ten animals from the ``animal-mnist`` package, written
as ``root/{train,val,test}/<class>/<index>.png``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from transferlab.data.folders import SPLITS
from transferlab.data.safe_pickle import load_pickled_array
from transferlab.errors import UserError

DEMOS: tuple[str, ...] = ("animal_mnist",)
"""Names accepted by ``data.demo``."""

ANIMAL_MNIST_CLASSES: tuple[str, ...] = (
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
)  # fmt: skip
"""Class folder names, by the package's label index (alphabetical, so folder order keeps the labels)."""

DEFAULT_PER_CLASS: dict[str, int] = {"train": 100, "val": 30, "test": 100}
"""Images per class and split written by default."""

PARAMETER_FILE = ".transferlab-demo.json"
"""Written last into a demo root; its presence means the folder is complete."""

_FORMAT = 1  # bump when the written layout changes, so old demo folders are not silently reused
_PACKAGE = "animal_mnist"
_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")
_INSTALL_HINT = "Install it with `pip install animal-mnist` (or `make env`)"


def animal_mnist_files() -> tuple[Path, Path]:
    """Paths of the image and label pickles inside the installed ``animal-mnist`` package.

    The package is located without importing it: its ``__init__`` imports TensorFlow.

    Raises:
        UserError: the package or its data files are missing.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"The demo data needs the Python package animal-mnist, which is not installed. {_INSTALL_HINT}."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"
    paths = tuple(folder / name for name in _FILES)
    for path in paths:
        if not path.is_file():
            raise UserError(
                f"animal-mnist is installed but {path} is missing. Reinstall it: {_INSTALL_HINT}."
            )
    return paths  # type: ignore[return-value]


def load_animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 Animal-MNIST images, ``(10000, 28, 28)`` uint8, and their labels 0-9.

    Raises:
        UserError: the package is missing, or its files are not what this code expects.
    """
    images_path, labels_path = animal_mnist_files()
    images, labels = load_pickled_array(images_path), load_pickled_array(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise UserError(
            f"Unexpected Animal-MNIST data in {images_path.parent}: images {images.shape} {images.dtype}, "
            f"labels {labels.shape}. Reinstall the pinned version: {_INSTALL_HINT}."
        )
    return images, labels.astype(np.int64)


def write_animal_mnist(
    root: str | os.PathLike[str],
    per_class: Mapping[str, int] | None = None,
    seed: int = 0,
    *,
    progress: bool = True,
) -> Path:
    """Write Animal-MNIST as ``root/{train,val,test}/<class>/<index>.png``.

    Each class gets a seeded random subset of its 1,000 images, disjoint between splits; ``<index>`` is
    the image's position in the package's array. The tree is written into a temporary sibling folder and
    renamed into place at the end, so an interrupted run never leaves a complete-looking partial tree and
    concurrent callers (DDP) do not collide. ``root/.transferlab-demo.json`` records the parameters.

    Calling it again with the same parameters does nothing.

    Args:
        root: the folder to create.
        per_class: images per class for each split; missing splits take :data:`DEFAULT_PER_CLASS`.
        seed: seed of the random subset.
        progress: show a progress bar.

    Returns:
        ``root``, absolute.

    Raises:
        UserError: ``root`` already holds a demo written with other parameters, or other files; the
            counts are invalid; or animal-mnist is not installed.
    """
    root = Path(root).expanduser().absolute()
    counts = _per_class(per_class)
    parameters = {"dataset": "animal_mnist", "format": _FORMAT, "per_class": counts, "seed": int(seed)}
    if matches_demo_parameters(root, parameters):
        return root
    if folder_has_data(root):
        raise UserError(
            f"{root} already has files but no {PARAMETER_FILE}, so it is not a transferlab demo folder; "
            "not writing the demo into it. Delete the folder or pick another data.root."
        )
    images, labels = load_animal_mnist()
    chosen = _choose(labels, counts, seed)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_tree(tmp, images, chosen, progress=progress)
        (tmp / PARAMETER_FILE).write_text(json.dumps(parameters, indent=1) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, root)  # atomic; replaces root only if it is an empty folder
        except OSError as err:
            if not matches_demo_parameters(
                root, parameters
            ):  # else another process finished the same tree first
                raise UserError(
                    f"Cannot move the demo data into {root}: {err}. Delete {root} (it holds only hidden "
                    "files) or pick another data.root."
                ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def prepare_demo(name: str, root: str | os.PathLike[str], per_class: Mapping[str, int] | None = None) -> bool:
    """Write demo dataset ``name`` into ``root`` unless ``root`` already holds other data.

    Args:
        name: one of :data:`DEMOS`.
        root: the data root.
        per_class: images per class and split (see :func:`write_animal_mnist`).

    Returns:
        True if ``root`` now holds the demo, False if it holds other data and was left alone.

    Raises:
        UserError: unknown demo name, or see :func:`write_animal_mnist`.
    """
    check_demo(name)
    root = Path(root).expanduser()
    if folder_has_data(root) and not (root / PARAMETER_FILE).is_file():
        return False  # the user's own images; data.demo only fills an empty root
    write_animal_mnist(root, per_class)
    return True


def check_demo(name: str | None) -> str | None:
    """Return ``name`` if it is None or a known demo.

    Raises:
        UserError: it is not; the message lists the demos.
    """
    if name is not None and name not in DEMOS:
        raise UserError(
            f"Unknown demo dataset {name!r}; set data.demo to one of: {', '.join(DEMOS)} (or null)."
        )
    return name


def folder_has_data(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` exists and holds anything besides hidden files."""
    root = Path(root)
    return root.is_dir() and any(not entry.name.startswith(".") for entry in os.scandir(root))


def _per_class(per_class: Mapping[str, int] | None) -> dict[str, int]:
    given = dict(per_class or {})
    unknown = sorted(set(given) - set(SPLITS))
    if unknown:
        raise UserError(f"data.demo_per_class has unknown keys {unknown}; use {', '.join(SPLITS)}.")
    counts = {split: given.get(split, DEFAULT_PER_CLASS[split]) for split in SPLITS}
    for split, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise UserError(f"data.demo_per_class.{split} must be a positive whole number, got {count!r}.")
    if sum(counts.values()) > 1000:
        raise UserError(
            f"data.demo_per_class asks for {sum(counts.values())} images per class ({counts}), but "
            "Animal-MNIST has 1000 per class. Lower the counts."
        )
    return counts


def matches_demo_parameters(root: Path, parameters: dict[str, Any]) -> bool:
    """True if ``root`` holds a complete demo tree written with ``parameters``; False if it holds none.

    Raises:
        UserError: ``root`` holds a demo tree written with other parameters.
    """
    marker = root / PARAMETER_FILE
    if not marker.is_file():
        return False
    try:
        found = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        found = None
    if found == parameters:
        return True
    raise UserError(
        f"{root} holds a demo dataset written with other parameters ({marker}: {found}; wanted "
        f"{parameters}). Delete {root} to rewrite it, or pick another data.root."
    )


def _choose(labels: np.ndarray, counts: dict[str, int], seed: int) -> dict[str, dict[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    chosen: dict[str, dict[int, np.ndarray]] = {split: {} for split in SPLITS}
    for label in range(len(ANIMAL_MNIST_CLASSES)):
        order = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for split in SPLITS:
            chosen[split][label] = np.sort(order[start : start + counts[split]])
            start += counts[split]
    return chosen


def _write_tree(
    tmp: Path, images: np.ndarray, chosen: dict[str, dict[int, np.ndarray]], *, progress: bool
) -> None:
    total = sum(len(indices) for per_label in chosen.values() for indices in per_label.values())
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"Writing Animal-MNIST demo images to {tmp.parent}", total=total)
        for split, per_label in chosen.items():
            for label, indices in per_label.items():
                folder = tmp / split / ANIMAL_MNIST_CLASSES[label]
                folder.mkdir(parents=True)
                for index in indices:
                    Image.fromarray(images[index]).save(folder / f"{index}.png")
                    bar.advance(task)
