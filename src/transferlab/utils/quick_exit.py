"""Console scripts that end the process as soon as their work is written."""

from __future__ import annotations

import atexit
import functools
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn


def exit_when_done(main: Callable[[], object]) -> Callable[[], NoReturn]:
    """The console script of ``main``: run it, then end the process as soon as everything is written.

    After a command has finished, the interpreter's own teardown (finalising the modules of torch,
    Lightning and their dependencies) takes 2-3 s on a 2-core machine and writes nothing. The script
    skips it: it does what a normal exit does first (waits for the threads that are not daemons, runs the
    threads' exit hooks, which stop process pools such as the parallel launcher's workers, then the
    ``atexit`` handlers: log files, loader processes), flushes stdout and stderr, and exits with ``main``'s
    status. An exception other than ``SystemExit`` takes the usual way out, with its traceback.
    """

    @functools.wraps(main)
    def script() -> NoReturn:
        try:
            main()
        except SystemExit as done:
            status = done.code
        else:
            status = 0
        if not isinstance(status, int):  # sys.exit("message") or sys.exit(None)
            if status is not None:
                print(status, file=sys.stderr)
            status = 0 if status is None else 1
        # What a normal exit runs first, in its order: join threads and run their exit hooks (process pools
        # shut down their workers there; skipped, idle workers would linger and hold the output pipes),
        # then atexit (logging.shutdown, child processes, ...).
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(status)

    return script
