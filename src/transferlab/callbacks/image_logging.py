"""TensorBoard pictures of validation: a captioned grid of predictions and a confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image, ImageDraw, ImageFont

from transferlab.data import build_eval_transform, load_rgb

CAPTION_HEIGHT = 24
TILE = 96


def render_prediction_grid(
    images: Sequence[Image.Image], predicted: Sequence[str], true: Sequence[str], columns: int = 8
) -> np.ndarray:
    """Tiles of the images, each captioned "pred / true" (green when right, red when wrong); HWC uint8."""
    font = ImageFont.load_default()
    rows = max(1, -(-len(images) // columns))
    width = min(columns, len(images)) * TILE
    canvas = Image.new("RGB", (max(width, TILE), rows * (TILE + CAPTION_HEIGHT)), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (image, pred, truth) in enumerate(zip(images, predicted, true, strict=True)):
        x, y = (index % columns) * TILE, (index // columns) * (TILE + CAPTION_HEIGHT)
        canvas.paste(image.convert("RGB").resize((TILE, TILE)), (x, y))
        colour = (0, 128, 0) if pred == truth else (200, 0, 0)
        draw.text((x + 2, y + TILE + 1), f"p: {pred}"[:16], fill=colour, font=font)
        draw.text((x + 2, y + TILE + 12), f"t: {truth}"[:16], fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def render_confusion_matrix(matrix: torch.Tensor, class_names: Sequence[str], cell: int = 36) -> np.ndarray:
    """Heat map of counts (rows: true class, columns: predicted class) with labels; HWC uint8."""
    font = ImageFont.load_default()
    counts = matrix.to(torch.int64).tolist()
    n = len(class_names)
    margin = 90
    canvas = Image.new("RGB", (margin + n * cell, margin + n * cell), "white")
    draw = ImageDraw.Draw(canvas)
    row_totals = [max(1, sum(row)) for row in counts]
    for i in range(n):
        draw.text((2, margin + i * cell + cell // 3), str(class_names[i])[:14], fill="black", font=font)
        draw.text(
            (margin + i * cell + 2, margin - 14 - (i % 2) * 12),
            str(class_names[i])[:6],
            fill="black",
            font=font,
        )
        for j in range(n):
            share = counts[i][j] / row_totals[i]
            shade = int(255 * (1 - share))
            box = (
                margin + j * cell,
                margin + i * cell,
                margin + (j + 1) * cell - 1,
                margin + (i + 1) * cell - 1,
            )
            draw.rectangle(box, fill=(shade, shade, 255))
            draw.text(
                (box[0] + 4, box[1] + cell // 3),
                str(counts[i][j]),
                fill="black" if share < 0.6 else "white",
                font=font,
            )
    draw.text((margin, 2), "rows: true, columns: predicted", fill="black", font=font)
    return np.asarray(canvas)


class ValidationImageLogger(L.Callback):
    """After each validation epoch, add a predictions grid and a confusion matrix to TensorBoard.

    The grid shows the first ``num_images`` validation images with their predicted and true class. It
    reads the images from the data module's ``val_set.samples`` (paths), so it also works when training
    runs on cached features; a module with a ``sample_logits(samples)`` method that returns logits (feature
    extraction on cached features does) predicts them without running the backbone on the images.

    Args:
        num_images: images in the grid.
        every_n_epochs: log every N validation epochs.
    """

    def __init__(self, num_images: int = 16, every_n_epochs: int = 1) -> None:
        self.num_images = num_images
        self.every_n_epochs = max(1, every_n_epochs)

    @staticmethod
    def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._tensorboard(trainer)
        if logger is None or trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        step = trainer.current_epoch
        confusion = getattr(pl_module, "last_val_confusion", None)
        if confusion is not None:
            picture = render_confusion_matrix(confusion, pl_module.class_names)
            logger.experiment.add_image("val/confusion_matrix", picture, step, dataformats="HWC")
        samples = getattr(getattr(trainer.datamodule, "val_set", None), "samples", None)
        if samples and self.num_images > 0:
            grid = self._prediction_grid(pl_module, samples[: self.num_images])
            logger.experiment.add_image("val/predictions", grid, step, dataformats="HWC")

    @torch.no_grad()
    def _prediction_grid(
        self, pl_module: L.LightningModule, samples: Sequence[tuple[str, int]]
    ) -> np.ndarray:
        images = [load_rgb(path) for path, _ in samples]
        was_training = pl_module.training
        pl_module.eval()
        # A module training on cached features predicts from them, without running its backbone again.
        sample_logits = getattr(pl_module, "sample_logits", None)
        logits = sample_logits(samples) if sample_logits is not None else None
        if logits is None:
            transform = build_eval_transform(pl_module.preprocessing)
            logits = pl_module(torch.stack([transform(image) for image in images]).to(pl_module.device))
        predicted = logits.argmax(dim=1).tolist()
        pl_module.train(was_training)
        names = pl_module.class_names
        return render_prediction_grid(images, [names[i] for i in predicted], [names[t] for _, t in samples])
