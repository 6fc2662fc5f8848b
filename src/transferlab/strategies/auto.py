"""``model=auto``: pick the transfer strategy from the size of the training set.

The usual rule of thumb for a pretrained backbone: with few images, only a new head on frozen features
generalises; with more, the top of the network can adapt; with many, everything can.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.utils import instantiate

from transferlab.errors import UserError
from transferlab.strategies.base import TransferModule
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
    class_names: Sequence[str],
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any] | None = None,
    class_counts: Sequence[int] | None = None,
    feature_extraction_below: int = 1000,
    finetune_last_below: int = 10000,
    feature_extraction: Mapping[str, Any] | None = None,
    finetune: Mapping[str, Any] | None = None,
) -> TransferModule:
    """Build the strategy module that suits the training-set size, and say which and why.

    The candidates are given by their settings, as in ``conf/model/auto.yaml`` (which includes
    ``conf/model/feature_extraction.yaml`` and ``conf/model/finetune.yaml``): a config node with a
    ``_target_``, or just constructor arguments of :class:`FeatureExtractionClassifier` /
    :class:`FineTuneClassifier`; what they leave out is the class's default.

    Args:
        backbone, class_names, optimizer, scheduler: as for every strategy; a candidate without its own
            ``optimizer`` / ``scheduler`` uses these.
        class_counts: training images per class (given by the training entry point).
        feature_extraction_below: fewer training images than this: the feature-extraction candidate.
        finetune_last_below: fewer than this (and not fewer than the above): the fine-tuning candidate as
            configured (its ``trainable_blocks``); otherwise the same with every block group trainable.
        feature_extraction: settings of the feature-extraction candidate.
        finetune: settings of the fine-tuning candidate.
    """
    if not class_counts:
        raise UserError("model=auto needs the number of training images per class from the data module.")
    num_images = int(sum(class_counts))
    choice = choose_strategy(num_images, feature_extraction_below, finetune_last_below)
    shared = {"optimizer": optimizer, "scheduler": scheduler}
    given = {"backbone": backbone, "class_names": class_names, "class_counts": class_counts}
    if choice == "feature_extraction":
        reason = f"{num_images} training images < feature_extraction_below={feature_extraction_below}"
        module = _build(FeatureExtractionClassifier, {**shared, **(feature_extraction or {})}, **given)
        what = "feature extraction (frozen backbone, new head)"
    elif choice == "finetune_last":
        reason = f"{num_images} training images < finetune_last_below={finetune_last_below}"
        module = _build(FineTuneClassifier, {**shared, **(finetune or {})}, **given)
        what = f"fine-tuning the last {module.num_trainable_blocks} block group(s)"
    else:
        reason = f"{num_images} training images >= finetune_last_below={finetune_last_below}"
        module = _build(FineTuneClassifier, {**shared, **(finetune or {})}, **given, trainable_blocks="all")
        what = "fine-tuning every block"
    log.info("model=auto chose %s: %s.", what, reason)
    return module


def _build(default: type[TransferModule], settings: Mapping[str, Any], **given: Any) -> TransferModule:
    """Instantiate a candidate's config node (``default`` when it names no ``_target_``)."""
    node = {
        "_target_": f"{default.__module__}.{default.__qualname__}",
        "_recursive_": False,  # optimizer and scheduler are built by the module itself
        "_convert_": "all",
        **settings,
    }
    return instantiate(node, **given)
