"""Training through the real config and task function: outputs, metrics, freezing, resume."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import FAST_OVERRIDES, ROOT, run_cli
from transferlab.backbones import backbone_preprocessing
from transferlab.train import train
from transferlab.utils import replaced_files
from transferlab.utils.config import to_container


def test_train_writes_checkpoints_metrics_and_tensorboard(train_config, tmp_path: Path) -> None:
    cfg = train_config("trainer.max_epochs=2")
    metrics, _ = train(cfg)

    out = Path(cfg.paths.output_dir)
    assert (out / "checkpoints" / "best.ckpt").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    for name in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "val/f1_macro",
        "test/acc",
    ):
        assert name in metrics, name
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["val/acc_best"] >= metrics["val/acc"] - 1e-6

    # TensorBoard's own reader sees the scalars, one point per epoch for epoch metrics.
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/acc", "val/acc_best", "test/acc"} <= tags
    assert len(events.Scalars("val/acc")) == 2
    assert (out / "csv" / "metrics.csv").is_file()
    assert json.loads((out / "metrics.json").read_text())["test/acc"] == metrics["test/acc"]


def _fit_and_compare(cfg, epochs: int = 2) -> tuple[dict, dict, object]:
    """Fit the configured module directly; return state before, state after, and the module."""
    datamodule = instantiate(cfg.data)
    datamodule.set_preprocessing(backbone_preprocessing(name=cfg.backbone.name))
    datamodule.prepare_data()
    model = instantiate(cfg.model, backbone=to_container(cfg.backbone), class_names=datamodule.class_names)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    return before, model.state_dict(), model


def test_replaced_checkpoints_are_freed_off_the_training_loop_and_none_is_left_behind(
    train_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every replaced checkpoint counts as large here, as a real model's (14 MB and more) does.
    monkeypatch.setattr(replaced_files, "LARGE_FILE_BYTES", 1)
    freed: list[str] = []
    remove = replaced_files._remove
    monkeypatch.setattr(replaced_files, "_remove", lambda aside: (freed.append(aside.name), remove(aside)))
    cfg = train_config("trainer.max_epochs=3")
    train(cfg)
    replaced_files.wait_for_released_files()
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    # From the second epoch on, last.ckpt (or best.ckpt) replaces a file of its own: freed on the thread.
    assert freed and all(name.startswith((".last.ckpt.", ".best.ckpt.")) for name in freed)
    assert sorted(path.name for path in folder.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics(train_config) -> None:
    before, after, model = _fit_and_compare(train_config("model.trainable_blocks=0"))
    backbone_keys = [k for k in before if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone_keys), "the small CNN must have BatchNorm layers"
    for key in backbone_keys:
        assert torch.equal(before[key], after[key]), f"frozen {key} changed"
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"]), "the head did not train"
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_last_block_trains_and_blocks_below_stay_frozen(train_config) -> None:
    before, after, model = _fit_and_compare(train_config("model.trainable_blocks=1"))
    groups = model.backbone.block_groups()
    top_ids = {id(p) for p in groups[-1].parameters()}
    names = dict(model.backbone.named_parameters())
    for name, param in names.items():
        changed = not torch.equal(before[f"backbone.{name}"], after[f"backbone.{name}"])
        assert changed == (id(param) in top_ids), name
    # BatchNorm statistics of frozen blocks stay put (frozen blocks run in eval mode).
    lower_buffers = {id(b) for g in groups[:-1] for m in g.modules for b in m.buffers()}
    for name, buf in model.backbone.named_buffers():
        if id(buf) in lower_buffers and "running" in name:
            assert torch.equal(before[f"backbone.{name}"], after[f"backbone.{name}"]), name


def test_resume_continues_at_the_right_epoch_with_optimizer_state(train_config, tmp_path: Path) -> None:
    first = train_config("trainer.max_epochs=2", "test=false", output_dir=tmp_path / "first")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] == 1
    steps_per_epoch = saved["global_step"] // 2

    second = train_config(
        "trainer.max_epochs=3", f"ckpt_path={last}", "test=false", output_dir=tmp_path / "second"
    )
    _, objects = train(second)
    trainer = objects["trainer"]
    assert trainer.current_epoch == 3
    assert trainer.global_step == 3 * steps_per_epoch

    resumed = torch.load(Path(second.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    # AdamW counts its steps per parameter: 3 epochs' worth only if the first run's state was restored.
    adam_steps = {int(s["step"]) for s in resumed["optimizer_states"][0]["state"].values()}
    assert adam_steps == {3 * steps_per_epoch}
    assert resumed["lr_schedulers"][0]["last_epoch"] == 3 * steps_per_epoch
    # The resumed run trained and validated epoch 2 only, and kept the best accuracy of the first run.
    events = EventAccumulator(str(Path(second.paths.output_dir) / "tensorboard")).Reload()
    assert len(events.Scalars("val/acc")) == 1
    first_best = EventAccumulator(str(Path(first.paths.output_dir) / "tensorboard")).Reload()
    assert events.Scalars("val/acc_best")[0].value >= max(e.value for e in first_best.Scalars("val/acc"))


class StopAfterEpoch(L.Callback):
    """Ends training after ``epoch`` as an interruption would (the schedule still spans max_epochs)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def test_interrupted_and_resumed_run_ends_with_the_same_weights_as_an_unbroken_one(
    train_config, tmp_path: Path
) -> None:
    # Shuffling, augmentation and dropout all draw random numbers every epoch.
    same = ["data.augmentation=light", "model.head_dropout=0.3", "test=false", "trainer.max_epochs=3"]
    unbroken = train_config(*same, output_dir=tmp_path / "unbroken")
    train(unbroken)
    stopper = ["+callbacks.stop._target_=tests.test_train.StopAfterEpoch", "+callbacks.stop.epoch=1"]
    interrupted = train_config(*same, *stopper, output_dir=tmp_path / "interrupted")
    train(interrupted)
    last = Path(interrupted.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    resumed = train_config(*same, f"ckpt_path={last}", output_dir=tmp_path / "resumed")
    train(resumed)

    def weights(cfg) -> dict[str, torch.Tensor]:
        path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return torch.load(path, weights_only=True)["state_dict"]

    expected, got = weights(unbroken), weights(resumed)
    assert expected.keys() == got.keys()
    changed = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not changed, changed[:5]


class SpoilHeadAfterEpoch(L.Callback):
    """Zeroes the head before epoch ``epoch`` validates: that epoch is at chance level (a bad epoch)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            with torch.no_grad():
                for param in pl_module.head.parameters():
                    param.zero_()


class RecordCheckpointFiles(L.Callback):
    """After each epoch's checkpoints: the epoch, and whether last.ckpt is the very file best.ckpt is."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, bool]] = []
        self._finished: int | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finished = trainer.current_epoch  # its checkpoints are written after this hook

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def _record(self, trainer: L.Trainer) -> None:
        if self._finished is not None:
            folder = Path(trainer.default_root_dir) / "checkpoints"
            same = os.path.samefile(folder / "best.ckpt", folder / "last.ckpt")
            self.epochs.append((self._finished, same))
            self._finished = None


def test_a_new_best_epoch_writes_the_model_once_and_links_last_to_it(train_config, tmp_path: Path) -> None:
    recorder = ["+callbacks.files._target_=tests.test_train.RecordCheckpointFiles"]
    stop = ["+callbacks.stop._target_=tests.test_train.StopAfterEpoch", "+callbacks.stop.epoch=0"]
    first = train_config("trainer.max_epochs=2", "test=false", *recorder, *stop, output_dir=tmp_path / "a")
    _, objects = train(first)
    (files,) = [c for c in objects["trainer"].callbacks if isinstance(c, RecordCheckpointFiles)]
    assert files.epochs == [(0, True)]  # the first epoch is a new best: one file, two names
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"

    # Resumed from that linked file into a new folder; its epoch is at chance level, so not a new best.
    spoil = ["+callbacks.spoil._target_=tests.test_train.SpoilHeadAfterEpoch", "+callbacks.spoil.epoch=1"]
    resumed = train_config(
        "trainer.max_epochs=2",
        "test=false",
        *recorder,
        *spoil,
        f"ckpt_path={last}",
        output_dir=tmp_path / "b",
    )
    _, objects = train(resumed)
    (files,) = [c for c in objects["trainer"].callbacks if isinstance(c, RecordCheckpointFiles)]
    assert files.epochs == [(1, False)]  # written, not linked: last.ckpt holds epoch 1, best.ckpt epoch 0
    folder = Path(resumed.paths.output_dir) / "checkpoints"
    best, newest = (torch.load(folder / name, weights_only=True) for name in ("best.ckpt", "last.ckpt"))
    assert (best["epoch"], newest["epoch"]) == (0, 1)
    assert newest["global_step"] == 2 * best["global_step"] > 0  # the resume went on from the link
    first_state = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.equal(best["state_dict"][k], v) for k, v in first_state.items())


def _callback_state(path: Path, monitor: str) -> dict:
    states = torch.load(path, weights_only=True)["callbacks"]
    return next(
        s for key, s in states.items() if key.startswith("ModelCheckpoint") and s["monitor"] == monitor
    )


def test_resumed_run_tests_the_best_checkpoint_of_the_whole_run(
    tiny_data: Path, tmp_path: Path, monkeypatch
) -> None:
    # The CLI's way: the first run is interrupted after its best epoch, the resume opens a new run folder,
    # and its only epoch is worse than the best one.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    common = [*FAST_OVERRIDES, f"data.root={tiny_data}", "trainer.max_epochs=3", "model.lr=0.01"]
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    stop = ["+callbacks.stop._target_=tests.test_train.StopAfterEpoch", "+callbacks.stop.epoch=1"]
    result = run_cli("transferlab.train", *common, *stop, f"hydra.run.dir={first}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    first_best = first / "checkpoints" / "best.ckpt"
    first_metrics = json.loads((first / "metrics.json").read_text())

    spoil = ["+callbacks.spoil._target_=tests.test_train.SpoilHeadAfterEpoch", "+callbacks.spoil.epoch=2"]
    last = first / "checkpoints" / "last.ckpt"
    result = run_cli(
        "transferlab.train", *common, *spoil, f"ckpt_path={last}", f"hydra.run.dir={resumed}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((resumed / "metrics.json").read_text())
    resumed_best = resumed / "checkpoints" / "best.ckpt"

    # The spoilt epoch validated, and was not better than the best epoch of the first run.
    events = EventAccumulator(str(resumed / "tensorboard")).Reload()
    (spoilt,) = events.Scalars("val/loss")
    assert spoilt.value == pytest.approx(math.log(3), abs=1e-4)  # all logits 0: chance level
    assert metrics["val/acc_best"] == pytest.approx(first_metrics["val/acc_best"])
    # The resumed run's best.ckpt is the first run's best, with its score, and it is what was tested.
    expected = torch.load(first_best, weights_only=True)
    kept = torch.load(resumed_best, weights_only=True)
    assert kept["epoch"] == expected["epoch"] < 2
    assert all(torch.equal(kept["state_dict"][k], v) for k, v in expected["state_dict"].items())
    state = _callback_state(resumed / "checkpoints" / "last.ckpt", "val/acc")
    assert float(state["best_model_score"]) == pytest.approx(metrics["val/acc_best"])
    assert state["best_model_path"] == str(resumed_best)
    for name in ("test/acc", "test/loss"):
        assert metrics[name] == pytest.approx(first_metrics[name], abs=1e-6), name


def test_resume_without_the_earlier_best_checkpoint_is_one_clear_message(
    train_config, tiny_data: Path, tmp_path: Path
) -> None:
    common = [*FAST_OVERRIDES, f"data.root={tiny_data}", "test=false"]
    first = tmp_path / "first"
    train(train_config("test=false", output_dir=first))  # the first run as the CLI writes it
    (first / "checkpoints" / "best.ckpt").unlink()
    last = first / "checkpoints" / "last.ckpt"
    result = run_cli(
        "transferlab.train",
        *common,
        "trainer.max_epochs=2",
        f"ckpt_path={last}",
        f"hydra.run.dir={tmp_path / 'resumed'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "best.ckpt" in result.stderr and "no longer exists" in result.stderr
    assert "Traceback" not in result.stderr
