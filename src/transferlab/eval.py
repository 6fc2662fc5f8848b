"""``transferlab-eval ckpt_path=FILE [data.root=DIR]``: test a trained checkpoint on its test split."""

from __future__ import annotations

import logging
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from transferlab.data.base import split_record_from_checkpoint
from transferlab.errors import UserError
from transferlab.strategies.loading import load_module_from_checkpoint, read_checkpoint, require_fixed_classes
from transferlab.utils.cli import print_config_tree, run_task
from transferlab.utils.instantiate import instantiate_loggers, instantiate_trainer
from transferlab.utils.paths import CONF_DIR
from transferlab.utils.quick_exit import exit_when_done
from transferlab.utils.run_summary import print_run_summary, scalar_metrics

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Rebuild the module from ``cfg.ckpt_path`` and run the test loop on the test split it was trained with.

    The checkpoint records its split (settings and file-list hashes): with ``split_from_checkpoint``
    (the default) the test split of ``data.root`` is rebuilt with the recorded settings and must match
    the record, so a model is never scored on images it trained on. A checkpoint without a record (from
    an older version) is tested on the split the data config makes, with a warning.

    Raises:
        UserError: the classes differ from the checkpoint's, or ``data.root`` no longer gives the
            recorded test split (files added, removed or renamed since training).
    """
    record = split_record_from_checkpoint(read_checkpoint(cfg.ckpt_path))
    model = load_module_from_checkpoint(cfg.ckpt_path)
    require_fixed_classes(
        model,
        cfg.ckpt_path,
        "It is scored on test episodes of classes it never saw: rerun the command that trained it with "
        f"train=false ckpt_path=CKPT added (e.g. transferlab-train data=fewshot data.root=DIR model=protonet "
        f"train=false ckpt_path={cfg.ckpt_path}).",
    )
    datamodule = instantiate(cfg.data)
    datamodule.set_preprocessing(model.preprocessing)
    if not cfg.get("split_from_checkpoint", True):
        log.info("split_from_checkpoint=false: testing on the split the data config makes of data.root.")
    elif record is None:
        log.warning(
            "%s holds no record of its data split (it was saved before transferlab recorded splits): testing "
            "on the split the data config makes of data.root. If training used other split settings "
            "(data.num_folds, data.fold, fractions, data.split_seed), pass the same ones, or the test images "
            "may include images the model trained on.",
            cfg.ckpt_path,
        )
    else:
        datamodule.restore_split(record)
    datamodule.prepare_data()
    if list(datamodule.class_names) != list(model.class_names):
        raise UserError(
            f"The classes under data.root={cfg.data.root} {list(datamodule.class_names)} differ from the "
            f"classes the checkpoint was trained on {model.class_names}. Point data.root at data with the "
            "same class folders."
        )
    datamodule.setup("test")  # builds (and checks) the test split before the trainer starts
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer = instantiate_trainer(cfg.trainer, logger=loggers or False)
    trainer.test(model, datamodule=datamodule)
    metrics = scalar_metrics(trainer.callback_metrics)
    print_run_summary(metrics, cfg.paths.output_dir, title=f"eval: {cfg.ckpt_path}")
    return metrics, {"cfg": cfg, "model": model, "datamodule": datamodule, "trainer": trainer}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Console script ``transferlab-eval``."""
    print_config_tree(cfg, order=("ckpt_path", "split_from_checkpoint", "data", "trainer", "paths"))
    run_task(evaluate, cfg)


# the console script: main, then a quick exit (see exit_when_done)
cli = exit_when_done(main)

if __name__ == "__main__":
    cli()
