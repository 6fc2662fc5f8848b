"""``transferlab-predict ckpt_path=FILE input=DIR_OR_FILE [output=FILE.csv]``: classify images to a CSV."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from PIL import Image
from rich.progress import Progress

from transferlab.data import (
    UnreadableImageError,
    build_eval_transform,
    is_image_file,
    load_rgb,
    min_decode_size,
)
from transferlab.errors import UserError
from transferlab.strategies.loading import load_module_from_checkpoint, require_fixed_classes
from transferlab.utils.cli import print_config_tree, run_task
from transferlab.utils.paths import CONF_DIR
from transferlab.utils.quick_exit import exit_when_done

CSV_COLUMNS = ("path", "predicted_class", "probability")
log = logging.getLogger(__name__)


def list_input_images(input_path: str | Path) -> list[Path]:
    """One image file, or every image file under a folder (recursively, sorted)."""
    path = Path(input_path).expanduser()
    if path.is_file():
        if not is_image_file(path):
            raise UserError(f"input={path} is not an image file (by its extension).")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        if not files:
            raise UserError(
                f"input={path} holds no image files. Point input at an image or a folder of images."
            )
        return files
    raise UserError(f"input={path} does not exist. Point input at an image file or a folder of images.")


def _readable(
    paths: list[Path], decode_size: int, unreadable: list[Path]
) -> tuple[list[Path], list[Image.Image]]:
    """The paths that decode and their images; the others are appended to ``unreadable``."""
    kept, images = [], []
    for path in paths:
        try:
            images.append(load_rgb(path, min_size=decode_size))  # large JPEGs decode at reduced size
        except UnreadableImageError:
            unreadable.append(path)
            continue
        kept.append(path)
    return kept, images


@torch.inference_mode()
def predict(cfg: DictConfig) -> tuple[list[dict[str, Any]], Path]:
    """Classify every image of ``cfg.input`` with the checkpoint's model; write and return the rows."""
    model = load_module_from_checkpoint(cfg.ckpt_path)
    require_fixed_classes(
        model,
        cfg.ckpt_path,
        "Classify with it by giving a few images per class: "
        f"transferlab-fewshot ckpt_path={cfg.ckpt_path} support=DIR query={cfg.input}",
    )
    transform = build_eval_transform(model.preprocessing)
    decode_size = min_decode_size(model.preprocessing)
    files = list_input_images(cfg.input)
    rows: list[dict[str, Any]] = []
    unreadable: list[Path] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("Predicting", total=len(files))
        for start in range(0, len(files), cfg.batch_size):
            chunk, images = _readable(files[start : start + cfg.batch_size], decode_size, unreadable)
            if chunk:
                batch = torch.stack([transform(image) for image in images])
                probabilities, indices = model(batch).softmax(dim=1).max(dim=1)
                for path, prob, index in zip(chunk, probabilities.tolist(), indices.tolist(), strict=True):
                    rows.append(
                        {"path": str(path), "predicted_class": model.class_names[index], "probability": prob}
                    )
            progress.advance(task, min(cfg.batch_size, len(files) - start))
    if unreadable:
        shown = ", ".join(str(p) for p in unreadable[:5])
        log.warning("Skipped %d unreadable image(s) (no prediction written): %s", len(unreadable), shown)
    if not rows:
        raise UserError(f"None of the {len(files)} images under input={cfg.input} could be read.")
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({**r, "probability": f"{r['probability']:.6f}"} for r in rows)
    print(f"Wrote {len(rows)} predictions to {output.resolve()}")
    return rows, output


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    """Console script ``transferlab-predict``."""
    print_config_tree(cfg, order=("ckpt_path", "input", "output", "batch_size"))
    run_task(predict, cfg)


# the console script: main, then a quick exit (see exit_when_done)
cli = exit_when_done(main)

if __name__ == "__main__":
    cli()
