"""One value per setting: every conf/model value equals the Python default of what the config builds."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR
from transferlab.utils.config import to_container

MODEL_DIR = Path(CONF_DIR) / "model"
OPTIONS = {
    "model": sorted(p.stem for p in MODEL_DIR.glob("*.yaml")),
    "model/scheduler": sorted(p.stem for p in (MODEL_DIR / "scheduler").glob("*.yaml")),
    "model/optimizer": sorted(p.stem for p in (MODEL_DIR / "optimizer").glob("*.yaml")),
}
CASES = [(group, option) for group, options in OPTIONS.items() for option in options]


def _model_config(monkeypatch: pytest.MonkeyPatch, *overrides: str) -> dict[str, Any]:
    """``model`` of the train config as the CLI composes it, resolved with the shipped paths."""
    monkeypatch.delenv("TRANSFERLAB_ROOT", raising=False)  # paths.root_dir is "."
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return OmegaConf.to_container(cfg.model, resolve=True)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _differences(node: dict[str, Any], where: str) -> list[str]:
    """Settings of ``node`` (and of nested nodes with their own ``_target_``) unlike the Python defaults."""
    parameters = inspect.signature(get_object(node["_target_"])).parameters
    found = []
    for key, value in node.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict) and "_target_" in value:
            found += _differences(value, f"{where}.{key}")  # checked against its own target
        elif key not in parameters:
            found.append(f"{where}.{key}: {node['_target_']} has no such argument")
        elif _plain(parameters[key].default) != value:
            found.append(
                f"{where}.{key}={value!r} but {node['_target_']} defaults to {parameters[key].default!r}"
            )
    return found


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_config_values_equal_the_python_defaults(group: str, option: str, monkeypatch) -> None:
    model = _model_config(monkeypatch, f"{group}={option}")
    node = model if group == "model" else model[group.rpartition("/")[2]]
    assert not _differences(node, "model" if group == "model" else f"model.{group.rpartition('/')[2]}")


def _only_plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _only_plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_only_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


@pytest.mark.parametrize("option", OPTIONS["model"])
def test_model_configs_give_modules_plain_hyperparameters(
    option: str, tiny_data: Path, tmp_path: Path
) -> None:
    from tests.conftest import compose_config

    cfg = compose_config(
        "train", [f"model={option}", "backbone=small_cnn", f"data.root={tiny_data}"], tmp_path
    )
    # converted once, by the config's _convert_ (the entry point passes the backbone as a plain dict)
    module = instantiate(
        cfg.model, backbone=to_container(cfg.backbone), class_names=["a", "b"], class_counts=[5, 5]
    )
    assert _only_plain(dict(module.hparams)), dict(module.hparams)
