"""A CSV logger that keeps the columns already in ``metrics.csv`` when another process continues the file."""

from __future__ import annotations

import csv
import time
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class ContinuingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, except that a header rewrite keeps the columns of the existing file.

    Lightning's writer only knows the columns it logged itself. Under DDP with the ``spawn`` start method,
    ``fit`` and ``test`` run in different worker processes, so the writer of ``test`` rewrote the file with
    the test columns only and failed on the training rows ("dict contains fields not in fieldnames").

    Lightning's writer also deletes a ``metrics.csv`` it finds when it starts, which is right for the file
    of an earlier run in the same folder but, under DDP spawn, deleted the training rows when the ``test``
    processes started. A file written since ``run_started`` (the time the run's logger was made, in the
    command's own process) is this run's, and is continued; an older one is deleted, as Lightning does.

    Args:
        log_dir: the folder of ``metrics.csv``.
        run_started: when the run began (``time.time()``), or None to delete any file found.
    """

    def __init__(self, log_dir: str, run_started: float | None = None) -> None:
        self.run_started = run_started
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if (
            self.run_started is not None
            and self._fs.isfile(self.metrics_file_path)
            and self._fs.modified(self.metrics_file_path).timestamp() >= self.run_started
        ):
            return  # this run's own file, continued by another of its processes
        super()._check_log_dir_exists()

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                existing = next(csv.reader(file), [])
            missing = [name for name in existing if name not in self.metrics_keys]
            if missing:
                # in place: save() writes the new rows with self.metrics_keys after this rewrite
                self.metrics_keys.extend(missing)
                self.metrics_keys.sort()
        super()._rewrite_with_new_header(self.metrics_keys)


class CSVLogger(LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` writing through :class:`ContinuingExperimentWriter`.

    Remembers when it was made (in the command's process, before any DDP process is spawned), so the
    processes of the same run continue one ``metrics.csv``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_started = time.time()

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuingExperimentWriter(log_dir=self.log_dir, run_started=self.run_started)
        return self._experiment
