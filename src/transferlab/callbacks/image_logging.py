"""TensorBoard pictures of validation: a captioned grid of predictions and a confusion matrix."""

from __future__ import annotations

import random
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from PIL import Image, ImageDraw, ImageFont

from transferlab.data import build_eval_transform, load_rgb

CAPTION_HEIGHT = 24
TILE = 96
DPI = 100


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
        canvas.paste(image.convert("RGB").resize((TILE, TILE)), (x, y))
        colour = (0, 128, 0) if pred == truth else (200, 0, 0)
        draw.text((x + 2, y + TILE + 1), f"p: {pred}"[:16], fill=colour, font=font)
        draw.text((x + 2, y + TILE + 12), f"t: {truth}"[:16], fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def confusion_matrix_figure(
    matrix: torch.Tensor | np.ndarray, class_names: Sequence[str], title: str = "validation"
) -> Figure:
    """A matplotlib figure of the confusion matrix: rows true class, columns predicted class.

    Cells are shaded by their share of the true class (so classes of different sizes compare) and show
    the counts while the cells are large enough to hold them. Tick labels are the full class names
    (column labels rotated); the figure grows with the number of classes and the longest name, so no
    label overlaps another or is cut off. The figure has an Agg canvas of its own (no pyplot, no GUI).
    """
    counts = np.asarray(torch.as_tensor(matrix).cpu(), dtype=np.int64)
    names = [str(name) for name in class_names]
    n = len(names)
    font_size = 9.0 if n <= 20 else 7.0 if n <= 60 else 5.0
    # Each row is at least 1.6 lines high, so neighbouring labels never touch.
    cell = max(font_size / 72 * 1.6, min(0.45, 9.0 / max(n, 1)))
    figure = Figure(dpi=DPI, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    label = _longest_text_inches(names, font_size, canvas)
    # Room for the matrix, the labels, the axis titles, the title and the colour bar.
    matrix_side = n * cell
    figure.set_size_inches(max(4.0, matrix_side + label + 1.9), max(3.5, matrix_side + label + 1.2))

    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class")
    axes.set_xticks(range(n), labels=names, rotation=90, fontsize=font_size)
    axes.set_yticks(range(n), labels=names, fontsize=font_size)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"Confusion matrix ({title})")
    if cell >= 0.3:
        for i in range(n):
            for j in range(n):
                colour = "white" if shares[i, j] > 0.5 else "black"
                axes.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=font_size)
    return figure


def _longest_text_inches(texts: Sequence[str], font_size: float, canvas: FigureCanvasAgg) -> float:
    """Width in inches of the widest of ``texts`` at ``font_size`` (measured by the Agg renderer)."""
    renderer = canvas.get_renderer()
    font = FontProperties(size=font_size)
    widths = [renderer.get_text_width_height_descent(text, font, ismath=False)[0] for text in texts]
    return max(widths, default=0.0) / canvas.figure.dpi


class ValidationImageLogger(L.Callback):
    """After each validation epoch, add a predictions grid and a confusion matrix to TensorBoard.

    The grid shows a fixed sample of ``num_images`` validation images spread over the classes
    (:func:`stratified_sample`, chosen once with ``seed``), each with its predicted and true class, so
    epochs compare on the same images. It reads the images from the data module's ``val_set.samples``
    (paths), so it also works when training runs on cached features; a module with a
    ``sample_logits(samples)`` method that returns logits (feature extraction on cached features does)
    predicts them without running the backbone on the images. The confusion matrix is a matplotlib
    figure (:func:`confusion_matrix_figure`).

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
        confusion = getattr(pl_module, "last_val_confusion", None)
        if confusion is not None:
            figure = confusion_matrix_figure(confusion, pl_module.class_names)
            logger.experiment.add_figure("val/confusion_matrix", figure, step, close=False)
        samples = getattr(getattr(trainer.datamodule, "val_set", None), "samples", None)
        if samples and self.num_images > 0:
            chosen = [samples[i] for i in self._sample(samples)]
            grid = self._prediction_grid(pl_module, chosen)
            logger.experiment.add_image("val/predictions", grid, step, dataformats="HWC")

    def _sample(self, samples: Sequence[tuple[str, int]]) -> list[int]:
        """The indices shown, chosen at the first call (again only if the validation set changes)."""
        if self.sample_indices is None or self._sampled_from is not samples:
            targets = [label for _, label in samples]
            self.sample_indices = stratified_sample(targets, self.num_images, self.seed)
            self._sampled_from = samples
        return self.sample_indices

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
