"""``model=auto``: pick the transfer strategy from the size of the training set.

The usual rule of thumb for a pretrained backbone: with few images, only a new head on frozen features
generalises; with more, the top of the network can adapt; with many, everything can.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from transferlab.errors import UserError
from transferlab.strategies.base import plain
from transferlab.strategies.classifier import ClassifierModule
from transferlab.strategies.feature_extraction import FeatureExtractionClassifier
from transferlab.strategies.finetune import FineTuneClassifier

log = logging.getLogger(__name__)


def choose_strategy(num_images: int, feature_extraction_below: int, finetune_last_below: int) -> str:
    """``"feature_extraction"``, ``"finetune_last"`` or ``"finetune_all"`` for a training-set size."""
    if not 0 < feature_extraction_below <= finetune_last_below:
        raise UserError(
            f"model.feature_extraction_below={feature_extraction_below} must be positive and at most "
            f"model.finetune_last_below={finetune_last_below}."
        )
    if num_images < feature_extraction_below:
        return "feature_extraction"
    if num_images < finetune_last_below:
        return "finetune_last"
    return "finetune_all"


def auto_strategy(
    backbone: Mapping[str, Any],
    class_names: list[str],
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any] | None = None,
    class_counts: list[int] | None = None,
    feature_extraction_below: int = 1000,
    finetune_last_below: int = 10000,
    last_blocks: int = 1,
    feature_extraction: Mapping[str, Any] | None = None,
    finetune: Mapping[str, Any] | None = None,
) -> ClassifierModule:
    """Build the strategy module that suits the training-set size, and say which and why.

    Args:
        backbone, class_names, optimizer, scheduler: as for every strategy.
        class_counts: training images per class (given by the training entry point).
        feature_extraction_below: fewer training images than this: frozen backbone + head.
        finetune_last_below: fewer than this (and not fewer than the above): fine-tune the last
            ``last_blocks`` block groups; otherwise fine-tune everything.
        last_blocks: block groups trained in the middle regime.
        feature_extraction: options of the feature-extraction module (lr, feature_cache, ...).
        finetune: options of the fine-tuning module (lr, backbone_lr_factor, ...).
    """
    class_counts = plain(class_counts)
    if not class_counts:
        raise UserError("model=auto needs the number of training images per class from the data module.")
    num_images = int(sum(class_counts))
    choice = choose_strategy(num_images, feature_extraction_below, finetune_last_below)
    common = {"backbone": backbone, "class_names": class_names, "optimizer": optimizer,
              "scheduler": scheduler, "class_counts": class_counts}  # fmt: skip
    if choice == "feature_extraction":
        reason = f"{num_images} training images < feature_extraction_below={feature_extraction_below}"
        module: ClassifierModule = FeatureExtractionClassifier(**common, **plain(feature_extraction or {}))
        what = "feature extraction (frozen backbone, new head)"
    else:
        blocks: int | str = last_blocks if choice == "finetune_last" else "all"
        if choice == "finetune_last":
            reason = f"{num_images} training images < finetune_last_below={finetune_last_below}"
            what = f"fine-tuning the last {last_blocks} block group(s)"
        else:
            reason = f"{num_images} training images >= finetune_last_below={finetune_last_below}"
            what = "fine-tuning every block"
        module = FineTuneClassifier(**common, trainable_blocks=blocks, **plain(finetune or {}))
    log.info("model=auto chose %s: %s.", what, reason)
    return module
