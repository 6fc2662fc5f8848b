"""``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` from torchvision; the head is ``fc``."""

from __future__ import annotations

from torch import nn

from transferlab.backbones.base import Backbone
from transferlab.backbones.families.torchvision_common import register_torchvision, torchvision_model
from transferlab.preprocessing import Preprocessing

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")


def build_torchvision_resnet(arch: str, *, pretrained: bool, preprocessing: Preprocessing) -> Backbone:
    """A ResNet with ``fc`` replaced by identity (512 or 2048 features).

    Groups: stem (``conv1``, ``bn1``), ``layer1`` .. ``layer4``.
    """
    model = torchvision_model(arch, pretrained=pretrained)
    imagenet_head = model.fc if pretrained else None
    feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    groups = [("stem", ["conv1", "bn1"]), *[(f"layer{i}", [f"layer{i}"]) for i in range(1, 5)]]
    return Backbone(arch, model, feature_dim, preprocessing, groups, imagenet_head)


register_torchvision(ARCHS, build_torchvision_resnet)
