"""Console scripts end quickly after their work, without losing output, exit handlers or exit status."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import atexit, logging, sys
    from transferlab.utils.quick_exit import exit_when_done

    def main():
        log = logging.getLogger("job")
        handler = logging.FileHandler(sys.argv[2])  # closed (and flushed) by logging.shutdown at exit
        log.addHandler(handler)
        log.warning("logged line")
        atexit.register(lambda: print("exit handler ran"))
        print("x" * 100_000)  # more than a pipe buffer: must be flushed, not dropped
        sys.stdout.write("no newline at the end")
        how = sys.argv[1]
        if how == "status 2":
            sys.exit(2)
        if how == "message":
            sys.exit("stopped: a message")
        if how == "error":
            raise RuntimeError("a bug")
        return 0.5

    exit_when_done(main)()
    """
)


@pytest.mark.parametrize(("how", "status"), [("return", 0), ("status 2", 2), ("message", 1), ("error", 1)])
def test_script_output_exit_handlers_and_status_survive_the_quick_exit(
    how: str, status: int, tmp_path: Path
) -> None:
    log_file = tmp_path / "job.log"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, how, str(log_file)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == status, result.stderr[-2000:]
    assert ("x" * 100_000) in result.stdout
    assert result.stdout.rstrip("\n").endswith("exit handler ran")
    assert "no newline at the end" in result.stdout
    assert log_file.read_text() == "logged line\n"
    if how == "message":
        assert "stopped: a message" in result.stderr
    if how == "error":  # an exception leaves the usual way, with its traceback
        assert "RuntimeError: a bug" in result.stderr


def test_console_scripts_are_the_quick_exit_wrappers() -> None:
    from importlib.metadata import entry_points

    scripts = {
        ep.name: ep.value
        for ep in entry_points(group="console_scripts")
        if ep.name.startswith("transferlab-")
    }
    assert scripts and all(value.endswith(":cli") for value in scripts.values()), scripts


POOL_SCRIPT = textwrap.dedent(
    """
    from joblib.externals.loky import get_reusable_executor
    from transferlab.utils.quick_exit import exit_when_done

    def main():
        # The parallel launcher's pool: its idle workers wait 300 s for more jobs unless shut down at exit.
        print(get_reusable_executor(max_workers=2).submit(sum, [1, 2]).result())

    exit_when_done(main)()
    """
)


def test_the_parallel_launchers_process_pool_is_shut_down_at_exit() -> None:
    # The workers inherit stdout: the output pipe closes only when they are gone too, so a lingering pool
    # makes capture_output wait (300 s) and hit the timeout.
    result = subprocess.run([sys.executable, "-c", POOL_SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "3"
