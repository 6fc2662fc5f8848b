"""TensorBoard pictures of validation: a captioned grid of predictions and a confusion matrix."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image, ImageDraw, ImageFont

from transferlab.callbacks.confusion_matrix import ConfusionMatrixRenderer, confusion_matrix_figure
from transferlab.callbacks.tensorboard_png import PngSummaryWriter
from transferlab.data import build_eval_transform, load_rgb
from transferlab.utils.background import BackgroundCalls

log = logging.getLogger(__name__)

__all__ = ["ValidationImageLogger", "confusion_matrix_figure", "render_prediction_grid", "stratified_sample"]

CAPTION_HEIGHT = 24
TILE = 96


def stratified_sample(targets: Sequence[int], count: int, seed: int = 0) -> list[int]:
    """``count`` indices of ``targets`` spread evenly over the classes, the same for the same arguments.

    Each class's indices are shuffled with ``seed``; the classes then take turns giving their next index,
    so every class is in the sample when ``count`` is at least the number of classes, and a class with few
    samples gives all of them before the others stop. The result is ordered by class, then by index.
    """
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(targets):
        by_class.setdefault(int(label), []).append(index)
    queues = [rng.sample(indices, len(indices)) for _, indices in sorted(by_class.items())]
    chosen: list[int] = []
    for turn in range(max((len(q) for q in queues), default=0)):
        for queue in queues:
            if len(chosen) < count and turn < len(queue):
                chosen.append(queue[turn])
    return sorted(chosen, key=lambda index: (int(targets[index]), index))


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
        if image.size != (TILE, TILE) or image.mode != "RGB":
            image = image.convert("RGB").resize((TILE, TILE))
        canvas.paste(image, (x, y))
        colour = (0, 128, 0) if pred == truth else (200, 0, 0)
        draw.text((x + 2, y + TILE + 1), f"p: {pred}"[:16], fill=colour, font=font)
        draw.text((x + 2, y + TILE + 12), f"t: {truth}"[:16], fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


class ValidationImageLogger(L.Callback):
    """After each validation epoch, add a predictions grid and a confusion matrix to TensorBoard.

    The grid shows a fixed sample of ``num_images`` validation images spread over the classes
    (:func:`stratified_sample`, chosen once with ``seed``), each with its predicted and true class, so
    epochs compare on the same images. It reads the images from the data module's ``val_set.samples``
    (paths), so it also works when training runs on cached features; a module with a
    ``sample_logits(samples)`` method that returns logits (feature extraction on cached features does)
    predicts them without running the backbone on the images. The confusion matrix is the picture of
    :func:`confusion_matrix_figure`, redrawn each epoch by a :class:`ConfusionMatrixRenderer`, and the
    sample's tiles are read once. On cached features an epoch costs a fraction of a second, and the
    pictures must not cost more than the epoch: so only the predictions are made in the training loop;
    drawing, PNG encoding and writing happen on a thread of their own, which the end of fitting waits
    for (an error there stops training at the next epoch, or at the end). A grid or matrix equal to the
    epoch before's is neither drawn nor encoded again (:class:`PngSummaryWriter`).

    Args:
        num_images: images in the grid.
        every_n_epochs: log every N validation epochs.
        seed: seed of the sample of validation images.
    """

    def __init__(self, num_images: int = 16, every_n_epochs: int = 1, seed: int = 0) -> None:
        self.num_images = num_images
        self.every_n_epochs = max(1, every_n_epochs)
        self.seed = seed
        self.sample_indices: list[int] | None = None
        self._sampled_from: Sequence[tuple[str, int]] | None = None
        # Used by the drawing thread only.
        self._tiles: dict[str, Image.Image] = {}
        self._matrix_renderer: ConfusionMatrixRenderer | None = None
        self._last_grid: tuple[tuple[tuple[str, ...], ...], np.ndarray] | None = None
        self._png = PngSummaryWriter()
        self._drawing = BackgroundCalls("tensorboard-pictures")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_matrix_renderer"] = None  # a matplotlib figure; drawn again where it is needed
        return state

    @staticmethod
    def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._tensorboard(trainer)
        if logger is None or trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        if getattr(pl_module, "class_names", None) is None:
            return  # no fixed classes to predict (few-shot models): nothing to draw
        step = trainer.current_epoch
        writer = logger.experiment
        names = [str(name) for name in pl_module.class_names]
        confusion = getattr(pl_module, "last_val_confusion", None)
        if confusion is not None:
            matrix = confusion.detach().cpu().clone()
            self._drawing.submit(
                lambda: self._png.add(
                    writer, "val/confusion_matrix", self._confusion_picture(matrix, names), step
                )
            )
        samples = getattr(getattr(trainer.datamodule, "val_set", None), "samples", None)
        if samples and self.num_images > 0:
            chosen = [samples[i] for i in self._sample(samples)]
            predicted = [names[i] for i in self._predict(pl_module, chosen)]
            true = [names[label] for _, label in chosen]
            paths = [path for path, _ in chosen]
            self._drawing.submit(
                lambda: self._png.add(
                    writer, "val/predictions", self._prediction_grid(paths, predicted, true), step
                )
            )

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, error: BaseException) -> None:
        try:
            self._drawing.wait()  # keep the pictures of the epochs that finished
        except Exception as drawing_error:  # the run's own error is the one raised; this one is told
            log.warning("A validation picture could not be written: %s", drawing_error)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._drawing.wait()

    def _sample(self, samples: Sequence[tuple[str, int]]) -> list[int]:
        """The indices shown, chosen at the first call (again only if the validation set changes)."""
        if self.sample_indices is None or self._sampled_from is not samples:
            targets = [label for _, label in samples]
            self.sample_indices = stratified_sample(targets, self.num_images, self.seed)
            self._sampled_from = samples
        return self.sample_indices

    def _confusion_picture(self, confusion: torch.Tensor, names: list[str]) -> np.ndarray:
        if self._matrix_renderer is None or self._matrix_renderer.class_names != names:
            self._matrix_renderer = ConfusionMatrixRenderer(names)
        return self._matrix_renderer.render(confusion)

    @torch.no_grad()
    def _predict(self, pl_module: L.LightningModule, samples: Sequence[tuple[str, int]]) -> list[int]:
        """The predicted class index of each of ``samples``."""
        # Called at the end of validation, where the module is in eval mode already: switching the modes
        # of every layer of a backbone twice would cost more than a prediction on cached features.
        was_training = pl_module.training
        if was_training:
            pl_module.eval()
        # A module training on cached features predicts from them, without running its backbone again.
        sample_logits = getattr(pl_module, "sample_logits", None)
        logits = sample_logits(samples) if sample_logits is not None else None
        if logits is None:
            transform = build_eval_transform(pl_module.preprocessing)
            images = torch.stack([transform(load_rgb(path)) for path, _ in samples])
            logits = pl_module(images.to(pl_module.device))
        if was_training:
            pl_module.train()
        return logits.argmax(dim=1).tolist()

    def _prediction_grid(self, paths: list[str], predicted: list[str], true: list[str]) -> np.ndarray:
        """The grid of these captions, drawn again only when they differ from the last grid's."""
        key = (tuple(paths), tuple(predicted), tuple(true))
        if self._last_grid is None or self._last_grid[0] != key:
            grid = render_prediction_grid([self._tile(path) for path in paths], predicted, true)
            self._last_grid = (key, grid)
        return self._last_grid[1]

    def _tile(self, path: str) -> Image.Image:
        """The image at ``path`` at grid-tile size, read once (the sample is the same every epoch)."""
        if path not in self._tiles:
            self._tiles[path] = load_rgb(path).convert("RGB").resize((TILE, TILE))
        return self._tiles[path]
