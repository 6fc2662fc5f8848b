"""metrics.csv: the processes of one run (DDP spawn: fit, then test) continue it; an older run's goes."""

from __future__ import annotations

import csv
import os
import pickle
import time
from pathlib import Path

from transferlab.utils.csv_logger import CSVLogger


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _log(logger: CSVLogger, metrics: dict[str, float], step: int) -> None:
    logger.log_metrics(metrics, step=step)
    logger.save()


def test_the_processes_of_one_run_continue_its_file(tmp_path: Path) -> None:
    # As under DDP spawn: the command's logger is pickled to the fit processes, then to the test ones.
    sent = pickle.dumps(CSVLogger(str(tmp_path), name="csv", version=""))
    fit, test = pickle.loads(sent), pickle.loads(sent)
    _log(fit, {"train/loss": 1.5, "epoch": 0}, step=4)
    _log(fit, {"train/loss": 0.5, "epoch": 1}, step=9)
    _log(test, {"test/acc": 0.75, "epoch": 2}, step=10)
    rows = _rows(tmp_path / "csv" / "metrics.csv")
    assert [row["train/loss"] for row in rows] == ["1.5", "0.5", ""]
    assert [row["test/acc"] for row in rows] == ["", "", "0.75"]


def test_a_file_of_an_earlier_run_in_the_same_folder_is_replaced(tmp_path: Path) -> None:
    old = tmp_path / "csv" / "metrics.csv"
    old.parent.mkdir()
    old.write_text("epoch,step,old/metric\n0,0,1.0\n")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    logger = CSVLogger(str(tmp_path), name="csv", version="")
    _log(logger, {"train/loss": 2.0, "epoch": 0}, step=0)
    rows = _rows(old)
    assert len(rows) == 1 and "old/metric" not in rows[0] and rows[0]["train/loss"] == "2.0"
