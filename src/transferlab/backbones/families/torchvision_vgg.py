"""``vgg16`` and ``vgg16_bn`` from torchvision; the head is ``classifier[-1]``.

The pretrained fully connected layers before it stay in the backbone, so the features are the 4096-wide
output of ``classifier[:-1]`` rather than the 25088 flattened conv activations.
"""

from __future__ import annotations

from torch import nn

from transferlab.backbones.base import Backbone
from transferlab.backbones.families.torchvision_common import (
    register_torchvision,
    split_classifier,
    torchvision_model,
)
from transferlab.preprocessing import Preprocessing

ARCHS = ("vgg16", "vgg16_bn")


def build_torchvision_vgg(arch: str, *, pretrained: bool, preprocessing: Preprocessing) -> Backbone:
    """VGG up to the second fc layer (4096 features).

    Groups: the conv stages ``stage1`` .. ``stage5`` (split after each max-pool), then ``fc`` (the kept
    fully connected layers).
    """
    model = torchvision_model(arch, pretrained=pretrained)
    model.classifier, last = split_classifier(model.classifier)
    groups = [*conv_stages(model.features), ("fc", ["classifier"])]
    return Backbone(arch, model, last.in_features, preprocessing, groups, last if pretrained else None)


def conv_stages(features: nn.Sequential, prefix: str = "features") -> list[tuple[str, list[str]]]:
    """``(stageN, paths)`` for the layers of ``features``, a new stage starting after each max-pool."""
    stages: list[list[str]] = [[]]
    for index, layer in enumerate(features):
        stages[-1].append(f"{prefix}.{index}")
        if isinstance(layer, nn.MaxPool2d):
            stages.append([])
    return [(f"stage{number}", paths) for number, paths in enumerate(stages, start=1) if paths]


register_torchvision(ARCHS, build_torchvision_vgg)
