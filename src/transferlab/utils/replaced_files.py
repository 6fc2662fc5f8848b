"""Large files replaced by an atomic write are freed on a background thread, not inside the rename.

Renaming a new file onto an old one frees the old file's blocks within the rename: about 11 ms for a
14 MB checkpoint on this project's test machines (ext4), paid by the training loop after every epoch
when ``last.ckpt`` is rewritten. :func:`set_aside` gives such a file a second, hidden name first, so
the rename only drops one of its names; :func:`release_later` then removes the hidden name on a thread
of its own (the system call runs without the interpreter lock). The target itself is replaced exactly
as before: atomically, at once.

The thread finishes its queue before the process exits (also through
:func:`~transferlab.utils.quick_exit.exit_when_done`). A process killed in the few milliseconds between
the rename and the removal leaves the old file under its hidden name (``.NAME.PID.XXXXXXXX.replaced``
beside the target), as a kill during a write leaves its ``.tmp`` file.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import uuid
from pathlib import Path

from transferlab.utils.background import BackgroundCalls

log = logging.getLogger(__name__)

LARGE_FILE_BYTES = 1 << 20  # smaller files are freed within the rename in well under a millisecond

_lock = threading.Lock()  # writers on several threads may replace files at once
_removals = BackgroundCalls("transferlab-release")


def set_aside(path: Path) -> Path | None:
    """A hidden second name of the file at ``path`` if replacing it would free a large file; else None.

    None when there is no such file, when it is not a regular file, when it is smaller than
    :data:`LARGE_FILE_BYTES`, when it has other names already (replacing it frees nothing), or when the
    file system has no hard links.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size < LARGE_FILE_BYTES or info.st_nlink != 1:
        return None
    aside = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.replaced")
    try:
        os.link(path, aside, follow_symlinks=False)
    except OSError:
        return None
    return aside


def release_later(aside: Path) -> None:
    """Remove ``aside`` (from :func:`set_aside`) on the background thread."""
    with _lock:
        _removals.submit(lambda: _remove(aside))


def wait_for_released_files() -> None:
    """Wait until every file given to :func:`release_later` so far is removed."""
    with _lock:
        _removals.wait()


def _remove(aside: Path) -> None:
    try:
        aside.unlink(missing_ok=True)
    except OSError as error:  # told, not raised: the write it belongs to has succeeded
        log.warning("Could not remove %s, the old copy of a replaced file: %s", aside, error)


def _forget_in_child() -> None:
    """A forked process has no copy of the thread: it starts its own when it needs one."""
    global _lock, _removals
    _lock, _removals = threading.Lock(), BackgroundCalls(_removals.name)


os.register_at_fork(after_in_child=_forget_in_child)
