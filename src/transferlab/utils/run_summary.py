"""What a run tells the user when it ends: the numbers, where the outputs are, how to look at them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table

from transferlab.utils.atomic import write_json_atomically


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
    return write_json_atomically(dict(sorted(metrics.items())), Path(output_dir) / METRICS_FILE)
