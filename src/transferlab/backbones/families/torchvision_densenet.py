"""``densenet121`` from torchvision; the head is ``classifier``.

torchvision's DenseNet applies ReLU and global pooling in ``forward`` (functional calls), not in modules;
the feature module here adds them as modules so that ``features -> relu -> pool`` gives the 1024 features
the original classifier saw.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

from torch import Tensor, nn

from transferlab.backbones.base import Backbone
from transferlab.backbones.families.torchvision_common import register_torchvision, torchvision_model
from transferlab.preprocessing import Preprocessing

ARCHS = ("densenet121",)
# The published DenseNet files predate a rename in torchvision: "denselayer1.norm.1.weight" is now
# "denselayer1.norm1.weight" (same for relu and conv). Only those three names inside dense layers move.
_OLD_LAYER_KEY = re.compile(r"(\.denselayer\d+\.(?:norm|relu|conv))\.(\d+)\.")


def rename_old_densenet_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys of an old DenseNet weights file in the current naming; current keys pass unchanged."""
    return {_OLD_LAYER_KEY.sub(r"\1\2.", key): value for key, value in state.items()}


def build_torchvision_densenet(arch: str, *, pretrained: bool, preprocessing: Preprocessing) -> Backbone:
    """DenseNet features + final ReLU + global average pooling (1024 features for densenet121).

    Groups: ``stem`` (conv0, norm0), then one group per dense block with the transition that follows it
    (the last block takes the final norm instead).
    """
    model = torchvision_model(arch, pretrained=pretrained, fix_state=rename_old_densenet_keys)
    body = nn.Sequential(
        OrderedDict(
            features=model.features,
            relu=nn.ReLU(),  # not inplace: a forward hook on features.norm5 must see the values before it
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
        )
    )
    children = [name for name, _ in model.features.named_children()]
    blocks = [name for name in children if name.startswith("denseblock")]
    groups: list[tuple[str, list[str]]] = [("stem", ["features.conv0", "features.norm0"])]
    for number, block in enumerate(blocks, start=1):
        follower = f"transition{number}" if f"transition{number}" in children else "norm5"
        groups.append((f"{block}+{follower}", [f"features.{block}", f"features.{follower}"]))
    head = model.classifier
    return Backbone(arch, body, head.in_features, preprocessing, groups, head if pretrained else None)


register_torchvision(ARCHS, build_torchvision_densenet)
