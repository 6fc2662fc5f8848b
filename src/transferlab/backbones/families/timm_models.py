"""``timm``: any timm model, chosen with the option ``model_name`` (e.g. ``resnet10t``, ``convnext_tiny``)."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from transferlab.backbones.base import Backbone
from transferlab.backbones.registry import register_backbone
from transferlab.errors import UserError
from transferlab.preprocessing import INTERPOLATIONS, Preprocessing

log = logging.getLogger(__name__)
# Groups with more paths than this get a shortened name.
_NAME_PATHS = 3


def timm_preprocessing(model_name: str | None = None) -> Preprocessing:
    """From timm's pretrained config of ``model_name``, as ``resolve_model_data_config`` reads it.

    No model is built: the config comes from timm's registry.
    """
    from timm.data import resolve_data_config

    # Architectures without a registered pretrained config get timm's defaults (224 px, ImageNet mean/std).
    data = resolve_data_config(pretrained_cfg=_pretrained_cfg(model_name) or {"input_size": (3, 224, 224)})
    interpolation = data["interpolation"]
    if interpolation not in INTERPOLATIONS:
        # Only the eval resize changes; the weights are unaffected.
        log.warning("timm model %s asks for %r resizing; using bicubic.", model_name, interpolation)
        interpolation = "bicubic"
    return Preprocessing(
        input_size=int(data["input_size"][-2]),  # (C, H, W); timm's pretrained inputs are square
        mean=data["mean"],
        std=data["std"],
        crop_pct=data["crop_pct"],
        interpolation=interpolation,
    )


@register_backbone("timm", preprocessing=timm_preprocessing)
def build_timm(*, pretrained: bool, preprocessing: Preprocessing, model_name: str | None = None) -> Backbone:
    """A timm model without classifier; block groups from its own ``group_matcher(coarse=True)``."""
    import timm

    cfg = _pretrained_cfg(model_name)
    if cfg.get("fixed_input_size") and preprocessing.input_size != cfg["input_size"][-1]:
        raise UserError(
            f"timm model {model_name!r} only accepts {cfg['input_size'][-1]} px inputs, not "
            f"{preprocessing.input_size}; leave image_size unset or pick another model."
        )
    imagenet_head: nn.Module | None = None
    if pretrained:
        model = _create_pretrained(model_name)
        head = model.get_classifier() if model.num_classes > 0 else None
        imagenet_head = head if isinstance(head, nn.Module) else None  # some models return a tuple of heads
        model.reset_classifier(0)  # keeps any pre-logits layers, drops the final linear layer
    else:
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
    # Pre-logits width: equals num_features except for models with a head conv after pooling
    # (e.g. MobileNetV3: 576 pooled channels, 1024 pre-logits features).
    feature_dim = getattr(model, "head_hidden_size", None) or model.num_features
    if isinstance(imagenet_head, nn.Linear) and imagenet_head.in_features != feature_dim:
        raise ValueError(f"timm {model_name}: classifier input {imagenet_head.in_features} != {feature_dim}.")
    return Backbone("timm", model, feature_dim, preprocessing, timm_group_paths(model), imagenet_head)


def timm_group_paths(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Block groups as ``(name, paths)``, from timm's coarse group matcher, ordered input -> output.

    timm groups parameter names; each group is turned into the shortest module paths that hold only that
    group's parameters (``blocks.3`` rather than its 20 tensors), or parameter paths for tensors held by a
    module whose children sit in other groups (a ViT's ``cls_token``).
    """
    from timm.models._manipulate import group_with_matcher

    names = [name for name, _ in model.named_parameters()]
    try:
        matcher: Any = model.group_matcher(coarse=True)
    except (AttributeError, NotImplementedError):
        # No matcher: one group per top-level child, in registration order (roughly input -> output).
        top_level = list(dict.fromkeys(name.split(".")[0] for name in names))

        def matcher(name: str) -> int:
            return top_level.index(name.split(".")[0])

    grouped = group_with_matcher(((name, None) for name in names), matcher)

    # Parameter names under every module path, to test "holds only this group's parameters".
    under: dict[str, set[str]] = {}
    for name in names:
        parts = name.split(".")
        for depth in range(1, len(parts)):
            under.setdefault(".".join(parts[:depth]), set()).add(name)

    groups = []
    for group_id in sorted(grouped):
        members = grouped[group_id]
        paths = _covering_paths(members, set(members), under)
        label = "+".join(paths[:_NAME_PATHS])
        if len(paths) > _NAME_PATHS:
            label += f"+{len(paths) - _NAME_PATHS} more"
        groups.append((label, paths))
    return groups


def _covering_paths(members: list[str], member_set: set[str], under: dict[str, set[str]]) -> list[str]:
    paths: list[str] = []
    for name in members:
        parts = name.split(".")
        path = name  # fallback: the parameter itself
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            if under[prefix] <= member_set:
                path = prefix
                break
        if path not in paths:
            paths.append(path)
    return paths


def _pretrained_cfg(model_name: str | None) -> dict[str, Any]:
    import timm
    from timm.models import get_pretrained_cfg

    if not isinstance(model_name, str) or not model_name:
        raise UserError(
            "Backbone 'timm' needs the option model_name (a timm model such as resnet50 or convnext_tiny)."
        )
    if not timm.is_model(model_name):
        similar = timm.list_models(f"*{model_name.split('.')[0][:6]}*")[:8]
        raise UserError(
            f"Unknown timm model {model_name!r}. Similar names: {similar}; see timm.list_models()."
        )
    try:
        cfg = get_pretrained_cfg(model_name)
    except RuntimeError as err:  # an unknown pretrained tag after the dot
        raise UserError(f"timm model {model_name!r}: {err}") from None
    return cfg.to_dict() if cfg is not None else {}


def _create_pretrained(model_name: str) -> nn.Module:
    import timm
    from huggingface_hub import constants

    try:
        return timm.create_model(model_name, pretrained=True)
    # timm fetches from the Hugging Face hub or a URL; offline, the hub, httpx and urllib raise different
    # exception types, all meaning "not available".
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserError(
            f"Pretrained weights for timm model {model_name!r} are not available ({type(err).__name__}: "
            f"{first}). timm reads them from the Hugging Face cache {constants.HF_HUB_CACHE} (or the torch "
            "hub checkpoints dir for URL-only models) and downloads them when online: run once with internet "
            "access, or use backbone.weights=none or the path of a weights file. Set HF_HUB_OFFLINE=1 to "
            "skip the download retries offline."
        ) from err
