"""Loading numpy arrays from pickle files without letting the file run code.

``pickle.load`` calls any function a file names, so a crafted file can run shell commands. The unpickler
here resolves only the three globals that numpy needs to rebuild a plain array and refuses everything
else, before anything is called.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from transferlab.errors import UserError


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2 moved the module; pickles written by numpy 1 still name numpy.core
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    reconstruct = multiarray._reconstruct
    return {
        # ndarray.__reduce__ gives (_reconstruct, (ndarray, (0,), b"b"), state) ...
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        # ... and the state holds the dtype, rebuilt as dtype("u1", False, True) plus its own state.
        ("numpy", "dtype"): np.dtype,
    }


class NumpyArrayUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and plain Python values, and nothing that calls code.

    Raises:
        pickle.UnpicklingError: on loading, when the pickle names any other global (a function or class).
    """

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global the pickle refers to, if it is one a numpy array needs."""
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed (only numpy arrays may be loaded)"
            ) from None


def load_pickled_array(path: str | os.PathLike[str]) -> np.ndarray:
    """Load one numpy array from a pickle file, gzip-compressed or not, with :class:`NumpyArrayUnpickler`.

    Args:
        path: the pickle file.

    Returns:
        The array; object arrays are refused.

    Raises:
        UserError: the file is missing, damaged, names a global other than numpy's array machinery (such a
            file could run code when loaded, so it is refused), or does not hold a numeric array.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            value = NumpyArrayUnpickler(f).load()
    except FileNotFoundError:
        raise UserError(f"Pickle file not found: {path}. Reinstall the package that provides it.") from None
    except pickle.UnpicklingError as err:
        raise UserError(
            f"Refusing to load {path}: {err}. Loading it could run code; use a file that holds only a "
            "numpy array."
        ) from None
    except (EOFError, OSError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise UserError(f"Cannot read {path}: {err!r}. The file is damaged or not a pickled array.") from None
    if not isinstance(value, np.ndarray) or value.dtype.hasobject:
        raise UserError(f"{path} does not hold a numeric numpy array (found {type(value).__name__}).")
    return value


def _open(path: Path) -> BinaryIO:
    with path.open("rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"  # gzip magic number
    return gzip.open(path, "rb") if compressed else path.open("rb")  # type: ignore[return-value]
