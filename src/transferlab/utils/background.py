"""Calls run in order on a thread of their own, off the training loop, with their errors brought back."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class BackgroundCalls:
    """Runs submitted calls one after another on one worker thread; an error comes back to the caller.

    For work the training loop need not wait for, such as drawing and PNG-encoding TensorBoard pictures
    (Pillow and zlib release the interpreter lock, so this overlaps with training on another core). The
    error of a failed call is raised by the next :meth:`submit` or by :meth:`wait`, never lost. The thread
    starts with the first call; a pickled copy (a callback sent to spawned DDP processes) has none.

    Args:
        name: prefix of the worker thread's name.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future[Any]] = []

    def submit(self, call: Callable[[], object]) -> None:
        """Queue ``call``, after raising the error of an earlier call that failed."""
        self.raise_error()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self._pending.append(self._executor.submit(call))

    def raise_error(self) -> None:
        """Raise the error of a finished call that failed; finished calls are then forgotten."""
        finished = [future for future in self._pending if future.done()]
        self._pending = [future for future in self._pending if not future.done()]
        for future in finished:
            future.result()

    def wait(self) -> None:
        """Wait for every queued call and stop the thread; raise the first error."""
        pending, self._pending = self._pending, []
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        for future in pending:
            future.result()

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "_executor": None, "_pending": []}
