"""``mobilenet_v2``, ``mobilenet_v3_small``, ``mobilenet_v3_large`` from torchvision.

The head is ``classifier[-1]``. MobileNetV3 keeps its pretrained pre-logits layer (``classifier[0]``,
576 -> 1024 or 960 -> 1280) in the backbone, so its features are 1024 (small) or 1280 (large) wide;
MobileNetV2's features are the 1280 pooled channels.
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

ARCHS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")


def build_torchvision_mobilenet(arch: str, *, pretrained: bool, preprocessing: Preprocessing) -> Backbone:
    """MobileNet without its last linear layer.

    Groups: ``stem``, one group per stage of the architecture table (consecutive blocks with the same
    output width), ``head_conv`` (the last 1x1 conv), and for V3 ``pre_logits`` (the kept fc layer).
    """
    model = torchvision_model(arch, pretrained=pretrained)
    model.classifier, last = split_classifier(model.classifier)
    head_conv = f"features.{len(model.features) - 1}"
    groups = [("stem", ["features.0"]), *width_stages(model.features), ("head_conv", [head_conv])]
    if any(True for _ in model.classifier.parameters()):
        groups.append(("pre_logits", ["classifier"]))
    return Backbone(arch, model, last.in_features, preprocessing, groups, last if pretrained else None)


def width_stages(features: nn.Sequential) -> list[tuple[str, list[str]]]:
    """Stages of the blocks between stem and head conv: a new stage wherever the output width changes."""
    stages: list[tuple[int, list[str]]] = []
    for index in range(1, len(features) - 1):
        width = _out_channels(features[index])
        if not stages or stages[-1][0] != width:
            stages.append((width, []))
        stages[-1][1].append(f"features.{index}")
    return [(f"stage{number}", paths) for number, (_, paths) in enumerate(stages, start=1)]


def _out_channels(block: nn.Module) -> int:
    # The last convolution of a block sets its output width.
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


register_torchvision(ARCHS, build_torchvision_mobilenet)
