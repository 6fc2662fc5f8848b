"""Does a checkpoint fit the model a config builds? Checked before its weights are loaded into it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from transferlab.errors import UserError
from transferlab.strategies.base import CHECKPOINT_KEY


def check_checkpoint_matches(
    checkpoint: Mapping[str, Any],
    model: torch.nn.Module,
    class_names: Sequence[str] | None,
    path: str | Path,
    *,
    purpose: str,
) -> None:
    """Raise a :class:`UserError` unless ``checkpoint`` holds weights for exactly ``model`` and the classes.

    Args:
        checkpoint: the loaded checkpoint (``read_checkpoint``).
        model: the module built from the config.
        class_names: the classes of the data the config points at.
        path: the checkpoint's path, for the message.
        purpose: what the checkpoint is used for ("resumed", "tested"), for the message.

    Raises:
        UserError: other classes, another strategy, or weights of other names or shapes.
    """
    stored = checkpoint.get(CHECKPOINT_KEY, {})
    fix = (
        f"Use the settings of the run that wrote it (its .hydra/config.yaml), or test it with "
        f"`transferlab-eval ckpt_path={path}`, which rebuilds the model from the checkpoint."
    )
    # None on both sides: a module without a fixed class set (few-shot), resumed on few-shot data.
    wanted = None if class_names is None else list(class_names)
    trained_on = stored.get("class_names", wanted)
    if (None if trained_on is None else list(trained_on)) != wanted:
        raise UserError(
            f"ckpt_path={path} cannot be {purpose}: it was trained on the classes {trained_on}, the data has "
            f"{wanted}. Point data.root at data with the same class folders."
        )
    module = f"{type(model).__module__}.{type(model).__qualname__}"
    if stored.get("module", module) != module:
        raise UserError(
            f"ckpt_path={path} cannot be {purpose}: it holds a {stored['module']}, the config builds a "
            f"{module}. {fix}"
        )
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    weights = checkpoint["state_dict"]
    got = {name: tuple(value.shape) for name, value in weights.items() if isinstance(value, torch.Tensor)}
    if got != expected:
        missing = sorted(set(expected) - set(got))
        unexpected = sorted(set(got) - set(expected))
        reshaped = sorted(n for n in set(got) & set(expected) if got[n] != expected[n])
        differences = (("missing", missing), ("not in the model", unexpected), ("other shape", reshaped))
        details = "; ".join(
            f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for label, names in differences
            if names
        )
        raise UserError(
            f"ckpt_path={path} cannot be {purpose}: its weights do not fit the model the config builds "
            f"({details}). {fix}"
        )
