"""Large files replaced by an atomic write are freed on the background thread; nothing is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from transferlab.utils import atomic, replaced_files
from transferlab.utils.atomic import link_atomically, write_atomically, write_json_atomically
from transferlab.utils.replaced_files import LARGE_FILE_BYTES, wait_for_released_files

LARGE = LARGE_FILE_BYTES + 1


def _write(path: Path, byte: bytes, size: int = LARGE) -> None:
    write_atomically(path, lambda handle: handle.write(byte * size))


@pytest.fixture
def removals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(file name, thread name) of each removal of a replaced file."""
    done: list[tuple[str, str]] = []
    remove = replaced_files._remove

    def recorded(aside: Path) -> None:
        done.append((aside.name, threading.current_thread().name))
        remove(aside)

    monkeypatch.setattr(replaced_files, "_remove", recorded)
    return done


def test_a_large_replaced_file_is_freed_on_the_background_thread_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "last.ckpt"
    _write(target, b"a")
    held = threading.Event()
    remove = replaced_files._remove
    monkeypatch.setattr(replaced_files, "_remove", lambda aside: (held.wait(10), remove(aside)))
    _write(target, b"b")
    # The target is the new file at once; the old one waits under a hidden name for the thread.
    assert target.read_bytes()[:1] == b"b" and target.stat().st_nlink == 1
    (aside,) = [path for path in tmp_path.iterdir() if path != target]
    assert aside.name.startswith(".last.ckpt.") and aside.name.endswith(".replaced")
    assert aside.read_bytes() == b"a" * LARGE
    held.set()
    wait_for_released_files()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.ckpt"]
    assert target.read_bytes() == b"b" * LARGE


def test_the_removal_runs_on_its_own_thread(tmp_path: Path, removals: list[tuple[str, str]]) -> None:
    target = tmp_path / "best.ckpt"
    _write(target, b"a")
    _write(target, b"b")
    wait_for_released_files()
    ((name, thread),) = removals
    assert name.startswith(".best.ckpt.") and thread.startswith("transferlab-release")
    assert thread != threading.current_thread().name


def test_small_files_and_files_with_other_names_are_replaced_in_place(
    tmp_path: Path, removals: list[tuple[str, str]]
) -> None:
    write_json_atomically({"a": 1}, tmp_path / "metrics.json")
    write_json_atomically({"a": 2}, tmp_path / "metrics.json")
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    _write(best, b"a")
    link_atomically(best, last)  # last.ckpt: a second name of best.ckpt
    _write(best, b"b")  # frees nothing: the old file lives on as last.ckpt
    wait_for_released_files()
    assert removals == []
    assert last.read_bytes()[:1] == b"a" and best.read_bytes()[:1] == b"b"
    # Replacing last.ckpt, now the only name of the old file, frees it on the thread.
    link_atomically(best, last)
    wait_for_released_files()
    assert [name for name, _ in removals] and removals[0][0].startswith(".last.ckpt.")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt", "metrics.json"]


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_second_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "last.ckpt"
    _write(target, b"a")

    def fails(*args: object) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr(atomic.os, "replace", fails)
    with pytest.raises(OSError, match="read-only"):
        _write(target, b"b")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.ckpt"]
    assert target.read_bytes() == b"a" * LARGE


def test_a_command_that_exits_at_once_leaves_no_replaced_file_behind(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from transferlab.utils import replaced_files
        from transferlab.utils.atomic import write_atomically
        from transferlab.utils.quick_exit import exit_when_done

        remove = replaced_files._remove
        replaced_files._remove = lambda aside: (time.sleep(0.5), remove(aside))  # still queued at the exit

        def main():
            for byte in (b"a", b"b", b"c"):
                write_atomically(sys.argv[1], lambda handle: handle.write(byte * {LARGE}))

        exit_when_done(main)()
        """
    )
    target = tmp_path / "last.ckpt"
    subprocess.run([sys.executable, "-c", script, str(target)], check=True, timeout=120, env=os.environ)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.ckpt"]
    assert target.read_bytes() == b"c" * LARGE
