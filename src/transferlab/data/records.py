"""Writing run records (``split.json``, ``folds.json``): paths relative to the data root, atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def relative_samples(samples: Sequence[tuple[str, int]], root: str | os.PathLike[str]) -> list[list[Any]]:
    """``[[relative posix path, class index], ...]``: the JSON form of samples, movable with the data."""
    root = Path(root).absolute()
    return [[Path(os.path.relpath(Path(p).absolute(), root)).as_posix(), int(label)] for p, label in samples]


def write_json_atomically(document: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``document`` as indented JSON to ``path`` (parent folders are created), via a temporary file.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: several DDP ranks may write the same file, and a reader never sees half of it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
