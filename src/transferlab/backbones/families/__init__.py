"""Backbone families; importing this package registers every entry."""

from transferlab.backbones.families import (
    efficientnet_lite,
    small_cnn,
    timm_models,
    torchvision_densenet,
    torchvision_efficientnet,
    torchvision_mobilenet,
    torchvision_resnet,
    torchvision_vgg,
)

__all__ = [
    "efficientnet_lite",
    "small_cnn",
    "timm_models",
    "torchvision_densenet",
    "torchvision_efficientnet",
    "torchvision_mobilenet",
    "torchvision_resnet",
    "torchvision_vgg",
]
