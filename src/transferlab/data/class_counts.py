"""Images per class and split: counted at setup, logged, and shown in TensorBoard."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

TENSORBOARD_TAG = "data/class_counts"


def count_per_class(samples: Sequence[tuple[str, int]], num_classes: int) -> list[int]:
    """Number of samples of each class, in class order (zero for classes without samples)."""
    counts = [0] * num_classes
    for _, label in samples:
        counts[label] += 1
    return counts


def class_count_rows(class_names: Sequence[str], counts: Mapping[str, Sequence[int]]) -> list[list[str]]:
    """A table as rows of cells: a header ``class, <split>..., `` then one row per class and a total row."""
    splits = list(counts)
    rows = [["class", *splits]]
    rows += [[name, *(str(counts[s][i]) for s in splits)] for i, name in enumerate(class_names)]
    rows.append(["total", *(str(sum(counts[s])) for s in splits)])
    return rows


def log_class_counts(class_names: Sequence[str], counts: Mapping[str, Sequence[int]]) -> None:
    """Log the per-class counts as an aligned table, one log line per row."""
    rows = class_count_rows(class_names, counts)
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    log.info("Images per class:")
    for name, *numbers in rows:
        cells = [name.ljust(widths[0]), *(n.rjust(w) for n, w in zip(numbers, widths[1:], strict=True))]
        log.info("  %s", "  ".join(cells))


def class_counts_markdown(class_names: Sequence[str], counts: Mapping[str, Sequence[int]]) -> str:
    """The per-class counts as a markdown table (TensorBoard's text tab renders markdown)."""
    header, *body = class_count_rows(class_names, counts)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def add_class_counts_to_tensorboard(
    trainer: Any, class_names: Sequence[str], counts: Mapping[str, Sequence[int]]
) -> bool:
    """Add the counts table to the text tab of every TensorBoard logger of ``trainer``, on rank zero only.

    Args:
        trainer: a Lightning trainer, or None.
        class_names: names by class index.
        counts: per split, the count of each class.

    Returns:
        Whether a TensorBoard logger was found and written to.
    """
    from lightning.pytorch.loggers import TensorBoardLogger  # only needed with a trainer

    if trainer is None or not getattr(trainer, "is_global_zero", True):
        return False
    loggers = [lg for lg in getattr(trainer, "loggers", []) if isinstance(lg, TensorBoardLogger)]
    for logger in loggers:
        logger.experiment.add_text(TENSORBOARD_TAG, class_counts_markdown(class_names, counts), global_step=0)
    return bool(loggers)
