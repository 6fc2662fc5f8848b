"""What every torchvision family shares: weights metadata, preprocessing, the hub cache, head surgery.

Each family module (``torchvision_resnet``, ``torchvision_vgg``, ...) only says how its architecture splits
into a feature module, a last layer and block groups; weights and preprocessing always come from here, so
every torchvision backbone reads the same cache and fails offline with the same message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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

# Turns the state dict of a weights file into the names the current torchvision module uses.
StateFix = Callable[[Mapping[str, Tensor]], dict[str, Tensor]]
# Builds a family member: (arch, pretrained, preprocessing) -> Backbone.
FamilyBuilder = Callable[..., Backbone]


def default_weights(arch: str) -> Any:
    """The weights enum member torchvision recommends (``DEFAULT``): its metadata and download URL."""
    import torchvision  # imported here: most callers never need torchvision's model zoo

    return torchvision.models.get_model_weights(arch).DEFAULT


def torchvision_preprocessing(arch: str) -> Preprocessing:
    """Input size, resize, mean/std and interpolation from the default weights' ``transforms()``.

    Reads metadata only: nothing is downloaded and no model is built.
    """
    transform = default_weights(arch).transforms()
    crop, resize = transform.crop_size[0], transform.resize_size[0]
    return Preprocessing(
        input_size=crop,
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        crop_pct=crop / resize,
        interpolation=transform.interpolation.value,
    )


def hub_weights_path(weights: Any) -> Path:
    """Where torch hub keeps (or would keep) the file of a weights enum member."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def hub_state_dict(weights: Any) -> dict[str, Tensor]:
    """The state dict of a torchvision weights enum member, from the torch hub cache or downloaded into it.

    Raises:
        UserError: the file is not cached and cannot be downloaded; the message names the file and where to
            put it.
    """
    cached = hub_weights_path(weights)
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


def torchvision_model(arch: str, *, pretrained: bool, fix_state: StateFix | None = None) -> nn.Module:
    """The full torchvision classifier ``arch``, random or with its default ImageNet weights.

    The weights file is read before the model is built, so a missing file fails at once instead of after
    initialising a large network.

    Args:
        arch: torchvision model name, e.g. ``"vgg16"``.
        pretrained: load the default ImageNet weights.
        fix_state: renames the file's keys to the module's (old DenseNet files use other names).
    """
    import torchvision

    state = None
    if pretrained:
        weights = default_weights(arch)
        state = hub_state_dict(weights)
        if fix_state is not None:
            state = fix_state(state)
    model = torchvision.models.get_model(arch, weights=None)
    if state is not None:
        load_state_checked(model, state, source=str(hub_weights_path(weights)), target=f"torchvision {arch}")
    return model


def split_classifier(classifier: nn.Sequential) -> tuple[nn.Sequential, nn.Linear]:
    """Split a classifier ``Sequential`` into its pre-logits part and its last (ImageNet) linear layer.

    Dropout right before the last layer is dropped with it: the new head has its own
    (``model.head_dropout``). Slicing a ``Sequential`` keeps the child names (``"0"``, ``"3"``), so the
    kept layers still load from the original state dict keys.
    """
    last = classifier[-1]
    if not isinstance(last, nn.Linear):
        raise ValueError(f"Expected the classifier to end in nn.Linear, got {type(last).__name__}.")
    end = len(classifier) - 1
    while end > 0 and isinstance(classifier[end - 1], nn.Dropout):
        end -= 1
    return classifier[:end], last


def register_torchvision(archs: tuple[str, ...], build: FamilyBuilder) -> None:
    """Register each of ``archs`` with ``build(arch, pretrained=..., preprocessing=...)``.

    Their default preprocessing comes from the torchvision weights' metadata.
    """
    for arch in archs:
        register_backbone(arch, preprocessing=partial(torchvision_preprocessing, arch))(partial(build, arch))
