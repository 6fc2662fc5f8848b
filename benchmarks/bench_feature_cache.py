"""Cost of a feature-extraction epoch with and without the feature cache, at the command line, side by side.

Runs ``transferlab-train model=feature_extraction`` as a user does (fresh processes, the default demo data,
pretrained EfficientNet-Lite0 at 96 px, shipped settings such as ``data.num_workers=2``, callbacks and
loggers) with 2 and with 6 epochs, cached (``model.feature_cache=true``, the default) and uncached
(``model.feature_cache=false``). The cost of 4 epochs is the wall time of the 6-epoch run minus that of
the 2-epoch run: start-up, the one-off cache build and the final checkpoint cancel out. ``test=false``
skips the test split, which would cancel out too. The four runs alternate over several rounds, every
other round in the opposite order (so a slow drift of the machine's speed cancels; use an even number of
rounds); the ratio is that of the medians. The epoch-to-epoch times inside the long runs (from their
TensorBoard event times) are printed as well: they carry none of the start-up noise. Besides wall time,
the CPU time of each command (user + system, its loader workers included) is reported: on a machine shared
with other jobs it is the steadier of the two. A warm-up run writes the demo data and the cache first.

    python benchmarks/bench_feature_cache.py [--rounds 4] [--work DIR] [--epochs 2 6] [OVERRIDE ...]

``--epochs SHORT LONG`` sets the two run lengths (the cost is that of LONG - SHORT epochs); overrides are
passed to every run (e.g. ``data.demo_per_class={train:4,val:2,test:2}`` to check the script quickly).
Exits with status 4 (``_target.BELOW_TARGET``) when cached epochs are not at least 40x cheaper by the
clock, or when that cannot be told: a ratio is printed as "not measurable" when in any round the longer
cached command was no slower than the shorter one (start-up noise larger than the epochs measured).
Exits with status 1 when a run fails.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from _target import below_target

TARGET = 40.0


class Timing(NamedTuple):
    """One training command: wall and CPU time (user + system, worker processes included), the wall time
    of its job after start-up (from Hydra's writing the run's config to the exit), and its val/acc."""

    wall: float
    cpu: float
    job: float
    accuracy: float


def run(work: Path, name: str, epochs: int, cached: bool, overrides: list[str]) -> Timing:
    """Run one training command and time it."""
    out = work / "runs" / name
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "transferlab.train", "model=feature_extraction", f"trainer.max_epochs={epochs}",
        f"model.feature_cache={str(cached).lower()}", "test=false", f"hydra.run.dir={out}", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "TRANSFERLAB_ROOT": str(work), "PYTHONWARNINGS": "ignore"}
    with open(out / "stdout.txt", "wb") as stdout, open(out / "stderr.txt", "wb") as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=work, env=env, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        finished = time.time()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{(out / 'stderr.txt').read_text()[-3000:]}")
    accuracy = json.loads((out / "metrics.json").read_text())["val/acc"]
    job = finished - (out / ".hydra" / "config.yaml").stat().st_mtime
    return Timing(elapsed, usage.ru_utime + usage.ru_stime, job, accuracy)


def epoch_intervals(run_dir: Path) -> list[float]:
    """Seconds between the ends of consecutive validation epochs of a finished run (TensorBoard times)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    times: list[float] = []
    for events in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0}).Reload()
        if "val/acc" in accumulator.Tags()["scalars"]:
            times += [event.wall_time for event in accumulator.Scalars("val/acc")]
    times.sort()
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--work", type=Path, help="working folder (default: a new temporary one)")
    parser.add_argument("--epochs", type=int, nargs=2, default=[2, 6], metavar=("SHORT", "LONG"))
    parser.add_argument("overrides", nargs="*", help="config overrides for every run")
    args = parser.parse_args()
    if not 1 <= args.epochs[0] < args.epochs[1]:
        parser.error("--epochs SHORT LONG needs 1 <= SHORT < LONG")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_feature_cache_"))
    work.mkdir(parents=True, exist_ok=True)
    short, long = args.epochs
    run(work, "warmup", 1, cached=True, overrides=args.overrides)
    # cost of LONG - SHORT epochs (4 by default), by clock ("wall"), by CPU time ("cpu") and by the clock
    # after start-up ("job")
    kinds = ("wall", "cpu", "job")
    costs: dict[tuple[str, bool], list[float]] = {(k, c): [] for k in kinds for c in (False, True)}
    accuracy: dict[bool, list[float]] = {False: [], True: []}
    intervals: dict[bool, list[float]] = {False: [], True: []}  # epoch to epoch, inside the long runs
    for round_index in range(args.rounds):
        # Every other round runs its commands in the opposite order, so a drift of the machine's speed
        # (other jobs starting or ending) cancels instead of favouring one of them.
        forward = round_index % 2 == 0
        for cached in (False, True) if forward else (True, False):
            name = f"r{round_index}_{cached}"
            lengths = (short, long) if forward else (long, short)
            timed = {n: run(work, f"{name}_{n}", n, cached, args.overrides) for n in lengths}
            intervals[cached] += epoch_intervals(work / "runs" / f"{name}_{long}")
            for kind in kinds:
                costs[kind, cached].append(getattr(timed[long], kind) - getattr(timed[short], kind))
            accuracy[cached].append(timed[long].accuracy)
            print(
                f"round {round_index} cached={cached}: {short} / {long} epochs: "
                + ", ".join(
                    f"{k} {getattr(timed[short], k):.2f} / {getattr(timed[long], k):.2f} s" for k in kinds
                )
                + f"; val/acc {timed[long].accuracy:.3f}",
                flush=True,
            )

    def measurable(kind: str) -> bool:
        # In a round where the longer cached command was no slower than the shorter one, the noise of
        # starting a command exceeded the cost measured: a median over such rounds is noise, whatever it is.
        return min(costs[kind, True]) > 0

    def summary(kind: str) -> tuple[float, float, str]:
        plain, cached = statistics.median(costs[kind, False]), statistics.median(costs[kind, True])
        ratio = f"{plain / cached:.0f}x" if measurable(kind) else "not measurable"
        return plain / (long - short), cached / (long - short), ratio

    wall, cpu, job = summary("wall"), summary("cpu"), summary("job")
    command = ["python", "benchmarks/bench_feature_cache.py", "--rounds", str(args.rounds)]
    if args.epochs != [2, 6]:
        command += ["--epochs", str(short), str(long)]
    command += args.overrides
    print()
    print(
        "| date | machine | command | epoch no cache / cache (wall) | ratio (wall) | epoch no cache / cache "
        "(CPU) | ratio (CPU) | val/acc no cache / cache |"
    )
    print(
        f"| {datetime.date.today()} | {platform.machine()}, {os.cpu_count()} cores | "
        f"`{shlex.join(command)}` | "
        f"{wall[0]:.2f} s / {wall[1]:.3f} s | **{wall[2]}** | "
        f"{cpu[0]:.2f} s / {cpu[1]:.3f} s | {cpu[2]} | "
        f"{statistics.mean(accuracy[False]):.3f} / {statistics.mean(accuracy[True]):.3f} |"
    )
    # The difference of two whole commands carries their start-up noise (seconds on a busy machine); the
    # epochs' own timestamps do not, so they are reported too (not the target's measure).
    inside = [statistics.median(intervals[cached]) for cached in (False, True)]
    print(
        f"epoch to epoch inside the {long}-epoch runs (median of {len(intervals[False])} / "
        f"{len(intervals[True])} intervals between validation ends, TensorBoard times): "
        f"no cache {inside[0]:.2f} s / cache {inside[1]:.3f} s: {inside[0] / inside[1]:.0f}x"
    )
    # Most of a command's start-up noise is in starting the interpreter and importing the libraries: the
    # job after that (config, model, cache, epochs, checkpoints, exit) is timed too (not the target measure).
    print(
        f"after start-up (from the run's .hydra/config.yaml to the exit), ({long} - {short} epochs) / "
        f"{long - short}, median: no cache {job[0]:.2f} s / cache {job[1]:.3f} s: {job[2]}"
    )
    if not measurable("wall"):
        slower = sum(cost <= 0 for cost in costs["wall", True])
        below_target(
            f"in {slower} of {args.rounds} rounds the {long}-epoch cached command took no longer than the "
            f"{short}-epoch one: its epochs cost less than the noise of starting a command, and the target "
            "cannot be checked. Use a quieter machine or a larger LONG in --epochs."
        )
    ratio = wall[0] / wall[1]
    if not ratio >= TARGET:
        below_target(f"cached epochs are {ratio:.0f}x cheaper by the clock, below the {TARGET:.0f}x target")


if __name__ == "__main__":
    main()
