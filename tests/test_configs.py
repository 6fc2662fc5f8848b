"""Every config file composes, and what it names can be built."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import CONF_DIR, compose_config
from transferlab.backbones import build_backbone
from transferlab.utils.config import to_container
from transferlab.utils.instantiate import instantiate_callbacks, instantiate_loggers


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


# Backbone configs whose default weights need a download (or a cache) get `weights=none` here;
# loading real weights is tested in test_backbones.py.
BACKBONE_OVERRIDES = {"timm": ["backbone.model_name=resnet10t"]}


@pytest.mark.parametrize("name", _options("backbone"))
def test_backbone_configs_build(name: str, tmp_path: Path) -> None:
    extra = BACKBONE_OVERRIDES.get(name, [])
    cfg = compose_config("train", [f"backbone={name}", *extra], tmp_path)
    args = to_container(cfg.backbone)
    if args["weights"] == "imagenet" and name != "efficientnet_lite0":
        args["weights"] = "none"
    backbone = build_backbone(**args)
    assert backbone.feature_dim > 0


# Data configs whose roots are not data.root.
DATA_ROOTS = {"domain_adaptation": ("data.source_root", "data.target_root")}


@pytest.mark.parametrize("group", ["callbacks", "logger", "trainer", "data", "model"])
def test_group_configs_instantiate(group: str, tiny_data: Path, tmp_path: Path) -> None:
    for option in _options(group):
        roots = DATA_ROOTS.get(option, ("data.root",)) if group == "data" else ("data.root",)
        overrides = [f"{group}={option}", *(f"{key}={tiny_data}" for key in roots), "backbone=small_cnn"]
        cfg = compose_config("train", overrides, tmp_path / option)
        if group == "callbacks":
            assert all(c is not None for c in instantiate_callbacks(cfg.callbacks))
        elif group == "logger":
            assert instantiate_loggers(cfg.logger)
        elif group == "trainer":
            if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
                continue  # built with the CPU swapped in by tests/test_scale.py
            instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        elif group == "data":
            assert instantiate(cfg.data).hparams is not None
        else:
            model = instantiate(
                cfg.model, backbone=to_container(cfg.backbone), class_names=["a", "b"], class_counts=[5, 5]
            )
            assert model.hparams.class_names == ["a", "b"]


@pytest.mark.parametrize("config_name", ["train", "eval", "predict"])
def test_entry_configs_compose(config_name: str, tmp_path: Path) -> None:
    overrides = {"eval": ["ckpt_path=x.ckpt"], "predict": ["ckpt_path=x.ckpt", "input=."]}.get(
        config_name, []
    )
    cfg = compose_config(config_name, overrides, tmp_path)
    assert cfg.task_name == config_name


@pytest.mark.parametrize("name", _options("experiment"))
def test_experiments_run_one_batch(name: str, tmp_path: Path) -> None:
    from transferlab.train import train

    overrides = [f"experiment={name}", "debug=fast", "trainer.accelerator=cpu", "logger=csv"]
    cfg = compose_config("train", overrides, tmp_path)
    metrics, _ = train(cfg)
    assert "test/acc" in metrics
