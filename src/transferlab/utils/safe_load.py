"""Load tensors from files without executing code stored in them."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from transferlab.errors import UserError


def safe_torch_load(path: str | Path, what: str = "file") -> Any:
    """Load a torch file with ``weights_only=True``: tensors and plain containers only.

    Args:
        path: the file to read.
        what: what the file is meant to be ("checkpoint", "weights file"), used in error messages.

    Raises:
        UserError: the file is missing, is not a torch file, or holds pickled objects other than tensors
            and plain Python containers (such a file could run code when loaded, so it is refused).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{what} not found: {path}. Check the path (it is resolved from {Path.cwd()}).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"Refusing to load {what} {path}: it contains pickled objects other than tensors and plain "
            f"containers, and loading it could execute code ({_first_line(err)}). Use a file written by "
            "transferlab or a plain state dict (torch.save(model.state_dict(), path))."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(
            f"Cannot read {what} {path}: {_first_line(err)}. The file is truncated or not a torch file."
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
