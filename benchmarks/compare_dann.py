"""Source-only against DANN on a two-domain experiment, over several seeds.

Runs ``transferlab-train -m experiment=EXPERIMENT model=source_only,dann seed=...`` (or reads the
``summary.json`` of such a sweep with ``--summary``) and prints mean +- std over the seeds of each model's
target and source test accuracy and proxy A-distance, as markdown rows for benchmarks/RESULTS.md.

    python benchmarks/compare_dann.py                                  # animal_mnist_m, seeds 1,2,3
    python benchmarks/compare_dann.py --experiment digits_shift
    python benchmarks/compare_dann.py --summary logs/compare_dann/DATE/summary.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

METRICS = ("test/target_acc", "test/source_acc", "test/a_distance", "val/target_acc")
MODELS = ("source_only", "dann")


def run_sweep(experiment: str, seeds: str, sweep_dir: Path, extra: list[str]) -> Path:
    """Run the multirun and return its summary.json."""
    command = [
        sys.executable, "-m", "transferlab.train", "-m", f"experiment={experiment}",
        f"model={','.join(MODELS)}", f"seed={seeds}", f"hydra.sweep.dir={sweep_dir}",
        "callbacks.rich_progress_bar=null", "+trainer.enable_progress_bar=false", *extra,
    ]  # fmt: skip
    print("running:", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
    return sweep_dir / "summary.json"


def per_model(summary: dict) -> dict[str, dict[str, list[float]]]:
    """Each model's values of :data:`METRICS` over its jobs (one per seed)."""
    values: dict[str, dict[str, list[float]]] = {m: {k: [] for k in METRICS} for m in MODELS}
    for job in summary["jobs"]:
        model = next(o.split("=", 1)[1] for o in job["overrides"] if o.startswith("model="))
        for key in METRICS:
            if key in job["metrics"]:
                values[model][key].append(job["metrics"][key])
    return values


def mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} +- {100 * std:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="animal_mnist_m")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument(
        "--sweep-dir", type=Path, default=Path(f"logs/compare_dann/{time.strftime('%Y%m%d-%H%M%S')}")
    )
    parser.add_argument("--summary", type=Path, help="summarize this finished sweep instead of running one")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = parser.parse_args(argv)
    path = args.summary or run_sweep(args.experiment, args.seeds, args.sweep_dir, args.overrides)
    values = per_model(json.loads(path.read_text()))
    print(f"\nFrom {path} (accuracies in %, A-distance x100; mean +- std over seeds):")
    print("| model | seeds | test/target_acc | test/source_acc | test/a_distance | val/target_acc |")
    print("|---|---|---|---|---|---|")
    for model in MODELS:
        v = values[model]
        cells = " | ".join(mean_std(v[key]) for key in METRICS)
        print(f"| {model} | {len(v['test/target_acc'])} | {cells} |")
    gain = [
        d - s
        for d, s in zip(
            values["dann"]["test/target_acc"], values["source_only"]["test/target_acc"], strict=False
        )
    ]
    if gain:
        print(f"\nDANN - source-only target accuracy: {100 * statistics.fmean(gain):+.1f} points (by seed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
