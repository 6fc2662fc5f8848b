"""``resnet18`` and ``resnet50`` from torchvision, with its ImageNet weights from the torch hub cache."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from transferlab.backbones.base import Backbone
from transferlab.backbones.registry import register_backbone
from transferlab.backbones.weights import load_state_checked
from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing
from transferlab.utils.safe_load import safe_torch_load


def _default_weights(arch: str) -> Any:
    """The weights enum member torchvision recommends (``DEFAULT``): its metadata and download URL."""
    import torchvision  # imported here: most callers never need torchvision's model zoo

    return torchvision.models.get_model_weights(arch).DEFAULT


def torchvision_preprocessing(arch: str) -> Preprocessing:
    """Read input size, resize, mean/std and interpolation from the default weights' ``transforms()``."""
    transform = _default_weights(arch).transforms()
    crop, resize = transform.crop_size[0], transform.resize_size[0]
    return Preprocessing(
        input_size=crop,
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        crop_pct=crop / resize,
        interpolation=transform.interpolation.value,
    )


def build_torchvision_resnet(arch: str, *, pretrained: bool, preprocessing: Preprocessing) -> Backbone:
    """A torchvision ResNet with ``fc`` replaced by identity; groups: stem (conv1, bn1), layer1..layer4."""
    import torchvision

    model = torchvision.models.get_model(arch, weights=None)
    imagenet_head: nn.Module | None = None
    if pretrained:
        weights = _default_weights(arch)
        load_state_checked(model, hub_state_dict(weights), source=weights.url, target=f"torchvision {arch}")
        imagenet_head = model.fc
    feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    groups = [("stem", ["conv1", "bn1"]), *[(f"layer{i}", [f"layer{i}"]) for i in range(1, 5)]]
    return Backbone(arch, model, feature_dim, preprocessing, groups, imagenet_head)


def hub_state_dict(weights: Any) -> dict[str, Tensor]:
    """The state dict of a torchvision weights enum member, from the torch hub cache or downloaded into it.

    Raises:
        UserError: the file is not cached and cannot be downloaded; the message names the file and where to
            put it.
    """
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if cached.is_file():
        return safe_torch_load(cached, "torchvision weights file")
    try:
        # Downloads into the same torch hub directory; check_hash guards against truncated downloads and
        # weights_only keeps the load as safe as safe_torch_load (torch.hub's default is False).
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a hash mismatch is a RuntimeError
        raise UserError(
            f"Pretrained weights {weights} are not in the torch hub cache and could not be downloaded "
            f"({err}). "
            f"Download {weights.url} and put it at {cached} (the torch hub checkpoints dir, "
            "torch.hub.get_dir()/checkpoints, set by TORCH_HOME), or use backbone.weights=none."
        ) from err


@register_backbone("resnet18", preprocessing=partial(torchvision_preprocessing, "resnet18"))
def build_resnet18(*, pretrained: bool, preprocessing: Preprocessing) -> Backbone:
    """ResNet-18, 512 features."""
    return build_torchvision_resnet("resnet18", pretrained=pretrained, preprocessing=preprocessing)


@register_backbone("resnet50", preprocessing=partial(torchvision_preprocessing, "resnet50"))
def build_resnet50(*, pretrained: bool, preprocessing: Preprocessing) -> Backbone:
    """ResNet-50, 2048 features (torchvision's DEFAULT weights are IMAGENET1K_V2)."""
    return build_torchvision_resnet("resnet50", pretrained=pretrained, preprocessing=preprocessing)
