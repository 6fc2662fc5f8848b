"""The confusion-matrix picture: a matplotlib figure, and a renderer that redraws only its cells."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont
from PIL import Image, ImageDraw, ImageFont

DPI = 100
# rendered counts a ConfusionMatrixRenderer keeps (by text and pixel fractions): 10 MB at most
MAX_CACHED_GLYPHS = 10_000


def confusion_matrix_figure(
    matrix: torch.Tensor | np.ndarray, class_names: Sequence[str], title: str = "validation"
) -> Figure:
    """A matplotlib figure of the confusion matrix: rows true class, columns predicted class.

    Cells are shaded by their share of the true class (so classes of different sizes compare) and show
    the counts while the cells are large enough to hold them. Tick labels are the full class names
    (column labels rotated); the figure grows with the number of classes and the longest name, so no
    label overlaps another or is cut off. The figure has an Agg canvas of its own (no pyplot, no GUI).
    Its size depends on the class names only, never on the counts.
    """
    counts = _counts(matrix)
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

    shares = _shares(counts)
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
                axes.text(
                    j, i, str(counts[i, j]), ha="center", va="center", color=_count_colour(shares[i, j]),
                    fontsize=font_size,
                )  # fmt: skip
    return figure


class ConfusionMatrixRenderer:
    """Pictures (HWC uint8) of confusion matrices of one class list, as :func:`confusion_matrix_figure`
    draws them, for a small fraction of the cost of a full draw each time.

    Laying out and drawing the class names, ticks, titles and colour bar is most of the cost of a full
    draw, and none of them changes from one matrix to the next. So matplotlib lays out and draws that frame
    once; each picture then starts from a copy of it, fills the cells with their colour-map colours (numpy)
    and prints the counts with Pillow in matplotlib's own font at matplotlib's positions. Pillow renders
    each count text once per position; numpy blends it in, with the pixels Pillow's ``ImageDraw.text``
    gives (tested). The picture differs from a full draw only in the anti-aliasing of the counts (tested).
    A matrix equal to the previous one gives the previous picture.

    TensorBoard thus gets a matrix after every validation epoch also when an epoch on cached features
    costs a fraction of a second.
    """

    def __init__(self, class_names: Sequence[str], title: str = "validation") -> None:
        self.class_names = [str(name) for name in class_names]
        n = len(self.class_names)
        self.figure = confusion_matrix_figure(np.zeros((n, n), dtype=np.int64), self.class_names, title)
        self._frame: np.ndarray | None = None
        self._last: tuple[bytes, np.ndarray] | None = None

    def render(self, matrix: torch.Tensor | np.ndarray) -> np.ndarray:
        """The picture of ``matrix`` (rows true class, columns predicted class) as an HWC uint8 array."""
        counts = _counts(matrix)
        n = len(self.class_names)
        if counts.shape != (n, n):
            raise ValueError(f"a {n}-class confusion matrix was expected, got shape {tuple(counts.shape)}")
        if self._last is not None and self._last[0] == counts.tobytes():
            return self._last[1]
        if self._frame is None:
            self._draw_frame()
        shares = _shares(counts)
        picture = self._frame.copy()
        colours = self._image.to_rgba(shares, bytes=True)[..., :3]
        # Each cell's colour over its pixels (cells are runs of pixel rows and columns, in order) ...
        painted = np.repeat(np.repeat(colours, self._row_pixels, axis=0), self._column_pixels, axis=1)
        picture[self._cell_rows, self._cell_columns] = painted
        # ... under the frame's dark lines over the cells' edges, as drawn over white: multiplying puts them
        # over the cell colours (exact for black lines; the white elsewhere leaves a colour as it is).
        lines = painted[self._line_pixels].astype(np.uint16) * self._line_shades
        picture[self._cell_rows, self._cell_columns][self._line_pixels] = (lines + 127) // 255
        if self._count_positions:  # none when the cells are too small to hold their counts
            for (x, y), count, share in zip(self._count_positions, counts.flat, shares.flat, strict=True):
                self._print(picture, str(count), x, y, _count_colour(share))
        self._last = (counts.tobytes(), picture)
        return picture

    def _draw_frame(self) -> None:
        """Lay out and draw the figure once without cells and counts; keep the pixels and where cells go."""
        axes = next(a for a in self.figure.axes if a.get_xlabel())
        self._image = axes.images[0]
        texts = list(axes.texts)  # the counts, row by row; none when the cells are too small
        for artist in [self._image, *texts]:
            artist.set_visible(False)
        canvas = self.figure.canvas
        canvas.draw()
        self.figure.set_layout_engine("none")  # the positions found by the constrained layout stay
        self._frame = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])
        height = self._frame.shape[0]

        # Which cell each pixel inside the matrix shows (by the pixel's centre), as imshow maps them.
        n = len(self.class_names)
        to_data = axes.transData.inverted()
        xs = np.arange(self._frame.shape[1]) + 0.5
        ys = height - (np.arange(height) + 0.5)  # display y grows upwards, array rows downwards
        column_of = np.floor(to_data.transform(np.column_stack([xs, np.zeros_like(xs)]))[:, 0] + 0.5)
        row_of = np.floor(to_data.transform(np.column_stack([np.zeros_like(ys), ys]))[:, 1] + 0.5)
        inside_columns = np.flatnonzero((column_of >= 0) & (column_of < n))
        inside_rows = np.flatnonzero((row_of >= 0) & (row_of < n))
        self._cell_columns = slice(int(inside_columns[0]), int(inside_columns[-1]) + 1)
        self._cell_rows = slice(int(inside_rows[0]), int(inside_rows[-1]) + 1)
        self._column_cell = column_of[self._cell_columns].astype(np.int64)
        self._row_cell = row_of[self._cell_rows].astype(np.int64)
        if (np.diff(self._row_cell) < 0).any() or (np.diff(self._column_cell) < 0).any():
            raise RuntimeError("the confusion matrix's cells are not in row and column order")
        self._row_pixels = np.bincount(self._row_cell, minlength=n)
        self._column_pixels = np.bincount(self._column_cell, minlength=n)
        frame_over_cells = self._frame[self._cell_rows, self._cell_columns]
        self._line_pixels = np.nonzero((frame_over_cells != 255).any(axis=2))
        self._line_shades = frame_over_cells[self._line_pixels].astype(np.uint16)

        # Where matplotlib puts each count: centred across, on the baseline of a box as high as "lp".
        self._count_positions: list[tuple[float, float]] = []
        self._font: ImageFont.FreeTypeFont | None = None
        self._glyphs: dict[tuple[str, float, float], tuple[np.ndarray, int, int]] = {}  # see _print
        self._boxes: dict[str, tuple[int, int, int, int]] = {}  # each text's inked box, from Pillow
        if texts:
            properties = texts[0].get_fontproperties()
            size = properties.get_size_in_points() * self.figure.dpi / 72
            self._font = ImageFont.truetype(findfont(properties), size)
            renderer = canvas.get_renderer()
            _, _, descent = renderer.get_text_width_height_descent("lp", properties, ismath=False)
            for text in texts:
                text.set_visible(True)  # an invisible text has no extent
                box = text.get_window_extent(renderer)
                self._count_positions.append(((box.x0 + box.x1) / 2, height - (box.y0 + descent)))

    def _print(self, picture: np.ndarray, text: str, x: float, y: float, colour: str) -> None:
        """Print ``text`` into ``picture`` as Pillow's ``ImageDraw.text`` does, its inked box centred across
        ``x``, on the baseline ``y``; each text is rendered once per position (counts repeat each epoch)."""
        inked = self._boxes.get(text)
        if inked is None:
            inked = self._boxes[text] = self._font.getbbox(text, anchor="ls")
        left, _, right, _ = inked
        anchor_x = x - (left + right) / 2
        # Pillow places a text at the whole pixel below its position and renders the fraction into the
        # glyphs; so the rendered coverage depends on the text and the fractions only.
        key = (text, anchor_x % 1, y % 1)
        if key not in self._glyphs:
            if len(self._glyphs) >= MAX_CACHED_GLYPHS:
                self._glyphs.clear()
                self._boxes.clear()
            self._glyphs[key] = self._coverage(text, inked, *key[1:])
        glyph, pad_x, pad_y = self._glyphs[key]
        coverage = glyph.astype(np.uint16)
        row, column = math.floor(y) - pad_y, math.floor(anchor_x) - pad_x
        box = picture[row : row + coverage.shape[0], column : column + coverage.shape[1]]
        ink = 255 if colour == "white" else 0
        box[...] = (ink * coverage + box * (255 - coverage) + 127) // 255

    def _coverage(
        self, text: str, box: tuple[int, int, int, int], fraction_x: float, fraction_y: float
    ) -> tuple[np.ndarray, int, int]:
        """How much of each pixel ``text`` (inked ``box``) covers (uint8 0-255, HW1) when drawn at these
        pixel fractions, and the whole-pixel offsets of the drawing position inside that array."""
        left, top, right, bottom = box
        pad_x, pad_y = max(0, -left) + 2, max(0, -top) + 2
        mask = Image.new("L", (pad_x + max(right, 0) + 3, pad_y + max(bottom, 0) + 3), 0)
        position = (pad_x + fraction_x, pad_y + fraction_y)
        ImageDraw.Draw(mask).text(position, text, fill=255, font=self._font, anchor="ls")
        return np.asarray(mask)[..., None], pad_x, pad_y


def _counts(matrix: torch.Tensor | np.ndarray) -> np.ndarray:
    return np.asarray(torch.as_tensor(matrix).cpu(), dtype=np.int64)


def _shares(counts: np.ndarray) -> np.ndarray:
    """Each count as a share of its row (its true class)."""
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def _count_colour(share: float) -> str:
    return "white" if share > 0.5 else "black"


def _longest_text_inches(texts: Sequence[str], font_size: float, canvas: FigureCanvasAgg) -> float:
    """Width in inches of the widest of ``texts`` at ``font_size`` (measured by the Agg renderer)."""
    renderer = canvas.get_renderer()
    font = FontProperties(size=font_size)
    widths = [renderer.get_text_width_height_descent(text, font, ismath=False)[0] for text in texts]
    return max(widths, default=0.0) / canvas.figure.dpi
