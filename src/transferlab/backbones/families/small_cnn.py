"""``small_cnn``: a tiny random-init CNN so tests and smoke runs need no pretrained weights."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from transferlab.backbones.base import Backbone
from transferlab.backbones.registry import register_backbone
from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing

_CHANNELS = (8, 16, 32)


def small_cnn_preprocessing() -> Preprocessing:
    """32 px inputs scaled to [-1, 1]."""
    return Preprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@register_backbone("small_cnn", preprocessing=small_cnn_preprocessing)
def build_small_cnn(*, pretrained: bool, preprocessing: Preprocessing) -> Backbone:
    """Three conv-BN-ReLU blocks (8/16/32 channels), global average pooling: 32 features."""
    if pretrained:
        raise UserError(
            "No pretrained weights exist for small_cnn. Use backbone.weights=none or the path of a "
            "weights file."
        )
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_channels = 3
    for index, out_channels in enumerate(_CHANNELS, start=1):
        # The first block keeps the resolution; later ones halve it.
        layers[f"block{index}"] = _conv_bn_relu(in_channels, out_channels, stride=1 if index == 1 else 2)
        in_channels = out_channels
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    groups = [(f"block{index}", [f"block{index}"]) for index in range(1, len(_CHANNELS) + 1)]
    return Backbone("small_cnn", nn.Sequential(layers), _CHANNELS[-1], preprocessing, groups)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )
