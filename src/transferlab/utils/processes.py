"""How the processes a task starts (data loader workers) are started, whoever started the task."""

from __future__ import annotations

import logging
import multiprocessing
from multiprocessing.context import BaseContext

log = logging.getLogger(__name__)

# Start methods joblib's loky backend installs in its worker processes.
LOKY_START_METHODS = ("loky", "loky_init_main")


def restore_default_start_method() -> None:
    """Give this process the platform's default multiprocessing start method back if loky replaced it.

    A job of the parallel launcher (``hydra/launcher=parallel``, joblib's loky backend) runs inside a loky
    worker process, and loky makes its own start method the default there. Processes started through the
    default context with the standard ``multiprocessing.Process`` class, as PyTorch's data loader starts
    its workers, then go to loky's launcher, which only accepts loky's process class and fails
    (``'Process' object has no attribute 'env'``, reported by PyTorch as a pickle error; see
    pytorch/pytorch#44687). With the platform's default, the loader workers start as in any other run.
    A start method the user chose (``fork``, ``spawn``, ``forkserver``) is left alone.
    """
    method = multiprocessing.get_start_method(allow_none=True)
    if method in LOKY_START_METHODS:
        multiprocessing.set_start_method(None, force=True)  # None: back to the platform's default
        log.debug("Start method %r replaced by %r", method, multiprocessing.get_start_method())


def platform_start_method() -> str:
    """The platform's default start method (``fork`` on Linux before Python 3.14, ``spawn`` on macOS)."""
    return multiprocessing.get_all_start_methods()[0]


def loader_worker_context(num_workers: int) -> BaseContext | None:
    """The context ``num_workers`` data loader workers of this process start with; None keeps PyTorch's
    default (and is what a loader without workers must get).

    A DDP rank started with the ``spawn`` method (``trainer=ddp_sim``, ``trainer=ddp`` inside a
    multirun) inherits ``spawn`` as its default, so every loader worker would start a fresh
    interpreter and import PyTorch again (seconds per worker, per loader). Workers of such a rank start
    the platform's way instead, as they do under a rank started with ``popen`` or by a cluster. The
    same holds inside a loky worker (see :func:`restore_default_start_method`). A start method chosen in
    the main process is left alone.
    """
    if num_workers <= 0:
        return None
    method = multiprocessing.get_start_method(allow_none=True)
    inherited_spawn = method == "spawn" and multiprocessing.parent_process() is not None
    if method in LOKY_START_METHODS or (inherited_spawn and platform_start_method() != "spawn"):
        return multiprocessing.get_context(platform_start_method())
    return None
