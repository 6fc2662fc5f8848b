"""A CSV logger that keeps the columns already in ``metrics.csv`` when another process continues the file."""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class ContinuingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, except that a header rewrite keeps the columns of the existing file.

    Lightning's writer only knows the columns it logged itself. Under DDP with the ``spawn`` start method,
    ``fit`` and ``test`` run in different worker processes, so the writer of ``test`` rewrote the file with
    the test columns only and failed on the training rows ("dict contains fields not in fieldnames").
    """

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
    """``lightning.pytorch.loggers.CSVLogger`` writing through :class:`ContinuingExperimentWriter`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
