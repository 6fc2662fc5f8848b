"""Rebuild a trained strategy module from its checkpoint alone, without running code stored in it."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from transferlab.errors import UserError
from transferlab.strategies.base import CHECKPOINT_KEY, TransferModule
from transferlab.utils.safe_load import safe_torch_load


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a transferlab checkpoint safely and check it carries what eval and predict need."""
    checkpoint = safe_torch_load(path, what="checkpoint")
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise UserError(
            f"{path} is not a transferlab checkpoint (no class names or preprocessing inside). Point "
            "ckpt_path at checkpoints/best.ckpt or checkpoints/last.ckpt of a transferlab-train run."
        )
    return checkpoint


def load_module_from_checkpoint(path: str | Path) -> TransferModule:
    """Rebuild the strategy module of a checkpoint, with its trained weights, in eval mode.

    The backbone is built without pretrained weights (``weights=none``): the checkpoint holds them all,
    so predicting needs neither internet nor the original weight files.
    """
    checkpoint = read_checkpoint(path)
    module_path: str = checkpoint[CHECKPOINT_KEY]["module"]
    module_name, _, class_name = module_path.rpartition(".")
    # Only classes of this package may be built from a checkpoint's text.
    if not module_name.startswith("transferlab.strategies."):
        raise UserError(f"{path} names module class {module_path!r}, which is not a transferlab strategy.")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, TransferModule)):
        raise UserError(f"{path} names module class {module_path!r}, which does not exist in this version.")
    hparams = dict(checkpoint.get("hyper_parameters", {}))
    hparams["backbone"] = {**hparams["backbone"], "weights": "none"}
    module = cls(**hparams)
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()
