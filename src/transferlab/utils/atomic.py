"""Writing files so that a reader (or a crash) never sees half of one: temporary file, then rename."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it onto ``path``.

    The rename is atomic on POSIX file systems, so ``path`` holds either its old content or the new one.
    Parent folders are created; the temporary file is removed if ``write`` fails.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name: several processes (DDP ranks) may write the same file at once.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_json_atomically(document: Any, path: str | os.PathLike[str], indent: int = 2) -> Path:
    """Write ``document`` as indented JSON (with a final newline) to ``path``, atomically."""
    text = json.dumps(document, indent=indent) + "\n"
    return write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def torch_save_atomically(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` ``obj`` to ``path``, atomically."""
    return write_atomically(path, lambda handle: torch.save(obj, handle))
