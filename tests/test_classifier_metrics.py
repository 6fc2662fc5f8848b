"""Classifier metrics: one value per epoch from that epoch's batches only; one log call per training step."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

from transferlab.strategies import FineTuneClassifier

BACKBONE = {"name": "small_cnn", "weights": "none"}
ADAMW = {"_target_": "torch.optim.AdamW", "_partial_": True}


class RecordingLogger(Logger):
    """Keeps every logged value and its step: ``values[name]``, ``steps[name]``, in the order logged."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, list[float]] = defaultdict(list)
        self.steps: dict[str, list[int | None]] = defaultdict(list)

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for name, value in metrics.items():
            self.values[name].append(float(value))
            self.steps[name].append(step)


class RecordingClassifier(FineTuneClassifier):
    """Fine-tuning classifier that keeps each batch's correct predictions and counts its step logs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.correct: dict[tuple[str, int], list[torch.Tensor]] = defaultdict(list)
        self.losses: dict[tuple[str, int], list[tuple[float, int]]] = defaultdict(list)
        self.logs_per_training_step: list[int] = []
        self._logs = 0

    def log(self, *args: Any, **kwargs: Any) -> None:
        self._logs += 1
        super().log(*args, **kwargs)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self._logs = 0
        loss = super().training_step(batch, batch_idx)
        self.logs_per_training_step.append(self._logs)
        return loss

    def log_classification(
        self, stage: str, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor
    ) -> None:
        phase = "sanity" if self.trainer.sanity_checking else stage
        self.correct[phase, self.current_epoch].append(logits.argmax(dim=1) == y)
        self.losses[phase, self.current_epoch].append((float(loss.detach()), len(y)))
        super().log_classification(stage, loss, logits, y)


class LoggingEveryStep(RecordingClassifier):
    """Logs the step loss in every training step, whether or not the loggers write that step."""

    def log_step_loss(self, loss: torch.Tensor, **kwargs: Any) -> None:
        self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, **kwargs)


def _loader(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    images, labels = torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % 3
    return DataLoader(TensorDataset(images, labels), batch_size=8)


def _fit(
    module_class: type[RecordingClassifier], root: Path, log_every_n_steps: int, sanity_steps: int
) -> tuple[RecordingClassifier, RecordingLogger, L.Trainer]:
    """Fit a fresh 3-class module (seed 0) for 3 epochs of 5 training and 3 validation batches."""
    torch.manual_seed(0)
    module = module_class(
        backbone=BACKBONE, class_names=["a", "b", "c"], optimizer=ADAMW, scheduler=None, lr=0.05
    )
    logger = RecordingLogger()
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", logger=logger, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=sanity_steps,
        log_every_n_steps=log_every_n_steps, default_root_dir=root,
    )  # fmt: skip
    trainer.fit(module, _loader(40, seed=1), _loader(24, seed=2))
    return module, logger, trainer


def test_epoch_metrics_are_those_of_the_epochs_own_batches(tmp_path: Path) -> None:
    module, logger, _ = _fit(RecordingClassifier, tmp_path, log_every_n_steps=1, sanity_steps=1)

    # Each step logs its loss only; the epoch values are logged at the end of the epoch.
    assert module.logs_per_training_step == [1] * 15
    assert len(logger.values["train/loss_step"]) == 15
    assert module.correct["sanity", 0]  # the sanity check ran, and must not count towards epoch 0
    for stage in ("train", "val"):
        expected_acc = [torch.cat(module.correct[stage, epoch]).float().mean().item() for epoch in range(3)]
        expected_loss = [
            sum(loss * n for loss, n in module.losses[stage, epoch])
            / sum(n for _, n in module.losses[stage, epoch])
            for epoch in range(3)
        ]
        assert logger.values[f"{stage}/acc"] == pytest.approx(expected_acc, abs=1e-6)
        assert logger.values[f"{stage}/loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert len(logger.values["val/f1_macro"]) == 3
    assert logger.values["val/acc_best"] == pytest.approx(
        [max(logger.values["val/acc"][: i + 1]) for i in range(3)], abs=1e-6
    )


def test_the_step_loss_is_logged_only_on_the_steps_the_loggers_write(tmp_path: Path) -> None:
    runs = {}
    for module_class in (RecordingClassifier, LoggingEveryStep):
        module, logger, trainer = _fit(module_class, tmp_path / module_class.__name__, 4, sanity_steps=0)
        runs[module_class] = (logger, module.logs_per_training_step, trainer.callback_metrics)

    logger, calls, callback_metrics = runs[RecordingClassifier]
    every_step_logger, every_step_calls, _ = runs[LoggingEveryStep]
    # The loggers get the same step losses at the same steps (every 4th of the 15 steps) ...
    assert logger.steps["train/loss_step"] == every_step_logger.steps["train/loss_step"] == [3, 7, 11]
    assert logger.values["train/loss_step"] == pytest.approx(every_step_logger.values["train/loss_step"])
    assert callback_metrics["train/loss_step"].item() == pytest.approx(logger.values["train/loss_step"][-1])
    # ... from one log call on each of those steps instead of one in every step.
    assert calls == [1 if (step + 1) % 4 == 0 else 0 for step in range(15)]
    assert every_step_calls == [1] * 15
