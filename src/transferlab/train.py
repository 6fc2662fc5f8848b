"""``transferlab-train``: compose the config, build everything with ``instantiate``, fit, then test."""

from __future__ import annotations

import logging
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from transferlab.backbones import backbone_preprocessing
from transferlab.errors import UserError
from transferlab.strategies.loading import read_checkpoint
from transferlab.utils.checkpoint_match import check_checkpoint_matches
from transferlab.utils.cli import print_config_tree, run_task
from transferlab.utils.config import to_container
from transferlab.utils.hparams import log_final_hparams
from transferlab.utils.instantiate import instantiate_callbacks, instantiate_loggers, instantiate_trainer
from transferlab.utils.paths import CONF_DIR
from transferlab.utils.quick_exit import exit_when_done
from transferlab.utils.run_summary import print_run_summary, scalar_metrics, write_metrics

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Train (and test) the model the config describes.

    With ``ckpt_path``, training resumes from that checkpoint (``last.ckpt`` of an earlier run); with
    ``train=false`` it is the checkpoint tested instead (loaded into the model the config builds).

    Returns:
        The final metrics (``val/acc_best``, ``test/acc``, ...) and the objects built, by name.

    Raises:
        UserError: ``train=false`` without ``ckpt_path``, or a checkpoint that does not fit the config.
    """
    ckpt_path = cfg.get("ckpt_path")
    fit, test = bool(cfg.get("train", True)), bool(cfg.get("test", True))
    if not fit and test and not ckpt_path:
        raise UserError(
            "train=false tests a trained checkpoint: give it with ckpt_path=.../checkpoints/best.ckpt "
            "(without it there would only be untrained weights to test)."
        )
    # A missing, foreign or unsafe file fails here, before any work.
    checkpoint = read_checkpoint(ckpt_path) if ckpt_path else None
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    backbone_cfg = to_container(cfg.backbone)
    datamodule = instantiate(cfg.data)
    preprocessing_args = {k: v for k, v in backbone_cfg.items() if k != "weights"}
    datamodule.set_preprocessing(backbone_preprocessing(**preprocessing_args))
    datamodule.prepare_data()  # writes the demo data on first use
    datamodule.setup("fit")  # finds the classes and counts the training images per class

    model = instantiate(
        cfg.model,
        backbone=backbone_cfg,
        class_names=datamodule.class_names,
        class_counts=datamodule.class_counts,
    )
    if checkpoint is not None:
        purpose = "resumed" if fit else "tested"
        check_checkpoint_matches(checkpoint, model, datamodule.class_names, ckpt_path, purpose=purpose)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer = instantiate_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if fit:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = scalar_metrics(trainer.callback_metrics)

    if test:
        tested = _best_checkpoint(trainer) if fit else ckpt_path
        log.info("Testing %s", tested or "the weights at the end of training")
        trainer.test(model, datamodule=datamodule, ckpt_path=tested, weights_only=True)
        metrics.update(scalar_metrics(trainer.callback_metrics))

    log_final_hparams(trainer.loggers, _flat_config(cfg), metrics)  # TensorBoard's hparams view
    write_metrics(metrics, cfg.paths.output_dir)
    print_run_summary(metrics, cfg.paths.output_dir, title=f"{cfg.task_name}: {type(model).__name__}")
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}
    return metrics, objects


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best checkpoint the run's monitoring checkpoint callback kept, or None (with a warning)."""
    best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor), "")
    if not best:
        log.warning("No best checkpoint was saved: testing the weights as they are at the end of training.")
    return best or None


def _flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings as flat ``group/key`` pairs for the loggers' hyperparameter views."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}" if prefix else str(key))
        else:
            flat[prefix] = node if isinstance(node, int | float | str | bool) or node is None else str(node)

    for group in ("data", "backbone", "model", "trainer", "seed"):
        if group in cfg:
            node = cfg[group]
            walk(OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node, group)
    return flat


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console script ``transferlab-train``; returns the metric a sweeper optimizes."""
    print_config_tree(cfg)
    metrics, _ = run_task(train, cfg)
    optimized = cfg.get("optimized_metric")
    return metrics.get(optimized) if optimized else None


# the console script: main, then a quick exit (see exit_when_done)
cli = exit_when_done(main)

if __name__ == "__main__":
    cli()
