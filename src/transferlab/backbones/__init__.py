"""Backbones: one registry answering the same questions (features, preprocessing, block groups, weights)
for every supported network family."""

from transferlab.backbones.base import Backbone, BlockGroup
from transferlab.backbones.build import backbone_preprocessing, build_backbone
from transferlab.backbones.registry import available_backbones, register_backbone
from transferlab.preprocessing import Preprocessing

__all__ = [
    "Backbone",
    "BlockGroup",
    "Preprocessing",
    "available_backbones",
    "backbone_preprocessing",
    "build_backbone",
    "register_backbone",
]
