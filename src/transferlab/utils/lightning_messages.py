"""Lightning's messages that tell a user nothing about the run, kept out of every command's output."""

from __future__ import annotations

import logging
import warnings

# Lightning logs this advertisement through its rank-zero logger each time a Trainer is built.
ADVERTISEMENTS = ("💡 Tip: For seamless cloud logging",)
LIGHTNING_RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERTISEMENTS)


def drop_lightning_advertisements() -> None:
    """Filter :data:`ADVERTISEMENTS` out of Lightning's rank-zero logger (once per process)."""
    logger = logging.getLogger(LIGHTNING_RANK_ZERO_LOGGER)
    if not any(isinstance(existing, _DropAdvertisements) for existing in logger.filters):
        logger.addFilter(_DropAdvertisements())


def drop_lightning_deprecation_warnings() -> None:
    """Hide the FutureWarning torch gives on Lightning's own use of ``LeafSpec``, printed in every fit and
    test: nothing a user of transferlab can change. Each process must call it (warnings filters are not
    inherited by spawned DDP processes)."""
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
