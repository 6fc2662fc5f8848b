"""``transferlab-eval ckpt_path=FILE [data.root=DIR]``: test a trained checkpoint on a test split."""

from __future__ import annotations

from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from transferlab.errors import UserError
from transferlab.strategies.loading import load_module_from_checkpoint
from transferlab.utils.cli import print_config_tree, run_task
from transferlab.utils.instantiate import instantiate_loggers
from transferlab.utils.paths import CONF_DIR
from transferlab.utils.run_summary import print_run_summary, scalar_metrics


def evaluate(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Rebuild the module from ``cfg.ckpt_path`` and run the test loop on ``cfg.data``."""
    model = load_module_from_checkpoint(cfg.ckpt_path)
    datamodule = instantiate(cfg.data)
    datamodule.set_preprocessing(model.preprocessing)
    datamodule.prepare_data()
    if list(datamodule.class_names) != list(model.class_names):
        raise UserError(
            f"The classes under data.root={cfg.data.root} {list(datamodule.class_names)} differ from the "
            f"classes the checkpoint was trained on {model.class_names}. Point data.root at data with the "
            "same class folders."
        )
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False)
    trainer.test(model, datamodule=datamodule)
    metrics = scalar_metrics(trainer.callback_metrics)
    print_run_summary(metrics, cfg.paths.output_dir, title=f"eval: {cfg.ckpt_path}")
    return metrics, {"cfg": cfg, "model": model, "datamodule": datamodule, "trainer": trainer}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Console script ``transferlab-eval``."""
    print_config_tree(cfg, order=("ckpt_path", "data", "trainer", "paths"))
    run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
