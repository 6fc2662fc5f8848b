"""TensorBoard gets a predictions grid of a fixed sample over the classes and a confusion matrix figure."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image, ImageDraw
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from transferlab.callbacks.confusion_matrix import ConfusionMatrixRenderer
from transferlab.callbacks.image_logging import (
    ValidationImageLogger,
    confusion_matrix_figure,
    render_prediction_grid,
    stratified_sample,
)
from transferlab.train import train

LONG_NAME = "Felis silvestris catus, the domestic cat (including every long-haired breed)"


def test_sample_is_spread_over_the_classes_and_fixed() -> None:
    # A validation set is ordered by class: its first images are all of the first class.
    targets = [0] * 40 + [1] * 9 + [2] * 2 + [3] * 30
    chosen = stratified_sample(targets, 16, seed=0)
    assert len(chosen) == len(set(chosen)) == 16
    per_class = np.bincount([targets[i] for i in chosen], minlength=4)
    # Classes take turns in class order; the small class gives all it has, the others share the rest.
    assert per_class.tolist() == [5, 5, 2, 4]
    assert stratified_sample(targets, 16, seed=0) == chosen
    assert stratified_sample(targets, 16, seed=1) != chosen
    assert stratified_sample(targets, 3, seed=0) == sorted(stratified_sample(targets, 3, seed=0))
    assert sorted(stratified_sample(targets, 500, seed=0)) == list(range(len(targets)))


def test_confusion_matrix_figure_keeps_every_full_class_name_inside_the_picture() -> None:
    names = ["cat", LONG_NAME, *(f"class {i}" for i in range(10))]
    figure = confusion_matrix_figure(torch.randint(0, 9, (12, 12)), names)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    (axes,) = [a for a in figure.axes if a.get_xlabel()]
    bounds = figure.bbox
    for ticks in (axes.get_xticklabels(), axes.get_yticklabels()):
        assert [t.get_text() for t in ticks] == names  # full names, none shortened
        boxes = [t.get_window_extent(renderer) for t in ticks]
        for box in boxes:  # inside the figure: nothing cut off
            assert bounds.x0 - 0.5 <= box.x0 and box.x1 <= bounds.x1 + 0.5
            assert bounds.y0 - 0.5 <= box.y0 and box.y1 <= bounds.y1 + 0.5
        for first, second in itertools.pairwise(boxes):  # neighbours do not overlap
            assert not first.overlaps(second), (first, second)
        assert not any(box.overlaps(axes.get_window_extent(renderer)) for box in boxes)
    # Everything drawn (titles, labels, colour bar) fits: the tight box is within the figure.
    tight = figure.get_tightbbox(renderer)
    size = figure.get_size_inches()
    assert (
        tight.x0 >= -0.01 and tight.y0 >= -0.01 and tight.x1 <= size[0] + 0.01 and tight.y1 <= size[1] + 0.01
    )

    # More classes or longer names make a larger figure; the saved picture is that size.
    small = confusion_matrix_figure(torch.eye(3), ["a", "b", "c"])
    assert (figure.get_size_inches() > small.get_size_inches()).all()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    width, height = Image.open(buffer).size
    assert np.allclose((width, height), figure.get_size_inches() * figure.dpi, atol=1)


def _full_draw(matrix: torch.Tensor, names: list[str]) -> np.ndarray:
    canvas = FigureCanvasAgg(confusion_matrix_figure(matrix, names))
    canvas.draw()
    return np.array(canvas.buffer_rgba())[..., :3]


def _ink(cell: np.ndarray) -> tuple[int, np.ndarray]:
    """Pixels of a cell that differ clearly from its fill colour (the printed count), and their centre."""
    fill = cell[2, 2].astype(int)
    ink = np.argwhere(np.abs(cell.astype(int) - fill).max(axis=2) > 64)
    return len(ink), ink.mean(axis=0) if len(ink) else np.zeros(2)


def test_matrix_renderer_draws_what_the_full_figure_draws() -> None:
    names = ["cat", "dog", LONG_NAME, *(f"class {i}" for i in range(5))]
    n = len(names)
    renderer = ConfusionMatrixRenderer(names)
    generator = torch.Generator().manual_seed(0)
    for matrix in (torch.randint(0, 30, (n, n), generator=generator), torch.eye(n, dtype=torch.long) * 1234):
        matrix[1] = 0  # a class without validation images
        picture, full = renderer.render(matrix), _full_draw(matrix, names)
        assert picture.shape == full.shape and picture.dtype == np.uint8
        rows, columns = renderer._cell_rows, renderer._cell_columns
        outside = np.ones(full.shape[:2], dtype=bool)
        outside[rows, columns] = False
        assert (picture[outside] == full[outside]).all()  # names, ticks, titles, colour bar: the same pixels
        for i in range(n):
            for j in range(n):
                box = np.ix_(
                    np.flatnonzero(renderer._row_cell == i), np.flatnonzero(renderer._column_cell == j)
                )
                ours, theirs = picture[rows, columns][box], full[rows, columns][box]
                assert (np.abs(ours[2:-2, 2:-2][:3, :3].astype(int) - theirs[2:-2, 2:-2][:3, :3]) <= 1).all()
                (ink, centre), (full_ink, full_centre) = _ink(ours), _ink(theirs)
                assert 0.6 * full_ink <= ink <= 1.6 * full_ink, (i, j)  # the count, at about the same size
                assert np.abs(centre - full_centre).max() <= 3.0, (i, j)  # ... and in the same place
    assert renderer.render(matrix) is renderer.render(matrix.clone())  # the same matrix is not redrawn


def test_matrix_renderer_prints_counts_as_pillow_draws_them() -> None:
    renderer = ConfusionMatrixRenderer(["cat", "dog", "bird"])
    renderer.render(np.ones((3, 3), dtype=np.int64))  # lays out the frame and loads the font
    renderer._glyphs.clear()
    background = np.random.default_rng(0).integers(0, 256, (60, 200, 3), dtype=np.uint8)
    for text, x, y, colour in [("0", 20.5, 40.0, "black"), ("7", 50.25, 41.75, "white"),
                               ("123", 100.0, 39.4, "black"), ("40512", 160.75, 45.5, "white")]:  # fmt: skip
        ours = background.copy()
        renderer._print(ours, text, x, y, colour)
        pillow = Image.fromarray(background.copy())
        left, _, right, _ = renderer._font.getbbox(text, anchor="ls")
        ImageDraw.Draw(pillow).text(
            (x - (left + right) / 2, y), text, fill=colour, font=renderer._font, anchor="ls"
        )
        assert (ours != background).any()
        assert (ours == np.asarray(pillow)).all(), text
    renderer._print(background.copy(), "7", 10.25, 30.75, "black")  # as "7" above, one pixel over
    assert len(renderer._glyphs) == 4  # rendered once for each text and pixel fractions


def test_prediction_grid_has_one_tile_per_image() -> None:
    images = [Image.new("RGB", (10, 10), (i * 20, 0, 0)) for i in range(10)]
    grid = render_prediction_grid(images, ["a"] * 10, ["a"] * 5 + ["b"] * 5, columns=4)
    assert grid.shape[:2] == (3 * (96 + 24), 4 * 96)


def test_training_logs_a_sample_of_every_class_and_the_matrix_each_epoch(train_config) -> None:
    # 6 images of a validation set ordered by class (4 per class): the first 6 would miss a class.
    cfg = train_config("trainer.max_epochs=2", "callbacks.validation_images.num_images=6")
    _, objects = train(cfg)
    (logger,) = [c for c in objects["trainer"].callbacks if isinstance(c, ValidationImageLogger)]
    val_set = objects["datamodule"].val_set
    shown = [val_set.samples[i][1] for i in logger.sample_indices]
    assert len(shown) == 6 and sorted(set(shown)) == list(range(len(val_set.class_names)))

    events = EventAccumulator(
        str(Path(cfg.paths.output_dir) / "tensorboard"), size_guidance={"images": 0}
    ).Reload()
    assert {"val/predictions", "val/confusion_matrix"} <= set(events.Tags()["images"])
    matrices = events.Images("val/confusion_matrix")
    assert [e.step for e in matrices] == [0, 1]
    picture = Image.open(io.BytesIO(matrices[-1].encoded_image_string))
    assert picture.size == (matrices[-1].width, matrices[-1].height) and picture.width >= 300
    grids = events.Images("val/predictions")
    assert [e.step for e in grids] == [0, 1] and grids[0].width == 6 * 96
