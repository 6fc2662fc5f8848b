"""How images must be prepared for a backbone: input size, normalisation and the eval resize/crop.

Backbones declare it; the data transforms and the predict entry point read it; checkpoints store it as a
plain dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from transferlab.errors import UserError

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocessing:
    """The input a backbone expects.

    Images are resized and cropped to ``input_size`` x ``input_size``, scaled to [0, 1] and normalised with
    ``(x - mean) / std`` per channel. At evaluation time the shorter side is first resized to
    ``resize_size`` (``input_size / crop_pct``), then the centre ``input_size`` square is cropped.

    Attributes:
        input_size: side of the square image fed to the network.
        mean: per-channel mean (RGB) subtracted after scaling to [0, 1].
        std: per-channel standard deviation (RGB) divided by after subtracting the mean.
        crop_pct: fraction of the resized image kept by the eval centre crop.
        interpolation: resampling used when resizing: "bilinear", "bicubic" or "nearest".
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 0.875
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        # Values arrive as YAML lists, numpy scalars or timm tuples; normalise them so that equality and
        # to_dict() do not depend on where they came from. The dataclass is frozen, hence object.__setattr__.
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int) or self.input_size < 1:
            raise UserError(f"Image size must be a positive integer, got {self.input_size!r}.")
        object.__setattr__(self, "mean", _rgb_triple("mean", self.mean))
        object.__setattr__(self, "std", _rgb_triple("std", self.std))
        if any(s <= 0 for s in self.std):
            raise UserError(f"Normalisation std must be positive, got {self.std}.")
        crop_pct = float(self.crop_pct)
        if not 0.0 < crop_pct <= 1.0:
            raise UserError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}.")
        object.__setattr__(self, "crop_pct", crop_pct)
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(
                f"Unknown interpolation {self.interpolation!r}; use one of {', '.join(INTERPOLATIONS)}."
            )

    @property
    def resize_size(self) -> int:
        """Shorter side after the eval resize, before the centre crop: ``floor(input_size / crop_pct)``."""
        # The epsilon keeps ratios such as 224 / (224 / 232) at 232 despite float rounding.
        return math.floor(self.input_size / self.crop_pct + 1e-6)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (int, float, str, lists), so it can be stored inside checkpoints."""
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`.

        Raises:
            UserError: ``d`` is not a mapping, lacks a required key or has keys this class does not know.
        """
        if not isinstance(d, Mapping):
            raise UserError(f"Preprocessing must be a mapping, got {type(d).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        missing = sorted({"input_size", "mean", "std"} - set(d))
        if unknown or missing:
            raise UserError(
                f"Invalid preprocessing {dict(d)!r}: missing keys {missing}, unknown keys {unknown}. "
                f"Expected keys: {sorted(known)}."
            )
        return cls(**d)


def _rgb_triple(what: str, value: Any) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        triple = ()
    if len(triple) != 3:
        raise UserError(f"Normalisation {what} must be 3 numbers (R, G, B), got {value!r}.")
    return triple  # type: ignore[return-value]


def as_preprocessing(value: Preprocessing | Mapping[str, Any]) -> Preprocessing:
    """A :class:`Preprocessing` from itself or from a mapping (a dict read from a checkpoint or config).

    Raises:
        UserError: a required key is missing or a value is invalid.
    """
    if isinstance(value, Preprocessing):
        return value
    if isinstance(value, Mapping):
        return Preprocessing.from_dict({str(k): v for k, v in value.items()})
    raise UserError(f"Expected a preprocessing (input_size, mean, std, ...), got {type(value).__name__}.")
