"""Cost of a feature-extraction epoch with and without the feature cache, at the command line, side by side.

Runs ``transferlab-train model=feature_extraction`` as a user does (fresh processes, the default demo data,
pretrained EfficientNet-Lite0 at 96 px, shipped settings such as ``data.num_workers=2``, callbacks and
loggers) with 2 and with 6 epochs, cached (``model.feature_cache=true``, the default) and uncached
(``model.feature_cache=false``). The cost of 4 epochs is the wall time of the 6-epoch run minus that of
the 2-epoch run: start-up, the one-off cache build and the final checkpoint cancel out. ``test=false``
skips the test split, which would cancel out too. The four runs alternate over several rounds; the
ratio is the median of the per-round ratios. A warm-up run writes the demo data and the cache first.

    python benchmarks/bench_feature_cache.py [--rounds 3] [--work DIR]

Exits with status 1 when cached epochs are not at least 40x cheaper.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 40.0


def run(work: Path, name: str, epochs: int, cached: bool) -> tuple[float, float]:
    """Wall time of one training command, and the val/acc it reports."""
    out = work / "runs" / name
    command = [
        sys.executable, "-m", "transferlab.train", "model=feature_extraction", f"trainer.max_epochs={epochs}",
        f"model.feature_cache={str(cached).lower()}", "test=false", f"hydra.run.dir={out}",
    ]  # fmt: skip
    env = {**os.environ, "TRANSFERLAB_ROOT": str(work), "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return elapsed, json.loads((out / "metrics.json").read_text())["val/acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, help="working folder (default: a new temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_feature_cache_"))
    work.mkdir(parents=True, exist_ok=True)
    run(work, "warmup", 1, cached=True)
    four_epochs: dict[bool, list[float]] = {False: [], True: []}
    accuracy: dict[bool, list[float]] = {False: [], True: []}
    ratios = []
    for round_index in range(args.rounds):
        for cached in (False, True):
            short, _ = run(work, f"r{round_index}_{cached}_2", 2, cached)
            long, acc = run(work, f"r{round_index}_{cached}_6", 6, cached)
            four_epochs[cached].append(long - short)
            accuracy[cached].append(acc)
            print(f"round {round_index} cached={cached}: 2 epochs {short:.2f} s, 6 epochs {long:.2f} s, "
                  f"val/acc {acc:.3f}", flush=True)  # fmt: skip
        ratios.append(four_epochs[False][-1] / four_epochs[True][-1])
    plain_epoch = statistics.median(four_epochs[False]) / 4
    cached_epoch = statistics.median(four_epochs[True]) / 4
    ratio = statistics.median(ratios)
    print()
    print(
        "| date | machine | command | epoch (no cache) | epoch (cache) | ratio | val/acc no cache / cache |"
    )
    print(
        f"| {datetime.date.today()} | {platform.machine()}, {os.cpu_count()} cores | "
        f"`python benchmarks/bench_feature_cache.py --rounds {args.rounds}` | {plain_epoch:.2f} s | "
        f"{cached_epoch:.3f} s | **{ratio:.0f}x** (rounds: {', '.join(f'{r:.0f}x' for r in ratios)}) | "
        f"{statistics.mean(accuracy[False]):.3f} / {statistics.mean(accuracy[True]):.3f} |"
    )
    if ratio < TARGET:
        sys.exit(f"cached epochs are {ratio:.0f}x cheaper, below the {TARGET:.0f}x target")


if __name__ == "__main__":
    main()
