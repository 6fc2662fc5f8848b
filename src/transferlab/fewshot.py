"""``transferlab-fewshot support=DIR query=DIR_OR_FILE (ckpt_path=FILE | backbone=NAME) [output=FILE.csv]``.

Classifies images into classes given by a handful of examples each, with no training: the support
folder's class folders (any number of classes, any number of images each) define the classes; each
class's prototype is the mean embedding of its images, and every query image (found recursively) goes
to the nearest prototype. The embeddings come from a transferlab checkpoint (a ProtoNet's encoder, or a
classifier's backbone) or from a registry backbone with its pretrained weights.

Writes ``path,predicted_class,probability`` rows (softmax over the negative distances) and prints the
support summary. Unreadable images are skipped with one warning, as in the rest of the data layer.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from PIL import Image
from rich.console import Console
from rich.table import Table
from torch import nn

from transferlab.backbones import build_backbone
from transferlab.data import (
    UnreadableImageError,
    build_eval_transform,
    is_image_file,
    list_classes,
    list_samples,
    load_rgb,
    min_decode_size,
)
from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing, as_preprocessing
from transferlab.strategies.loading import load_module_from_checkpoint
from transferlab.strategies.protonet import DISTANCES, Distance, prototypes
from transferlab.utils.atomic import write_atomically
from transferlab.utils.cli import print_config_tree, run_task
from transferlab.utils.config import to_container
from transferlab.utils.paths import CONF_DIR
from transferlab.utils.quick_exit import exit_when_done

CSV_COLUMNS = ("path", "predicted_class", "probability")
log = logging.getLogger(__name__)


class Encoder:
    """What the few-shot CLI needs of a model: embeddings of images, their preprocessing, a distance."""

    def __init__(
        self,
        embed: Callable[[torch.Tensor], torch.Tensor],
        preprocessing: Preprocessing,
        distance: nn.Module,
        source: str,
    ) -> None:
        self.embed = embed
        self.preprocessing = preprocessing
        self.distance = distance
        self.source = source


def load_encoder(cfg: DictConfig) -> Encoder:
    """The encoder of ``cfg.ckpt_path`` or of ``cfg.backbone``, exactly one of which must be given.

    A ProtoNet checkpoint brings its own distance; a classifier checkpoint or a bare backbone uses
    ``cfg.distance`` (squared Euclidean when null). A cosine distance without a trained temperature
    scales cosines by ``cfg.temperature``.

    Raises:
        UserError: both or neither given; an unknown distance; a bad checkpoint or backbone.
    """
    ckpt_path, backbone = cfg.get("ckpt_path"), cfg.get("backbone")
    if bool(ckpt_path) == bool(backbone):
        raise UserError(
            "Give exactly one encoder: ckpt_path=FILE (a transferlab checkpoint, e.g. of model=protonet) "
            "or backbone=NAME (a registry backbone with its pretrained weights, e.g. "
            "backbone=efficientnet_lite0)" + (", not both." if ckpt_path else ".")
        )
    distance_kind = cfg.get("distance")
    if distance_kind is not None and distance_kind not in DISTANCES:
        raise UserError(
            f"distance={distance_kind!r} is not known; use one of {', '.join(DISTANCES)} or null."
        )
    if ckpt_path:
        module = load_module_from_checkpoint(ckpt_path)
        embed = getattr(module, "embed", None)
        if not callable(embed):
            raise UserError(f"{ckpt_path} holds a {type(module).__name__}, which has no embedding function.")
        own = getattr(module, "distance", None)
        if isinstance(own, Distance) and distance_kind in (None, own.kind):
            distance: nn.Module = own
        else:
            distance = Distance(distance_kind or "squared_euclidean", cfg.temperature)
        preprocessing = as_preprocessing(module.preprocessing)
        return Encoder(embed, preprocessing, distance.eval(), f"checkpoint {ckpt_path}")
    model = build_backbone(**to_container(backbone)).eval()
    distance = Distance(distance_kind or "squared_euclidean", cfg.temperature).eval()
    source = f"backbone {backbone.name} ({backbone.weights} weights)"
    return Encoder(model, model.preprocessing, distance, source)


def list_query_images(query: str | Path) -> list[Path]:
    """One image file, or every image file under a folder (recursively, sorted).

    Raises:
        UserError: the path is missing, not an image, or a folder without images.
    """
    path = Path(query).expanduser()
    if path.is_file():
        if not is_image_file(path):
            raise UserError(f"query={path} is not an image file (by its extension).")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        if not files:
            raise UserError(
                f"query={path} holds no image files. Point query at an image or a folder of images."
            )
        return files
    raise UserError(f"query={path} does not exist. Point query at an image file or a folder of images.")


def read_support(support: str | Path) -> tuple[list[str], list[tuple[str, int]]]:
    """The support classes (class folder names, sorted) and their image files.

    Raises:
        UserError: the folder is missing, has fewer than 2 class folders, or a class folder has no images.
    """
    root = Path(support).expanduser()
    if not root.is_dir():
        raise UserError(
            f"support={root} is not a folder. Point support at a folder with one subfolder of example "
            "images per class (support/<class>/*.jpg)."
        )
    classes = list_classes(root)
    if len(classes) < 2:
        raise UserError(
            f"support={root} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); few-shot "
            "classification needs at least 2. Add one folder of example images per class."
        )
    return classes, list_samples(root, classes)


def _load_images(
    paths: Sequence[str | Path], decode_size: int, unreadable: list[str]
) -> tuple[list[int], list[Image.Image]]:
    """Positions of the paths that decode, and their images; the others are appended to ``unreadable``."""
    kept, images = [], []
    for position, path in enumerate(paths):
        try:
            images.append(load_rgb(path, min_size=decode_size))
        except UnreadableImageError:
            unreadable.append(str(path))
            continue
        kept.append(position)
    return kept, images


@torch.inference_mode()
def _embed_batches(
    encoder: Encoder, paths: Sequence[str | Path], batch_size: int, unreadable: list[str]
) -> tuple[list[int], torch.Tensor]:
    """Positions of the readable paths and their embeddings, batch by batch."""
    transform = build_eval_transform(encoder.preprocessing)
    decode_size = min_decode_size(encoder.preprocessing)
    positions: list[int] = []
    chunks: list[torch.Tensor] = []
    for start in range(0, len(paths), batch_size):
        kept, images = _load_images(paths[start : start + batch_size], decode_size, unreadable)
        if images:
            chunks.append(encoder.embed(torch.stack([transform(image) for image in images])).float())
            positions += [start + k for k in kept]
    return positions, (torch.cat(chunks) if chunks else torch.zeros(0))


def _print_support(classes: Sequence[str], shots: Sequence[int], skipped: int, source: str) -> None:
    print(f"Support: {len(classes)} classes, {sum(shots)} images; embeddings from {source}")
    table = Table()
    table.add_column("class")
    table.add_column("images", justify="right")
    for name, count in zip(classes, shots, strict=True):
        table.add_row(name, str(count))
    Console().print(table)
    if skipped:
        print(f"{skipped} unreadable support image(s) skipped.")


@torch.inference_mode()
def fewshot(cfg: DictConfig) -> tuple[list[dict[str, Any]], Path]:
    """Classify every query image by the nearest support prototype; write and return the rows."""
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise UserError(f"batch_size must be a whole number >= 1, got {cfg.batch_size!r}.")
    classes, samples = read_support(cfg.support)
    queries = list_query_images(cfg.query)
    encoder = load_encoder(cfg)

    bad_support: list[str] = []
    paths = [path for path, _ in samples]
    positions, support_embeddings = _embed_batches(encoder, paths, cfg.batch_size, bad_support)
    labels = torch.tensor([samples[i][1] for i in positions], dtype=torch.long)
    shots = torch.bincount(labels, minlength=len(classes)).tolist()
    if bad_support:
        log.warning(
            "Skipped %d unreadable support image(s): %s", len(bad_support), ", ".join(bad_support[:5])
        )
    empty = [name for name, count in zip(classes, shots, strict=True) if count == 0]
    if empty:
        raise UserError(
            f"Support class(es) {', '.join(empty)} have no readable images (under {cfg.support}). Add "
            "readable example images, or remove those class folders."
        )
    _print_support(classes, shots, len(bad_support), encoder.source)
    centres = prototypes(support_embeddings, labels, len(classes))

    bad_queries: list[str] = []
    rows: list[dict[str, Any]] = []
    for start in range(0, len(queries), cfg.batch_size):
        chunk = queries[start : start + cfg.batch_size]
        kept, embeddings = _embed_batches(encoder, chunk, len(chunk), bad_queries)
        if not kept:
            continue
        probabilities, indices = encoder.distance(embeddings, centres).softmax(dim=1).max(dim=1)
        for position, prob, index in zip(kept, probabilities.tolist(), indices.tolist(), strict=True):
            row = {"path": str(chunk[position]), "predicted_class": classes[index], "probability": prob}
            rows.append(row)
    if bad_queries:
        log.warning(
            "Skipped %d unreadable query image(s) (no prediction written): %s",
            len(bad_queries),
            ", ".join(bad_queries[:5]),
        )
    if not rows:
        raise UserError(f"None of the {len(queries)} query images under query={cfg.query} could be read.")
    output = Path(cfg.output)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows({**r, "probability": f"{r['probability']:.6f}"} for r in rows)
    write_atomically(output, lambda handle: handle.write(buffer.getvalue().encode("utf-8")))
    print(f"Wrote {len(rows)} predictions to {output.resolve()}")
    return rows, output


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="fewshot")
def main(cfg: DictConfig) -> None:
    """Console script ``transferlab-fewshot``."""
    print_config_tree(cfg, order=("support", "query", "ckpt_path", "backbone", "distance", "output"))
    run_task(fewshot, cfg)


# the console script: main, then a quick exit (see exit_when_done)
cli = exit_when_done(main)

if __name__ == "__main__":
    cli()
