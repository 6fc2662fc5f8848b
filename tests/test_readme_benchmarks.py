"""Every ``python benchmarks/...`` command of README.md runs, shrunk, and prints its result row.

The slow test runs each unmarked README benchmark command exactly as written (its environment
assignments included) with the arguments of :data:`SHRINK` appended, in a temporary working folder and a
process of its own. The shrinking arguments only make the measurement smaller (fewer rounds, steps,
episodes, seeds and images, a tiny demo, trainer limits), never change what is measured: both sides of the
comparison run and the script prints its result row, with numbers. A figure that misses its target on a
tiny, loaded measurement is expected, so the script's own "below target" status
(:data:`benchmarks._target.BELOW_TARGET`) passes; any other non-zero status (a failed run, a traceback)
fails the test. A new README benchmark command needs an entry in :data:`SHRINK` (the fast test says so).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks._target import BELOW_TARGET
from tests.conftest import ROOT
from tests.helpers.readme_commands import ReadmeCommand, readme_commands

README = ROOT / "README.md"
TIMEOUT = 600  # seconds per shrunk command; they take 15 s to 1.5 min on 2 cores

NUM = r"-?\d+(?:\.\d+)?"  # a measured figure (a difference of noisy timings can be negative)
MEAN_STD = rf"{NUM} ± {NUM}"
TINY_DEMO = "data.demo_per_class={train:4,val:2,test:2}"
TRAINER_LIMITS = (
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
)


@dataclass(frozen=True)
class Shrink:
    """How a benchmark script is run small, and what it must print.

    Attributes:
        args: appended to the README command (a repeated option replaces the README's value).
        results: patterns that must each match a line of its output (multiline regexes): the result row,
            with the figures of both sides.
        target: the script has a target, so its "below target" exit status is a pass.
    """

    args: tuple[str, ...]
    results: tuple[str, ...]
    target: bool = True


def _row_of(script: str, cells: str) -> str:
    """A markdown row that names ``script`` in its command and ends with ``cells``."""
    return rf"^\|.*`python benchmarks/{re.escape(script)}[^`]*`.*\| {cells} \|$"


# script -> how to shrink it; every README benchmark command needs an entry
SHRINK: dict[str, Shrink] = {
    "bench_gradual_unfreezing.py": Shrink(
        # `--` ends --seeds (it takes several values): what follows are overrides for every run
        args=("--seeds", "0", "--", "trainer.max_epochs=2", TINY_DEMO, *TRAINER_LIMITS),
        results=tuple(
            rf"^\| `model={model}` \| {MEAN_STD} \| {MEAN_STD} \| {MEAN_STD} \| {MEAN_STD} \| 1 \|$"
            for model in ("finetune", "gradual_unfreezing")
        ),
        target=False,
    ),
    "bench_feature_cache.py": Shrink(
        args=("--rounds", "1", "--epochs", "1", "2", TINY_DEMO),
        results=(
            rf"^round 0 cached=False: 1 / 2 epochs: wall {NUM} / {NUM} s",
            rf"^round 0 cached=True: 1 / 2 epochs: wall {NUM} / {NUM} s",
            r"^\|.*`python benchmarks/bench_feature_cache\.py --rounds 1 --epochs 1 2 .*` \| "
            # "not measurable" when the longer cached command was no slower (start-up noise)
            rf"{NUM} s / {NUM} s \| \*\*({NUM}x|not measurable)\*\* \| {NUM} s / {NUM} s \| "
            rf"({NUM}x|not measurable) \| {NUM} / {NUM} \|$",
            rf"^epoch to epoch inside the 2-epoch runs \(median of 1 / 1 intervals.*: no cache {NUM} s / "
            rf"cache {NUM} s: {NUM}x$",
            rf"^after start-up .*\(2 - 1 epochs\) / 1, median: no cache {NUM} s / cache {NUM} s: "
            rf"({NUM}x|not measurable)$",
        ),
    ),
    "bench_dann_step.py": Shrink(
        args=("--steps", "3", "--warmup", "1", "--rounds", "2", "--image-size", "32", "--batch-size", "4"),
        results=(
            _row_of(
                "bench_dann_step.py",
                rf"[^|]+ 32 px, batch 4\+4 \| {NUM} s \| {NUM} s \| \*\*{NUM}x\*\* \| <= [\d.]+x",
            ),
        ),
    ),
    "bench_data_pipeline.py": Shrink(
        args=("--images", "4", "--rounds", "2"),
        results=(
            _row_of(
                "bench_data_pipeline.py", rf"4 x 2000x1500 JPEG \| {NUM} \| {NUM} \| \*\*{NUM}x\*\* \| {NUM}"
            ),
        ),
    ),
    "bench_training_step.py": Shrink(
        args=("--steps", "4", "--warmup", "1", "--rounds", "2", "--batch-size", "8"),
        results=(
            _row_of("bench_training_step.py", rf"[^|]+ \| {NUM} img/s \| {NUM} img/s \| \*\*{NUM}x\*\*"),
        ),
    ),
    "bench_fewshot_episodes.py": Shrink(
        args=("--episodes", "4", "--image-size", "32"),
        results=(
            _row_of(
                "bench_fewshot_episodes.py",
                rf"{NUM} s \(features computed once before: {NUM} s\) \| {NUM} s \| \*\*{NUM}x\*\* faster "
                r"\| >= [\d.]+x",
            ),
            rf"^\| accuracy, same run \| same \| {NUM} \+- {NUM} \| {NUM} \+- {NUM} \| equal \| equal \|$",
        ),
    ),
}


def _benchmark_commands() -> list[ReadmeCommand]:
    return [
        c
        for c in readme_commands(README)
        if c.program == "python" and c.argv[1:2] and c.argv[1].startswith("benchmarks/")
    ]


def _script(command: ReadmeCommand) -> str:
    return Path(command.argv[1]).name


def _missing_entry(command: ReadmeCommand) -> str:
    return (
        f"{command}: {_script(command)} has no entry in SHRINK of {Path(__file__).relative_to(ROOT)}; "
        "add one (arguments that make it run in seconds to a minute, and the result row it prints)"
    )


COMMANDS = _benchmark_commands()
RUNNABLE = [c for c in COMMANDS if not c.needs]


def test_readme_benchmark_scripts_exist_and_have_a_shrink_entry() -> None:
    assert RUNNABLE, "README.md shows no `python benchmarks/...` command: is the convention still followed?"
    problems = [f"{c}: {c.argv[1]} does not exist" for c in COMMANDS if not (ROOT / c.argv[1]).is_file()]
    problems += [_missing_entry(c) for c in RUNNABLE if _script(c) not in SHRINK]
    assert not problems, "\n".join(problems)


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str, float]:
    """Exit status, stdout, stderr and seconds of ``argv``; on timeout its whole process group is killed
    (the benchmarks start training commands and loader workers of their own)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"`{' '.join(argv)}` took more than {TIMEOUT} s:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return process.returncode, stdout, stderr, time.perf_counter() - start


@pytest.mark.slow
@pytest.mark.parametrize("command", RUNNABLE, ids=[f"L{c.line}:{_script(c)}" for c in RUNNABLE])
def test_benchmark_command_runs_shrunk(command: ReadmeCommand, tmp_path: Path) -> None:
    shrink = SHRINK.get(_script(command))
    if shrink is None:
        pytest.fail(_missing_entry(command))
    work = tmp_path / "work"
    (tmp_path / "tmp").mkdir()
    work.mkdir()
    # the scripts' own temporary folders (tempfile.mkdtemp) go to tmp_path too, and are cleaned with it
    env = {**os.environ, **command.env, "TMPDIR": str(tmp_path / "tmp")}
    argv = [sys.executable, str(ROOT / command.argv[1]), *command.argv[2:], *shrink.args]
    status, stdout, stderr, seconds = _run(argv, env, work)
    shown = f"`{command.text} {' '.join(shrink.args)}` ({seconds:.0f} s, exit status {status})"
    print(shown)
    allowed = {0, BELOW_TARGET} if shrink.target else {0}
    assert status in allowed, f"{shown} failed:\n{stdout[-2000:]}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, f"{shown} printed a traceback:\n{stderr[-3000:]}"
    missing = [pattern for pattern in shrink.results if not re.search(pattern, stdout, re.MULTILINE)]
    assert not missing, f"{shown} did not print its result: no line matches {missing}\n{stdout[-3000:]}"
