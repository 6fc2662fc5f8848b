"""Hydra callbacks: what happens around runs and multiruns, outside any single training job."""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from transferlab.utils.atomic import write_json_atomically
from transferlab.utils.run_summary import METRICS_FILE

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
DEFAULT_METRIC = "val/acc_best"


def read_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished job under ``sweep_dir``: its folder, command-line overrides and final metrics.

    A job counts as finished when its folder holds ``metrics.json`` (written by the training task at the
    end); its overrides come from Hydra's ``.hydra/overrides.yaml`` next to it.
    """
    jobs = []
    for metrics_path in sorted(Path(sweep_dir).rglob(METRICS_FILE)):
        job_dir = metrics_path.parent
        overrides_path = job_dir / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_path)) if overrides_path.is_file() else []
        try:
            metrics = json.loads(metrics_path.read_text())
        except json.JSONDecodeError:
            log.warning("Skipping %s: not valid JSON", metrics_path)
            continue
        jobs.append({"dir": str(job_dir), "overrides": overrides, "metrics": metrics})
    return jobs


def summarize(jobs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, sample standard deviation (0 for one job), min, max and count of every metric over the jobs."""
    values: dict[str, list[float]] = {}
    for job in jobs:
        for name, value in job["metrics"].items():
            if isinstance(value, int | float) and math.isfinite(value):
                values.setdefault(name, []).append(float(value))
    return {
        name: {
            "mean": statistics.fmean(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals),
            "max": max(vals),
            "n": len(vals),
        }
        for name, vals in sorted(values.items())
    }


class MultirunSummary(Callback):
    """At the end of a multirun, write ``<sweep dir>/summary.json`` and print the optimized metric.

    ``summary.json`` holds ``metrics`` (mean, std, min, max, n per metric over the finished jobs) and
    ``jobs`` (each job's folder, overrides and final metrics), so seeds or settings are compared without
    opening each job. The printed line is ``<metric>: mean ± std over n jobs`` for ``optimized_metric``.

    Args:
        metric: the metric to print; ``None`` uses the config's ``optimized_metric`` (``val/acc_best``).
    """

    def __init__(self, metric: str | None = None) -> None:
        self.metric = metric

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = read_jobs(sweep_dir)
        if not jobs:
            log.warning("No job of the multirun in %s wrote %s: no summary written", sweep_dir, METRICS_FILE)
            return
        stats = summarize(jobs)
        metric = self.metric or config.get("optimized_metric") or DEFAULT_METRIC
        summary = {"sweep_dir": str(sweep_dir), "optimized_metric": metric, "metrics": stats, "jobs": jobs}
        path = write_json_atomically(summary, sweep_dir / SUMMARY_FILE)
        if metric in stats:
            s = stats[metric]
            line = (
                f"{metric}: {s['mean']:.4f} ± {s['std']:.4f} over {s['n']} jobs "
                f"(min {s['min']:.4f}, max {s['max']:.4f})"
            )
        else:
            line = f"{metric}: not reported by any of the {len(jobs)} jobs"
        print(f"Multirun summary: {line}\nSummary: {path.resolve()}", flush=True)
