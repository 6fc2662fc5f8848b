"""The notebooks run end to end, as stored, with tiny settings injected into their parameters cell."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute_notebook(name: str, parameters: dict[str, object], workdir: Path) -> nbformat.NotebookNode:
    """Run ``notebooks/<name>`` in a fresh kernel of this environment with its parameters replaced.

    The cell tagged ``parameters`` is kept and a cell assigning ``parameters`` is inserted after it, so
    the notebook's own defaults stay visible (papermill's convention). A failing cell raises
    ``CellExecutionError`` carrying that cell's source and error.
    """
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert tagged, f"{name} has no cell tagged 'parameters'"
    injected = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(injected))
    client = NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()
    return notebook


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    """Everything the cells printed."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") or str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def figures(notebook: nbformat.NotebookNode) -> int:
    """Number of PNG figures the cells displayed."""
    return sum("image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", []))


def test_notebooks_are_stored_without_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} holds outputs"


def test_quickstart_runs_end_to_end(tmp_path: Path) -> None:
    parameters = {
        "MAX_EPOCHS": 1,
        "DEMO_PER_CLASS": {"train": 6, "val": 3, "test": 3},
        "WORKDIR": str(tmp_path / "work"),
        "NUM_WORKERS": 2,
    }
    notebook = execute_notebook("01_quickstart.ipynb", parameters, tmp_path)
    text = outputs_text(notebook)
    assert "feature extraction: test accuracy" in text and "fine-tuning: test accuracy" in text
    assert "litlogger" not in text  # what the kernel printed besides: not Lightning's advertisement
    assert "predicted correctly" in text
    assert figures(notebook) >= 3  # images grid, confusion matrix, curves
    runs = tmp_path / "work" / "runs"
    assert (runs / "finetune" / "checkpoints" / "best.ckpt").is_file()
    assert (runs / "predict" / "predictions.csv").is_file()
    assert (runs / "export" / "model.onnx").is_file()


@pytest.mark.slow
def test_a_failing_cell_fails_with_its_error(tmp_path: Path) -> None:
    parameters = {"MAX_EPOCHS": 1, "WORKDIR": str(tmp_path / "work"), "NUM_WORKERS": -1}
    with pytest.raises(CellExecutionError, match=r"data\.num_workers must be 0 or more"):
        execute_notebook("01_quickstart.ipynb", parameters, tmp_path)


@pytest.mark.slow
def test_strategies_runs_end_to_end(tmp_path: Path) -> None:
    parameters = {
        "BACKBONE": "small_cnn",  # the mechanics, not the accuracy
        "IMAGE_SIZE": 28,
        "MAX_EPOCHS": 2,  # two points on each training curve
        "DEMO_PER_CLASS": {"train": 6, "val": 3, "test": 3},
        "EPISODES": 10,
        "TRAINER_LIMITS": {"limit_train_batches": 3, "limit_val_batches": 2},
        "WORKDIR": str(tmp_path / "work"),
        "NUM_WORKERS": 2,
    }
    notebook = execute_notebook("02_strategies.ipynb", parameters, tmp_path)
    text = outputs_text(notebook)
    number = r"[012]\.\d{3}"  # an accuracy or A-distance as printed
    for strategy in ("feature extraction", "fine-tuning", "gradual unfreezing"):
        assert re.search(rf"^{strategy} +{number} +\d+s$", text, re.MULTILINE), strategy
    for label in ("source-only", "DANN"):
        line = f"^{label}: source test accuracy {number}, target test accuracy {number}, A-distance {number}$"
        assert re.search(line, text, re.MULTILINE), label
    assert re.search(
        rf"A-distance before adaptation \(source-only\) {number} -> after \(DANN\) {number}", text
    )
    assert re.search(r"episode: 5-way 1-shot, \d+/50 queries right", text)
    for shots in (1, 5):
        line = f"5-way {shots}-shot: ProtoNet {number} ± {number}, backbone alone {number} ± {number} "
        assert re.search(line + r"\(10 episodes\)", text), shots
    assert figures(notebook) == 4  # accuracy/wall time, target curves, episode, few-shot accuracies
    runs = tmp_path / "work" / "runs"
    for name in ("feature_extraction", "finetune", "gradual_unfreezing", "source_only", "dann", "protonet"):
        assert (runs / name / "checkpoints" / "best.ckpt").is_file(), name
    # the target curves come from two validated epochs of each domain-adaptation run
    for name in ("source_only", "dann"):
        with open(runs / name / "csv" / "metrics.csv", newline="") as handle:
            epochs = {row["epoch"] for row in csv.DictReader(handle) if row.get("val/target_acc")}
        assert epochs == {"0", "1"}, name
