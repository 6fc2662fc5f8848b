"""Font-rendered characters as a few-shot dataset (Omniglot-like), from the fonts matplotlib ships.

Each class is one character (Latin letters, digits, Greek letters, symbols); each font that has a glyph
for it is one "drawing" of that character, rendered once with a small seeded random affine jitter
(rotation, scale, shear, shift). Glyphs keep their size relative to the font's em box, so ``c`` and ``C``
stay different classes. The tree is written flat, ``root/<class>/<font>.png``, to be split by class
(:mod:`transferlab.data.episodic`). Nothing is downloaded: matplotlib is a dependency of the project.

Fonts used: the 12 DejaVu Sans / Sans Mono / Serif faces and the 4 STIXGeneral faces for every class,
plus 6 Computer Modern faces (cmr10, cmb10, cmss10, cmti10, cmtt10, cmmi10) for letters and digits,
where their character maps are plain ASCII. The other fonts matplotlib ships are left out: the DejaVu
Display faces hold a handful of glyphs, the STIX size and non-Unicode faces hold delimiters and private
code points, cmsy10 and cmex10 map ASCII codes to math symbols, and LastResort draws placeholder boxes.
Characters that look the same as another class (Greek capital A, B, E, ..., omicron, n-ary sum) are not
classes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import string
import unicodedata
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from transferlab.data.demo import PARAMETER_FILE, folder_has_data, matches_demo_parameters
from transferlab.errors import UserError

GLYPHS_DEMO = "glyphs"
"""The ``data.demo`` name of this dataset."""

UNICODE_FONTS: tuple[str, ...] = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)  # fmt: skip
"""Fonts with Unicode character maps: every class is drawn in each of them that has its glyph."""

ASCII_FONTS: tuple[str, ...] = (
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
    "cmmi10.ttf",
)
"""Computer Modern faces, used for ASCII letters and digits only (elsewhere their maps are not Unicode)."""

ALPHANUMERIC = string.ascii_uppercase + string.ascii_lowercase + string.digits
CHARACTERS: str = (
    ALPHANUMERIC
    + "ΓΔΘΛΞΠΣΦΨΩ"  # Greek capitals that do not look like Latin ones
    + "αβγδεζηθικλμνξπρστυφχψω"  # Greek small letters but omicron (= o)
    + "#$%&@?!§¶±\u00d7÷∞≈≠≤≥√∫∂∇€£¥+=<>*"  # \u00d7: multiplication sign
)
"""Candidate characters; those drawn by fewer than ``min_drawings`` fonts are left out."""

DEFAULT_IMAGE_SIZE = 48
DEFAULT_MIN_DRAWINGS = 16
_FORMAT = 1  # bump when the rendering changes, so that old folders are not silently reused


def font_dir() -> Path:
    """matplotlib's folder of TrueType fonts.

    Raises:
        UserError: matplotlib or its fonts are missing.
    """
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise UserError("The glyphs demo renders matplotlib's fonts: `pip install matplotlib`.") from None
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    missing = [name for name in (*UNICODE_FONTS, *ASCII_FONTS) if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"matplotlib's font folder {folder} lacks {', '.join(missing)}; reinstall matplotlib (>= 3.8)."
        )
    return folder


def class_name(character: str) -> str:
    """A folder name for ``character`` from its Unicode name, e.g. ``latin_small_letter_a``.

    Distinct for ``a`` and ``A`` also on file systems that ignore letter case.
    """
    return unicodedata.name(character).lower().replace(" ", "_").replace("-", "_")


def glyph_classes(min_drawings: int = DEFAULT_MIN_DRAWINGS) -> dict[str, list[str]]:
    """The characters kept and the fonts that draw each: ``{character: [font file, ...]}``.

    Args:
        min_drawings: fewest fonts a character needs to be kept.
    """
    from matplotlib.ft2font import FT2Font

    folder = font_dir()
    maps = {name: set(FT2Font(str(folder / name)).get_charmap()) for name in (*UNICODE_FONTS, *ASCII_FONTS)}
    kept: dict[str, list[str]] = {}
    for character in CHARACTERS:
        fonts = [name for name in UNICODE_FONTS if ord(character) in maps[name]]
        if character in ALPHANUMERIC:
            fonts += [name for name in ASCII_FONTS if ord(character) in maps[name]]
        if len(fonts) >= min_drawings:
            kept[character] = fonts
    return kept


def render_glyph(
    character: str, font_path: str | os.PathLike[str], size: int, rng: np.random.Generator
) -> Image.Image:
    """One grayscale ``size`` x ``size`` drawing: black glyph on white, with a random affine jitter.

    The glyph sits on a fixed baseline at a fixed font size, so its size and height relative to other
    characters stay (``x`` is smaller than ``X``). The jitter: rotation within 8 degrees, scale 0.9-1.1,
    horizontal shear within 0.12, shift within size / 16.

    Raises:
        UserError: the font draws nothing for the character (an empty glyph).
    """
    scale = 4  # drawn large, then reduced: smooth edges after the affine resampling
    big = size * scale
    canvas = Image.new("L", (big, big), 255)
    font = ImageFont.truetype(str(font_path), int(big * 0.6))
    ImageDraw.Draw(canvas).text((big / 2, big * 0.74), character, font=font, anchor="ms", fill=0)
    if np.asarray(canvas).min() > 128:
        raise UserError(f"Font {font_path} draws nothing for {character!r} ({class_name(character)}).")
    angle = math.radians(rng.uniform(-8.0, 8.0))
    zoom = rng.uniform(0.9, 1.1)
    shear = rng.uniform(-0.12, 0.12)
    shift = rng.uniform(-big / 16, big / 16, size=2)
    # Forward map about the centre: rotate(angle) @ shear @ zoom; PIL wants output -> input (inverse).
    cos, sin = math.cos(angle), math.sin(angle)
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) * zoom
    inverse = np.linalg.inv(forward)
    centre = np.array([big / 2, big / 2])
    offset = centre - inverse @ (centre + shift)
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    moved = canvas.transform(
        (big, big), Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC, fillcolor=255
    )
    return moved.resize((size, size), Image.Resampling.LANCZOS)


def write_glyphs(
    root: str | os.PathLike[str],
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    min_drawings: int = DEFAULT_MIN_DRAWINGS,
    seed: int = 0,
) -> Path:
    """Write the glyph dataset as ``root/<class>/<font>.png`` (one PNG per font that draws the class).

    Written into a temporary sibling folder and renamed into place, so an interrupted run leaves no
    partial tree and concurrent callers (DDP ranks) do not collide; ``root/.transferlab-demo.json``
    records the parameters. Calling it again with the same parameters does nothing.

    Args:
        root: the folder to create.
        image_size: side of the square images in pixels.
        min_drawings: fewest fonts a character needs to become a class.
        seed: seed of the jitter.

    Returns:
        ``root``, absolute.

    Raises:
        UserError: ``root`` holds other files, or glyphs written with other parameters; bad arguments.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise UserError(f"The glyph image size must be a whole number >= 16, got {image_size!r}.")
    root = Path(root).expanduser().absolute()
    parameters = {
        "dataset": GLYPHS_DEMO, "format": _FORMAT, "image_size": image_size,
        "min_drawings": int(min_drawings), "seed": int(seed),
    }  # fmt: skip
    if matches_demo_parameters(root, parameters):
        return root
    if folder_has_data(root):
        raise UserError(
            f"{root} already has files but no {PARAMETER_FILE}, so it is not a transferlab demo folder; "
            "not writing the glyphs into it. Delete the folder or pick another data.root."
        )
    classes = glyph_classes(min_drawings)
    folder = font_dir()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        for index, (character, fonts) in enumerate(classes.items()):
            target = tmp / class_name(character)
            target.mkdir(parents=True)
            for font_index, font in enumerate(fonts):
                rng = np.random.default_rng([seed, index, font_index])
                image = render_glyph(character, folder / font, image_size, rng)
                image.save(target / f"{Path(font).stem}.png")
        (tmp / PARAMETER_FILE).write_text(json.dumps(parameters, indent=1) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, root)  # atomic; replaces root only if it is an empty folder
        except OSError as err:
            if not matches_demo_parameters(
                root, parameters
            ):  # else another process finished the same tree first
                raise UserError(f"Cannot move the glyphs into {root}: {err}. Delete {root}.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def prepare_glyphs(root: str | os.PathLike[str]) -> bool:
    """Write the glyphs into ``root`` with the default parameters unless it already holds other data.

    Returns:
        True if ``root`` now holds the glyphs, False if it holds other data and was left alone.
    """
    root = Path(root).expanduser()
    if folder_has_data(root) and not (root / PARAMETER_FILE).is_file():
        return False
    write_glyphs(root)
    return True
