"""model=auto picks the strategy from the training-set size and says why."""

from __future__ import annotations

import logging

import pytest
from hydra.utils import instantiate

from transferlab.errors import UserError
from transferlab.strategies import FeatureExtractionClassifier, FineTuneClassifier, choose_strategy
from transferlab.strategies.base import plain


@pytest.mark.parametrize(
    ("num_images", "expected"),
    [(10, "feature_extraction"), (999, "feature_extraction"), (1000, "finetune_last"),
     (9999, "finetune_last"), (10000, "finetune_all")],
)  # fmt: skip
def test_thresholds(num_images: int, expected: str) -> None:
    assert choose_strategy(num_images, 1000, 10000) == expected


def test_bad_thresholds_are_a_user_error() -> None:
    with pytest.raises(UserError, match="feature_extraction_below"):
        choose_strategy(10, 5000, 1000)


@pytest.mark.parametrize(
    ("counts", "cls", "trainable_groups"),
    [([300, 300], FeatureExtractionClassifier, 0), ([3000, 3000], FineTuneClassifier, 1),
     ([6000, 6000], FineTuneClassifier, "all")],
)  # fmt: skip
def test_auto_config_builds_the_chosen_module(
    train_config, counts, cls, trainable_groups, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = train_config("model=auto")
    with caplog.at_level(logging.INFO):
        model = instantiate(
            cfg.model, backbone=plain(cfg.backbone), class_names=["a", "b"], class_counts=counts
        )
    assert type(model) is cls
    assert f"{sum(counts)} training images" in caplog.text
    groups = model.backbone.block_groups()
    trainable = [g for g in groups if any(p.requires_grad for p in g.parameters())]
    assert len(trainable) == (len(groups) if trainable_groups == "all" else trainable_groups)
