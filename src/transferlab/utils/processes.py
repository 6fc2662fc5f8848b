"""How the processes a task starts (data loader workers) are started, whoever started the task."""

from __future__ import annotations

import logging
import multiprocessing

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
