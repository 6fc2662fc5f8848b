"""Background calls run in order off the calling thread, and their errors come back to the caller."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from transferlab.utils.background import BackgroundCalls


def test_calls_run_in_order_on_another_thread_and_wait_waits_for_all() -> None:
    calls = BackgroundCalls("test")
    seen: list[tuple[int, str]] = []

    def record(index: int) -> None:
        time.sleep(0.01 * (3 - index))  # later calls are quicker: order must not depend on duration
        seen.append((index, threading.current_thread().name))

    for index in range(3):
        calls.submit(lambda index=index: record(index))
    calls.wait()
    assert [index for index, _ in seen] == [0, 1, 2]
    assert all(name.startswith("test") and name != threading.main_thread().name for _, name in seen)


def test_an_error_comes_back_at_the_next_submit_or_at_wait() -> None:
    def fail() -> None:
        raise ValueError("no font")

    calls = BackgroundCalls("test")
    calls.submit(fail)
    time.sleep(0.2)  # the failed call has finished
    with pytest.raises(ValueError, match="no font"):
        calls.submit(lambda: None)

    calls.submit(fail)
    with pytest.raises(ValueError, match="no font"):
        calls.wait()
    calls.wait()  # reported once


def test_a_pickled_copy_has_no_thread_and_starts_its_own() -> None:
    calls = BackgroundCalls("test")
    calls.submit(lambda: None)
    copy = pickle.loads(pickle.dumps(calls))
    calls.wait()
    done: list[bool] = []
    copy.submit(lambda: done.append(True))
    copy.wait()
    assert done == [True]
