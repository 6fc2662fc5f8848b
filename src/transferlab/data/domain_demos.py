"""Two-domain demos written from data that installed packages ship: the names ``data.demo`` accepts.

``animal_mnist_m``: Animal-MNIST silhouettes (source) -> the same kind of silhouettes blended into patches
of real colour photos (target), the MNIST -> MNIST-M construction of Ganin & Lempitsky (2015).
``digits_shift``: digits typeset in matplotlib's fonts (source) -> scikit-learn's handwritten digits.

Each domain is written as a ``<root>/<class>/<index>.png`` tree into a temporary folder renamed into
place, with a marker file recording how it was made, so a second call (or another DDP rank) reuses it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from transferlab.data.demo import PARAMETER_FILE, folder_has_data, matches_demo_parameters
from transferlab.errors import UserError

DOMAIN_DEMOS: tuple[str, ...] = ("animal_mnist_m", "digits_shift")
"""Names accepted by ``data.demo`` of the domain-adaptation data module."""

LoadImages = Callable[[], tuple[np.ndarray, np.ndarray]]
"""Returns ``(images, labels)``: uint8 ``(n, h, w)`` or ``(n, h, w, 3)`` pixels and class indices."""


def write_class_tree(
    root: str | os.PathLike[str],
    class_names: Sequence[str],
    load: LoadImages,
    parameters: dict[str, Any],
) -> Path:
    """Write the images ``load`` returns as ``root/<class>/<index>.png``, unless already written.

    Args:
        root: the folder to create.
        class_names: folder name of each label index.
        load: called only when the tree must be written.
        parameters: what makes these images (dataset name, format version, seeds); stored in the marker.

    Returns:
        ``root``, absolute.

    Raises:
        UserError: ``root`` holds other files, or the same dataset written with other parameters.
    """
    root = Path(root).expanduser().absolute()
    if matches_demo_parameters(root, parameters):
        return root
    if folder_has_data(root):
        raise UserError(
            f"{root} already has files but no {PARAMETER_FILE}, so it is not a transferlab demo folder; not "
            "writing the demo into it. Delete the folder or pick other data.source_root/target_root."
        )
    images, labels = load()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        for name in class_names:
            (tmp / name).mkdir(parents=True)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image).save(tmp / class_names[label] / f"{index:05d}.png")
        (tmp / PARAMETER_FILE).write_text(json.dumps(parameters, indent=1) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, root)
        except OSError as err:
            if not matches_demo_parameters(root, parameters):  # else another process wrote it first
                raise UserError(f"Cannot move the demo images into {root}: {err}. Delete {root}.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def check_domain_demo(name: str | None) -> str | None:
    """Return ``name`` if it is None or a known two-domain demo.

    Raises:
        UserError: it is not; the message lists the demos.
    """
    if name is not None and name not in DOMAIN_DEMOS:
        raise UserError(
            f"Unknown domain-adaptation demo {name!r}; set data.demo to one of: {', '.join(DOMAIN_DEMOS)} "
            "(or null)."
        )
    return name


def prepare_domain_demo(
    name: str, source_root: str | os.PathLike[str], target_root: str | os.PathLike[str]
) -> None:
    """Write demo ``name`` into the two roots (no-op when already written)."""
    check_domain_demo(name)
    if name == "animal_mnist_m":
        from transferlab.data.animal_mnist_m import write_animal_mnist_m

        write_animal_mnist_m(source_root, target_root)
    else:
        from transferlab.data.digits_shift import write_digits_shift

        write_digits_shift(source_root, target_root)
