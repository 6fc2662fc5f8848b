"""``efficientnet_b0`` from torchvision; the head is ``classifier[-1]`` (1280 features)."""

from __future__ import annotations

from transferlab.backbones.base import Backbone
from transferlab.backbones.families.torchvision_common import (
    register_torchvision,
    split_classifier,
    torchvision_model,
)
from transferlab.preprocessing import Preprocessing

ARCHS = ("efficientnet_b0",)


def build_torchvision_efficientnet(arch: str, *, pretrained: bool, preprocessing: Preprocessing) -> Backbone:
    """EfficientNet without its last linear layer.

    Groups: ``stem`` (``features.0``), the MBConv stages ``stage1`` .. ``stage7`` (``features.1`` ..
    ``features.7``, torchvision already groups blocks by stage), ``head_conv`` (the last 1x1 conv).
    """
    model = torchvision_model(arch, pretrained=pretrained)
    model.classifier, last = split_classifier(model.classifier)
    count = len(model.features)
    groups = [
        ("stem", ["features.0"]),
        *[(f"stage{index}", [f"features.{index}"]) for index in range(1, count - 1)],
        ("head_conv", [f"features.{count - 1}"]),
    ]
    return Backbone(arch, model, last.in_features, preprocessing, groups, last if pretrained else None)


register_torchvision(ARCHS, build_torchvision_efficientnet)
