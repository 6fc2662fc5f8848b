"""Image transforms for training and evaluation, built from a backbone's preprocessing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torchvision.transforms import InterpolationMode, v2

from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing, as_preprocessing

AUGMENTATIONS: tuple[str, ...] = ("none", "light", "strong")
"""Training augmentation presets, from none to most."""

# RandomResizedCrop of the light and strong presets: share of the image area and aspect ratio of a crop.
_CROP_SCALE = (0.6, 1.0)
_CROP_RATIO = (3 / 4, 4 / 3)

_INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


def check_augmentation(augmentation: str) -> str:
    """Return ``augmentation`` if it names a preset.

    Raises:
        UserError: it does not; the message lists the presets.
    """
    if augmentation not in AUGMENTATIONS:
        raise UserError(
            f"Unknown augmentation preset {augmentation!r}; set data.augmentation to one of: "
            f"{', '.join(AUGMENTATIONS)}."
        )
    return augmentation


def build_eval_transform(preprocessing: Preprocessing | Mapping[str, Any]) -> v2.Compose:
    """The deterministic transform used for validation, test and prediction.

    Resizes the shorter side to ``round(input_size / crop_pct)`` (upsampling images smaller than the
    crop), takes the centre ``input_size`` square, converts to a float tensor in [0, 1] and normalises.

    Args:
        preprocessing: the backbone's preprocessing (object or mapping, see :func:`as_preprocessing`).

    Returns:
        A transform from a PIL RGB image to a normalised ``float32`` tensor of shape
        ``(3, input_size, input_size)``.
    """
    p = as_preprocessing(preprocessing)
    return v2.Compose(
        [
            v2.Resize(p.resize_size, interpolation=_INTERPOLATION_MODES[p.interpolation], antialias=True),
            v2.CenterCrop(p.input_size),
            *_to_normalised_tensor(p),
        ]
    )


def build_train_transform(
    preprocessing: Preprocessing | Mapping[str, Any], *, augmentation: str = "light"
) -> v2.Compose:
    """The random transform used for training.

    Presets:
        ``"none"``: the eval transform.
        ``"light"``: random resized crop (60-100% of the area) and horizontal flip.
        ``"strong"``: light, then TrivialAugmentWide (one random photometric/geometric op per image) and
        random erasing (p=0.25) of the normalised tensor.

    Args:
        preprocessing: the backbone's preprocessing (object or mapping, see :func:`as_preprocessing`).
        augmentation: one of :data:`AUGMENTATIONS`.

    Returns:
        A transform from a PIL RGB image to a normalised ``float32`` tensor of shape
        ``(3, input_size, input_size)``.

    Raises:
        UserError: unknown preset.
    """
    check_augmentation(augmentation)
    p = as_preprocessing(preprocessing)
    if augmentation == "none":
        return build_eval_transform(p)
    interpolation = _INTERPOLATION_MODES[p.interpolation]
    steps: list[Any] = [
        v2.RandomResizedCrop(
            p.input_size, scale=_CROP_SCALE, ratio=_CROP_RATIO, interpolation=interpolation, antialias=True
        ),
        v2.RandomHorizontalFlip(),
    ]
    if augmentation == "strong":
        steps.append(v2.TrivialAugmentWide(interpolation=interpolation))
    steps.extend(_to_normalised_tensor(p))
    if augmentation == "strong":
        # After normalisation, erased patches filled with 0 are "average" pixels, not black ones.
        steps.append(v2.RandomErasing(p=0.25, value=0))
    return v2.Compose(steps)


def min_decode_size(preprocessing: Preprocessing | Mapping[str, Any], *, augmentation: str = "none") -> int:
    """The shortest image side a transform needs to never upsample what it keeps.

    Images may be decoded down to this size before the transform (see
    :func:`~transferlab.data.images.load_rgb`) without changing what the network sees in any visible way.

    Args:
        preprocessing: the backbone's preprocessing.
        augmentation: the training preset, or ``"none"`` for the eval transform.

    Returns:
        ``resize_size`` for the eval transform; for the random-crop presets, the side at which the smallest
        crop (60% of the area at the extreme aspect ratio) still covers ``input_size`` pixels.
    """
    p = as_preprocessing(preprocessing)
    if check_augmentation(augmentation) == "none":
        return p.resize_size
    # A square image of side s gives crops no narrower than s * sqrt(min_scale * min_ratio).
    return math.ceil(p.input_size / math.sqrt(_CROP_SCALE[0] * _CROP_RATIO[0]))


def _to_normalised_tensor(p: Preprocessing) -> list[Any]:
    # Geometric steps run on the PIL image (cheaper than on a float tensor); conversion comes last.
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(p.mean), std=list(p.std)),
    ]
