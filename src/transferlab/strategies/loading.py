"""Rebuild a trained strategy module from its checkpoint alone, without running code stored in it."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transferlab.errors import UserError
from transferlab.strategies.base import CHECKPOINT_KEY, TransferModule
from transferlab.utils.safe_load import safe_torch_load

log = logging.getLogger(__name__)

# Hyperparameters renamed since earlier checkpoints were written: old name -> new name.
RENAMED_HPARAMS = {"frozen_bn_eval": "frozen_blocks_eval", "freeze_batchnorm": "freeze_bn_stats"}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a transferlab checkpoint safely and check it carries what eval and predict need."""
    checkpoint = safe_torch_load(path, what="checkpoint")
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise UserError(
            f"{path} is not a transferlab checkpoint (no module class or preprocessing inside). Point "
            "ckpt_path at checkpoints/best.ckpt or checkpoints/last.ckpt of a transferlab-train run."
        )
    return checkpoint


def load_module_from_checkpoint(path: str | Path) -> TransferModule:
    """Rebuild the strategy module of a checkpoint, with its trained weights, in eval mode.

    Works for every strategy: the checkpoint names the module class and holds its constructor arguments.
    The backbone is built without pretrained weights (``weights=none``): the checkpoint holds them all,
    so predicting needs neither internet nor the original weight files.
    """
    checkpoint = read_checkpoint(path)
    module_path: str = checkpoint[CHECKPOINT_KEY]["module"]
    cls = _strategy_class(module_path)
    if cls is None:
        raise UserError(
            f"{path} names module class {module_path!r}, which is neither a strategy of this version of "
            "transferlab nor a TransferModule subclass of code imported before loading."
        )
    hparams = {RENAMED_HPARAMS.get(k, k): v for k, v in checkpoint.get("hyper_parameters", {}).items()}
    hparams["backbone"] = {**hparams["backbone"], "weights": "none"}
    with _without_random_initialisation_notice():
        module = cls(**hparams)
    module.load_state_dict(checkpoint["state_dict"])
    log.info(
        "Loaded %s (backbone %s) with all its weights from %s.",
        cls.__name__,
        hparams["backbone"]["name"],
        path,
    )
    return module.eval()


def require_fixed_classes(module: TransferModule, path: str | Path, instead: str) -> None:
    """Refuse a checkpoint without fixed classes (a few-shot model) where a command needs a classifier.

    Raises:
        UserError: naming the model and what to run ``instead``.
    """
    if not getattr(module, "class_names", None):
        raise UserError(
            f"{path} holds a {type(module).__name__}, which has no fixed classes (a few-shot model: its "
            f"classes come from examples). {instead}"
        )


@contextmanager
def _without_random_initialisation_notice() -> Iterator[None]:
    """Drop the backbone builder's "random initialisation" notice: the checkpoint's weights replace them."""
    build_log = logging.getLogger("transferlab.backbones.build")

    def keep(record: logging.LogRecord) -> bool:
        return "random initialisation" not in record.getMessage()

    build_log.addFilter(keep)
    try:
        yield
    finally:
        build_log.removeFilter(keep)


def _strategy_class(module_path: str) -> type[TransferModule] | None:
    """The TransferModule subclass at ``module_path``, or None.

    Only modules of ``transferlab.strategies`` are imported on the checkpoint's word; a strategy defined
    elsewhere (a project's own package, a test) must already be imported, so loading never imports
    arbitrary modules named in a file.
    """
    module_name = module_path.rpartition(".")[0]
    if module_name.startswith("transferlab.strategies."):
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError:
            return None
    pending = [TransferModule]
    while pending:
        cls = pending.pop()
        if f"{cls.__module__}.{cls.__qualname__}" == module_path:
            return cls
        pending += cls.__subclasses__()
    return None
