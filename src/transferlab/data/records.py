"""Writing run records (``split.json``, ``folds.json``): paths relative to the data root, atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transferlab.utils.atomic import write_json_atomically


def relative_samples(samples: Sequence[tuple[str, int]], root: str | os.PathLike[str]) -> list[list[Any]]:
    """``[[relative posix path, class index], ...]``: the JSON form of samples, movable with the data."""
    root = Path(root).absolute()
    return [[Path(os.path.relpath(Path(p).absolute(), root)).as_posix(), int(label)] for p, label in samples]


def write_record(document: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a run record as JSON to ``path``, atomically (several DDP ranks may write the same file).

    Returns:
        The path written.
    """
    return write_json_atomically(document, path, indent=1)
