"""Forgetting check of fine-tuning from a source-task checkpoint (the callback train.py can add by config)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FAST_OVERRIDES, run_cli
from tests.test_domain_data import make_target
from transferlab.train import train

CALLBACK = "callbacks.source_forgetting"


def test_fine_tuning_from_a_source_checkpoint_reports_source_accuracy_before_and_after(
    train_config, tiny_data: Path, tmp_path: Path
) -> None:
    source_metrics, _ = train(train_config("trainer.max_epochs=2", output_dir=tmp_path / "source"))
    checkpoint = tmp_path / "source" / "checkpoints" / "best.ckpt"
    target = make_target(tmp_path / "target", per_class=6)
    overrides = [
        *FAST_OVERRIDES,
        "data.num_workers=2",
        f"data.root={target}",
        f"backbone.weights={checkpoint}",
        "trainer.max_epochs=2",
        f"{CALLBACK}.source_root={tiny_data}",  # the shipped callback, given the source data
    ]
    result = run_cli("transferlab.train", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    # before transfer: exactly the source run's own test accuracy (same checkpoint, same test split)
    assert metrics["test/source_acc_before"] == pytest.approx(source_metrics["test/acc"])
    assert 0.0 <= metrics["test/source_acc_after"] <= 1.0
    assert metrics["test/forgetting"] == pytest.approx(
        metrics["test/source_acc_before"] - metrics["test/source_acc_after"]
    )


def test_the_check_is_inactive_without_a_transferlab_checkpoint(tiny_data: Path) -> None:
    from transferlab.callbacks.source_forgetting import SourceForgetting

    assert not SourceForgetting(source_root=str(tiny_data), checkpoint="imagenet").active()
    assert not SourceForgetting(source_root=None, checkpoint="x.ckpt").active()
