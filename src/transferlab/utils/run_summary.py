"""What a run tells the user when it ends: the numbers, where the outputs are, how to look at them."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table


@rank_zero_only
def print_run_summary(metrics: Mapping[str, float], output_dir: str | Path, title: str = "results") -> None:
    """Print final metrics, the output folder and the TensorBoard command for it."""
    console = Console()
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        if name.startswith(("test/", "val/acc_best", "val/acc", "train/acc")) and "step" not in name:
            table.add_row(name, f"{metrics[name]:.4f}")
    console.print(table)
    output_dir = Path(output_dir).resolve()
    console.print(f"Outputs: [bold]{output_dir}[/]")
    console.print(f"TensorBoard: [bold]tensorboard --logdir {output_dir}[/]")


def scalar_metrics(raw: Mapping[str, object]) -> dict[str, float]:
    """Metrics as plain floats (Lightning keeps them as tensors)."""
    out = {}
    for name, value in raw.items():
        try:
            out[name] = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return out


METRICS_FILE = "metrics.json"


@rank_zero_only
def write_metrics(metrics: Mapping[str, float], output_dir: str | Path) -> Path:
    """Write the final metrics to ``output_dir/metrics.json`` (read back by multirun summaries)."""
    path = Path(output_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")
    os.replace(tmp, path)
    return path
