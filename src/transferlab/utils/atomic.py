"""The one way transferlab writes files: to a temporary file beside the target, then renamed onto it.

A reader (or a crash, or a full disk) never sees half a file: the target holds either its old content or
the new one, as the rename is atomic on POSIX file systems. Every writer of records, checkpoints, features
and exported models goes through :func:`atomic_path`. A large file that is replaced is freed on a
background thread, not inside the rename (:mod:`transferlab.utils.replaced_files`).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

from transferlab.utils.replaced_files import release_later, set_aside


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Give a temporary path beside ``path`` to write to; rename it onto ``path`` when the block succeeds.

    For writers that take a file name (``torch.onnx.export``, Lightning's checkpoint IO). The temporary
    file exists (empty) when the block starts; it is removed if the block raises, and ``path`` is then
    untouched. Parent folders are created. The new file gets the usual permissions (``0o666`` less the
    umask), like a file written in place.

    Yields:
        The temporary path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name: several processes (DDP ranks, parallel jobs) may write the same file at once.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        replace_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_file(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Rename the file ``tmp`` onto ``path`` (atomic); a large file replaced is freed later, off this thread.

    What :func:`atomic_path` does when its block succeeds, for a file already written beside ``path``.
    """
    tmp, path = Path(tmp), Path(path)
    aside = set_aside(path)
    try:
        os.replace(tmp, path)
    except BaseException:
        if aside is not None:
            aside.unlink(missing_ok=True)
        raise
    if aside is not None:
        release_later(aside)


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a binary file open on a temporary path beside ``path``, then rename it onto ``path``.

    Returns:
        The path written.
    """
    # The file is closed (inner context) before the rename (outer context).
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        write(handle)
    return Path(path)


def write_json_atomically(document: Any, path: str | os.PathLike[str], indent: int = 2) -> Path:
    """Write ``document`` as indented JSON (with a final newline) to ``path``, atomically."""
    text = json.dumps(document, indent=indent) + "\n"
    return write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def torch_save_atomically(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` ``obj`` to ``path``, atomically."""
    return write_atomically(path, lambda handle: torch.save(obj, handle))


def link_atomically(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Make ``path`` a second name of the file ``source`` (a hard link, no bytes copied), atomically.

    ``path`` then holds ``source``'s content for good: rewriting ``source`` later through this module
    renames a new file onto it and leaves ``path`` as it was. Where the file system has no hard links,
    the file is copied.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
    return path


def copy_atomically(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Copy the file ``source`` to ``path``, atomically (``path`` never holds part of the copy)."""
    with Path(source).open("rb") as original:
        return write_atomically(path, lambda handle: shutil.copyfileobj(original, handle))
