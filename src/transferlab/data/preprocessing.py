"""What a backbone expects of its input images, accepted from any object or mapping that describes it.

The backbones package defines its own ``Preprocessing`` dataclass; the data package does not import it
(the two are independent), it reads the same five fields from whatever it is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from transferlab.errors import UserError

INTERPOLATIONS: tuple[str, ...] = ("bilinear", "bicubic", "nearest")
"""Interpolation names a preprocessing may ask for."""


@runtime_checkable
class PreprocessingLike(Protocol):
    """Anything with the attributes of ``transferlab.backbones.Preprocessing``."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float
    interpolation: str


@dataclass(frozen=True)
class ImagePreprocessing:
    """A validated copy of a backbone's preprocessing.

    Attributes:
        input_size: side of the square image the backbone takes, in pixels.
        mean: per-channel RGB mean subtracted after scaling pixels to [0, 1].
        std: per-channel RGB standard deviation divided by after subtracting the mean.
        crop_pct: the centre crop's share of the resized image side (eval resizes the shorter side to
            ``round(input_size / crop_pct)`` and crops ``input_size`` from the centre).
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 0.875
    interpolation: str = "bilinear"

    @property
    def resize_size(self) -> int:
        """Shorter-side length the eval transform resizes to before its centre crop."""
        return max(self.input_size, round(self.input_size / self.crop_pct))


def as_preprocessing(preprocessing: PreprocessingLike | Mapping[str, Any]) -> ImagePreprocessing:
    """Validate a preprocessing given as an object with the five attributes or as a mapping.

    Args:
        preprocessing: a ``transferlab.backbones.Preprocessing``, any object with the same attributes,
            or a dict / OmegaConf mapping with those keys (``crop_pct`` and ``interpolation`` optional).

    Returns:
        The same values, checked and normalised to plain Python types.

    Raises:
        UserError: a field is missing or has an invalid value.
    """
    if isinstance(preprocessing, ImagePreprocessing):
        return preprocessing
    defaults = {"crop_pct": 0.875, "interpolation": "bilinear"}
    fields = ("input_size", "mean", "std", "crop_pct", "interpolation")
    values: dict[str, Any] = {}
    for name in fields:
        if isinstance(preprocessing, Mapping):
            found = name in preprocessing
            value = preprocessing.get(name)
        else:
            found = hasattr(preprocessing, name)
            value = getattr(preprocessing, name, None)
        if not found:
            if name not in defaults:
                raise UserError(
                    f"Preprocessing {preprocessing!r} has no '{name}'. Give input_size, mean and std "
                    "(and optionally crop_pct, interpolation), e.g. the backbone's preprocessing."
                )
            value = defaults[name]
        values[name] = value
    return ImagePreprocessing(
        input_size=_positive_int(values["input_size"]),
        mean=_triple(values["mean"], "mean", positive=False),
        std=_triple(values["std"], "std", positive=True),
        crop_pct=_crop_pct(values["crop_pct"]),
        interpolation=_interpolation(values["interpolation"]),
    )


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 1:
        raise UserError(f"Preprocessing input_size must be a positive whole number of pixels, got {value!r}.")
    return int(value)


def _triple(value: Any, name: str, *, positive: bool) -> tuple[float, float, float]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers) or (positive and min(numbers) <= 0):
        need = "three positive numbers" if positive else "three numbers"
        raise UserError(f"Preprocessing {name} must be {need} (one per RGB channel), got {value!r}.")
    return numbers  # type: ignore[return-value]


def _crop_pct(value: Any) -> float:
    try:
        crop_pct = float(value)
    except (TypeError, ValueError):
        crop_pct = math.nan
    if not 0 < crop_pct <= 1:
        raise UserError(f"Preprocessing crop_pct must be in (0, 1], got {value!r}; 0.875 is the usual value.")
    return crop_pct


def _interpolation(value: Any) -> str:
    name = str(value).lower()
    if name not in INTERPOLATIONS:
        raise UserError(
            f"Unknown preprocessing interpolation {value!r}; use one of: {', '.join(INTERPOLATIONS)}."
        )
    return name
