"""Gradual unfreezing against plain fine-tuning on the default demo: test accuracy and wall time.

Both run the real CLI (``transferlab-train``) with the shipped defaults of ``make train`` (pretrained
EfficientNet-Lite0 on the Animal-MNIST demo, 8 epochs, 2 loader workers), the same seeds, one after the
other, alternating which model goes first per seed. Wall time is the whole command as a user waits for
it (start-up, training, test); CPU time is what the command and its loader workers used, which other
jobs on shared cores disturb much less than the wall time. Data and runs go to a temporary folder.

    python benchmarks/bench_gradual_unfreezing.py [--seeds 0 1 2] [--models finetune gradual_unfreezing] \
        [-- OVERRIDE ...]

No target: it exits with status 0 once every run succeeded, with status 1 when one fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUIET = [
    "callbacks.rich_progress_bar=null",
    "callbacks.validation_images=null",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]


def run(model: str, seed: int, work: Path, extra: list[str]) -> dict[str, float]:
    """One training run through the CLI; its final metrics, wall time and CPU time in seconds."""
    run_dir = work / "runs" / f"{model}_seed{seed}"
    command = [sys.executable, "-m", "transferlab.train", f"model={model}", f"seed={seed}"]
    command += [f"paths.root_dir={work}", f"hydra.run.dir={run_dir}", *QUIET, *extra]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    start, cpu_start = time.perf_counter(), _children_cpu()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "test/acc": metrics["test/acc"],
        "val/acc_best": metrics["val/acc_best"],
        "seconds": seconds,
        "cpu": cpu,
    }


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes (and the workers they waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def mean_std(values: list[float], digits: int) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["finetune", "gradual_unfreezing"])
    parser.add_argument("overrides", nargs="*", help="overrides for every run, e.g. trainer.max_epochs=4")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_gradual_unfreezing_"))
    results: dict[str, list[dict[str, float]]] = {model: [] for model in args.models}
    for index, seed in enumerate(args.seeds):
        order = args.models if index % 2 == 0 else list(reversed(args.models))
        for model in order:
            outcome = run(model, seed, work, args.overrides)
            results[model].append(outcome)
            # other people's jobs share the cores: the 1-minute load average says how busy they were
            print(
                f"seed {seed} {model:<20} test/acc {outcome['test/acc']:.4f}  "
                f"val/acc_best {outcome['val/acc_best']:.4f}  {outcome['seconds']:.1f} s  "
                f"CPU {outcome['cpu']:.1f} s  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )

    date = datetime.date.today().isoformat()
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, no GPU"
    command = ["python", "benchmarks/bench_gradual_unfreezing.py", "--seeds", *map(str, args.seeds)]
    if args.models != parser.get_default("models"):
        command += ["--models", *args.models]
    if args.overrides:
        command += ["--", *args.overrides]  # after --seeds, an override would be read as a seed
    print(f"\n{date}, {machine}, python {platform.python_version()}\n`{shlex.join(command)}`\n")
    print("| model | test/acc (mean ± std) | val/acc_best | wall time, s | CPU time, s | seeds |")
    print("|---|---|---|---|---|---|")
    for model, runs in results.items():
        accuracy = mean_std([r["test/acc"] for r in runs], 4)
        best = mean_std([r["val/acc_best"] for r in runs], 4)
        seconds = mean_std([r["seconds"] for r in runs], 1)
        cpu = mean_std([r["cpu"] for r in runs], 1)
        print(f"| `model={model}` | {accuracy} | {best} | {seconds} | {cpu} | {len(runs)} |")


if __name__ == "__main__":
    main()
