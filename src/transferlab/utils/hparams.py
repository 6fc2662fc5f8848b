"""The hyperparameters of a run next to its final metrics, in TensorBoard's HParams view."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams


def _tensorboard_value(value: Any) -> int | float | str | bool:
    return value if isinstance(value, int | float | str | bool) else str(value)


@rank_zero_only
def log_final_hparams(
    loggers: Iterable[Logger], params: Mapping[str, Any], metrics: Mapping[str, float]
) -> None:
    """Write one HParams session (``params`` against the ``metrics`` names) to every TensorBoard logger.

    Call it once at the end of a run. The HParams view then lists the run's parameters with the last value
    of each metric's scalar series (``val/acc_best``, ``test/acc``...), so every job of a multirun under one
    ``--logdir`` is one comparable row. No scalar is written here: the metrics were logged during the run,
    and logging them again would add a spurious point to each curve.

    Args:
        loggers: the trainer's loggers; the ones that are not TensorBoard loggers are skipped.
        params: flat ``name -> value`` settings (values that are not numbers, strings or booleans are shown
            as text).
        metrics: the final metrics; only their names are used.
    """
    clean = {str(k): _tensorboard_value(v) for k, v in params.items()}
    experiment, session_start, session_end = hparams(clean, {name: 0.0 for name in metrics})
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment._get_file_writer()
            for summary in (experiment, session_start, session_end):
                writer.add_summary(summary)
            writer.flush()
