"""TensorBoard gets a predictions grid and a confusion matrix after each validation epoch."""

from __future__ import annotations

from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from transferlab.callbacks.image_logging import render_confusion_matrix, render_prediction_grid
from transferlab.train import train


def test_confusion_matrix_picture_shades_by_row_share() -> None:
    picture = render_confusion_matrix(torch.tensor([[5, 0], [1, 4]]), ["cat", "dog"])
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.dtype.name == "uint8"
    assert picture.shape[0] > 2 * 36


def test_prediction_grid_has_one_tile_per_image() -> None:
    from PIL import Image

    images = [Image.new("RGB", (10, 10), (i * 20, 0, 0)) for i in range(10)]
    grid = render_prediction_grid(images, ["a"] * 10, ["a"] * 5 + ["b"] * 5, columns=4)
    assert grid.shape[:2] == (3 * (96 + 24), 4 * 96)


def test_training_logs_images_each_validation_epoch(train_config) -> None:
    cfg = train_config("trainer.max_epochs=2")
    train(cfg)
    events = EventAccumulator(
        str(Path(cfg.paths.output_dir) / "tensorboard"), size_guidance={"images": 0}
    ).Reload()
    tags = set(events.Tags()["images"])
    assert {"val/predictions", "val/confusion_matrix"} <= tags
    assert [e.step for e in events.Images("val/confusion_matrix")] == [0, 1]
