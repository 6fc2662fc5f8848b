"""Entry points: build a backbone by name, or ask for its preprocessing without building it."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

# Imported for its side effect: every family module registers its entries.
import transferlab.backbones.families  # noqa: F401
from transferlab.backbones.base import Backbone
from transferlab.backbones.registry import get_entry
from transferlab.backbones.weights import WeightsChoice, load_state_checked, read_backbone_state
from transferlab.preprocessing import Preprocessing

log = logging.getLogger(__name__)


def backbone_preprocessing(name: str, image_size: int | None = None, **options: Any) -> Preprocessing:
    """The preprocessing ``build_backbone(name, image_size=image_size, **options)`` would have.

    Cheap: no model is built and no weights are read.

    Args:
        name: registry name, see :func:`available_backbones`.
        image_size: overrides the entry's default input size (e.g. 96 to train on small images).
        **options: entry-specific options, e.g. ``model_name`` for ``"timm"``.

    Raises:
        UserError: unknown name or option, or an invalid image size.
    """
    entry = get_entry(name)
    entry.check_options(options)
    preprocessing = entry.preprocessing(**options)
    if image_size is not None:
        preprocessing = dataclasses.replace(preprocessing, input_size=image_size)
    return preprocessing


def build_backbone(
    name: str,
    weights: str | os.PathLike[str] | None = "imagenet",
    image_size: int | None = None,
    **options: Any,
) -> Backbone:
    """Build a registered backbone.

    Args:
        name: registry name, see :func:`available_backbones`.
        weights: ``"imagenet"`` for the family's pretrained ImageNet weights; ``"none"`` or None for random
            initialisation; anything else is the path of a plain backbone state dict or of a transferlab
            checkpoint (its ``state_dict`` entries under ``"backbone."`` are used).
        image_size: overrides the default input size in :attr:`Backbone.preprocessing`.
        **options: entry-specific options, e.g. ``model_name`` for ``"timm"``.

    Raises:
        UserError: unknown name or option, pretrained weights unavailable (never silently replaced by random
            ones), or a weights file that is missing, unsafe, or does not fit the backbone.
    """
    choice = WeightsChoice.parse(weights)
    preprocessing = backbone_preprocessing(name, image_size=image_size, **options)
    entry = get_entry(name)
    backbone = entry.build(pretrained=choice.kind == "imagenet", preprocessing=preprocessing, **options)
    if choice.kind == "none":
        log.info("Backbone %s: random initialisation (weights=none).", name)
    elif choice.kind == "file":
        assert choice.path is not None
        state = read_backbone_state(choice.path)
        load_state_checked(backbone, state, source=str(choice.path), target=f"backbone {name!r}")
        log.info("Backbone %s: weights loaded from %s.", name, choice.path)
    return backbone
