"""Where backbone weights come from, and loading them with errors that say what does not fit."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from transferlab.errors import UserError
from transferlab.utils.safe_load import safe_torch_load

# Prefix of backbone entries in a transferlab (Lightning) checkpoint's state_dict.
CHECKPOINT_PREFIX = "backbone."
# How many offending keys an error message lists.
_SHOWN = 5


@dataclass(frozen=True)
class WeightsChoice:
    """The user's ``weights`` setting, parsed.

    Attributes:
        kind: ``"imagenet"`` (the family's pretrained weights), ``"none"`` (random init) or ``"file"``.
        path: the weights file when ``kind == "file"``.
    """

    kind: Literal["imagenet", "none", "file"]
    path: Path | None = None

    @classmethod
    def parse(cls, weights: str | os.PathLike[str] | None) -> WeightsChoice:
        """``"imagenet"``, ``"none"``/None, or any other string / path-like = a weights file."""
        if weights is None:
            return cls("none")
        if isinstance(weights, os.PathLike):
            return cls("file", Path(weights))
        if not isinstance(weights, str) or not weights.strip():
            raise UserError(
                f"Invalid backbone weights {weights!r}: use 'imagenet', 'none' or the path of a weights file."
            )
        keyword = weights.strip().lower()
        if keyword in ("imagenet", "none"):
            return cls(keyword)  # type: ignore[arg-type]
        return cls("file", Path(weights))


def read_backbone_state(path: Path) -> dict[str, Tensor]:
    """The backbone state dict stored in ``path``.

    ``path`` holds either a plain state dict of the backbone or a transferlab checkpoint (a dict whose
    ``"state_dict"`` has the backbone under ``"backbone."``; other entries such as the head are ignored).

    Raises:
        UserError: unreadable or unsafe file, or content that is neither of the two forms.
    """
    obj = safe_torch_load(path, "backbone weights file")
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        checkpoint_state = obj["state_dict"]
        state = {
            key[len(CHECKPOINT_PREFIX) :]: value
            for key, value in checkpoint_state.items()
            if isinstance(key, str) and key.startswith(CHECKPOINT_PREFIX)
        }
        if not state:
            raise UserError(
                f"Checkpoint {path} has no '{CHECKPOINT_PREFIX}*' entries in its state_dict (first keys: "
                f"{_few(checkpoint_state)}). Use a checkpoint written by transferlab or a plain backbone "
                "state dict."
            )
    elif isinstance(obj, Mapping):
        state = dict(obj)
    else:
        raise UserError(
            f"Backbone weights file {path} holds a {type(obj).__name__}, not a state dict. Save it with "
            "torch.save(backbone.state_dict(), path) or pass a transferlab checkpoint."
        )
    bad = [key for key, value in state.items() if not isinstance(key, str) or not isinstance(value, Tensor)]
    if bad:
        raise UserError(f"Backbone weights file {path} has entries that are not tensors: {_few(bad)}.")
    return state


def load_state_checked(module: nn.Module, state: Mapping[str, Tensor], source: str, target: str) -> None:
    """Load ``state`` strictly into ``module``, raising UserError that lists what does not fit.

    Args:
        module: receives the weights.
        state: tensors by name.
        source: where ``state`` came from (a path), for the message.
        target: what ``module`` is (e.g. ``"backbone 'resnet18'"``), for the message.
    """
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    if missing or unexpected or mismatched:
        raise UserError(
            f"Weights in {source} do not fit {target}: {len(missing)} missing key(s) {_few(missing)}, "
            f"{len(unexpected)} unexpected key(s) {_few(unexpected)}, {len(mismatched)} shape mismatch(es) "
            f"(file vs model) {_few(mismatched)}. Use weights saved from the same backbone and options."
        )
    module.load_state_dict(state, strict=True)


def _few(items: Any) -> list[str]:
    items = list(items)
    shown = [str(item) for item in items[:_SHOWN]]
    return [*shown, "..."] if len(items) > _SHOWN else shown
