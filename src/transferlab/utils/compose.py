"""Compose the project's Hydra configs from Python (notebooks, tests), as the entry points would."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from transferlab.utils.paths import CONF_DIR


def compose_run_config(
    config_name: str, overrides: Sequence[str] = (), output_dir: str | Path = "logs/notebook"
) -> DictConfig:
    """The composed config ``conf/<config_name>.yaml`` with ``overrides``, its run folder at ``output_dir``.

    Outside ``@hydra.main`` there is no Hydra run folder, so this sets one (``paths.output_dir``, where
    checkpoints, TensorBoard files and records go) and registers the config the way the entry points
    see it, so ``transferlab.train.train(cfg)`` and friends run unchanged.

    Args:
        config_name: ``"train"``, ``"eval"``, ``"predict"``, ``"export"``, ...
        overrides: command-line style overrides, e.g.
            ``["model=feature_extraction", "trainer.max_epochs=2"]``.
        output_dir: the run folder (created).

    Returns:
        The config, with ``hydra`` settings included (as ``return_hydra_config=True`` gives them).
    """
    output = Path(output_dir).expanduser().resolve()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output)
        cfg.paths.output_dir = str(output)
    HydraConfig().set_config(cfg)
    output.mkdir(parents=True, exist_ok=True)
    return cfg
