"""model=auto picks the strategy from the training-set size and says why."""

from __future__ import annotations

import logging

import pytest
from hydra.utils import instantiate

from transferlab.errors import UserError
from transferlab.strategies import (
    FeatureExtractionClassifier,
    FineTuneClassifier,
    auto_strategy,
    choose_strategy,
)
from transferlab.utils.config import to_container


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
    [([300, 300], FeatureExtractionClassifier, 0), ([3000, 3000], FineTuneClassifier, "configured"),
     ([6000, 6000], FineTuneClassifier, "all")],
)  # fmt: skip
def test_auto_config_builds_the_chosen_module(
    train_config, counts, cls, trainable_groups, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = train_config("model=auto")
    with caplog.at_level(logging.INFO):
        model = instantiate(
            cfg.model, backbone=to_container(cfg.backbone), class_names=["a", "b"], class_counts=counts
        )
    assert type(model) is cls
    assert f"{sum(counts)} training images" in caplog.text
    groups = model.backbone.block_groups()
    trainable = [g for g in groups if any(p.requires_grad for p in g.parameters())]
    if trainable_groups == "configured":  # the middle regime: model.finetune as configured (2 of 3 groups)
        trainable_groups = cfg.model.finetune.trainable_blocks
        assert trainable_groups < len(groups)
    assert len(trainable) == (len(groups) if trainable_groups == "all" else trainable_groups)


def test_auto_uses_the_candidate_configs_settings(train_config) -> None:
    """model=auto builds model.finetune / model.feature_extraction as configured (no settings of its own)."""
    cfg = train_config("model=auto", "model.finetune.lr=0.02", "model.finetune.head_dropout=0.25",
                       "model.feature_extraction.lr=0.5", "model/scheduler=step")  # fmt: skip
    backbone = to_container(cfg.backbone)
    finetune = instantiate(cfg.model, backbone=backbone, class_names=["a", "b"], class_counts=[3000, 3000])
    assert (finetune.hparams.lr, finetune.hparams.head_dropout) == (0.02, 0.25)
    assert finetune.hparams.trainable_blocks == 2  # conf/model/finetune.yaml's value
    assert finetune.hparams.scheduler["_target_"] == "transferlab.optim.step_decay"
    extraction = instantiate(cfg.model, backbone=backbone, class_names=["a", "b"], class_counts=[30, 30])
    assert extraction.hparams.lr == 0.5
    assert extraction.hparams.scheduler["_target_"] == "transferlab.optim.step_decay"
    assert extraction.hparams.cache_dir == cfg.model.feature_extraction.cache_dir


def test_auto_from_python_uses_the_class_defaults() -> None:
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True}
    module = auto_strategy(
        {"name": "small_cnn", "weights": "none"}, ["a", "b"], optimizer, class_counts=[3000, 3000],
        finetune={"lr": 0.01},
    )  # fmt: skip
    assert type(module) is FineTuneClassifier
    assert module.hparams.lr == 0.01 and module.hparams.optimizer == optimizer
    assert module.num_trainable_blocks == 2
