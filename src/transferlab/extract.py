"""``transferlab-extract input=DIR [layer=NAME] [output=FILE.pt]``: backbone embeddings of a folder of images.

The output file holds plain types only (lists, strings, tensors), so ``torch.load(path, weights_only=True)``
reads it back: ``paths``, ``labels`` (class index, or -1 for unlabelled images), ``features`` (N x D),
``class_names``, ``layer``, ``pool`` and ``backbone`` (its config and preprocessing).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from rich.progress import Progress
from torch import Tensor, nn

from transferlab.backbones import Backbone, build_backbone
from transferlab.data import SPLITS, build_eval_transform, is_image_file, list_classes, list_samples, load_rgb
from transferlab.errors import UserError
from transferlab.predict import list_input_images
from transferlab.strategies.loading import load_module_from_checkpoint
from transferlab.utils.atomic import torch_save_atomically
from transferlab.utils.cli import print_config_tree, run_task
from transferlab.utils.config import to_container
from transferlab.utils.paths import CONF_DIR
from transferlab.utils.quick_exit import exit_when_done

log = logging.getLogger(__name__)

POOLS = ("avg", "flatten")
UNLABELLED = -1
# How many layer names an unknown-layer message suggests.
_SUGGESTED = 8


@dataclass(frozen=True)
class ImageList:
    """The images to embed.

    Attributes:
        paths: image files, sorted.
        labels: class index per file, or ``UNLABELLED`` (-1) for a flat folder.
        class_names: class folder names in label order (empty for a flat folder).
    """

    paths: list[str]
    labels: list[int]
    class_names: list[str]


def list_images(input_path: str | os.PathLike[str]) -> ImageList:
    """The images of an ImageFolder tree (``input/<class>/...``), a flat folder, or one image file.

    A folder counts as an ImageFolder tree when its images all sit in subfolders (none at the top level);
    then the first-level folder names are the classes. Otherwise every image below it is unlabelled.

    Raises:
        UserError: missing input, no images, or a train/val/test tree (point ``input`` at one split).
    """
    root = Path(input_path).expanduser()
    if root.is_dir():
        classes = list_classes(root)
        top_level_images = any(is_image_file(p) and p.is_file() for p in root.iterdir())
        if classes and not top_level_images:
            if set(classes) & set(SPLITS):
                raise UserError(
                    f"input={root} holds split folders ({', '.join(sorted(set(classes) & set(SPLITS)))}); "
                    f"point input at one of them, e.g. input={root / classes[0]}."
                )
            samples = list_samples(root, classes)
            return ImageList([p for p, _ in samples], [label for _, label in samples], classes)
    files = list_input_images(root)
    return ImageList([str(p) for p in files], [UNLABELLED] * len(files), [])


def resolve_layer(backbone: Backbone, name: str) -> nn.Module:
    """The submodule ``name`` of ``backbone`` (as in ``backbone.named_modules()``, e.g. ``body.layer3``).

    Raises:
        UserError: no such module; the message suggests close and top-level names.
    """
    modules = dict(backbone.named_modules())
    if name in modules and name:
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=_SUGGESTED, cutoff=0.5)
    shallow = [n for n in names if n.count(".") <= 2 and n not in close]
    suggestions = [*close, *shallow][:_SUGGESTED]
    raise UserError(
        f"layer={name!r} is not a module of backbone {backbone.name!r}. Valid names include: "
        f"{', '.join(suggestions)} ({len(names)} in all; they are the names of backbone.named_modules()). "
        "Use layer=null for the pooled features."
    )


def pool_features(output: Tensor, pool: str) -> Tensor:
    """``(B, D)`` features from a layer output.

    ``avg``: 4-D ``(B, C, H, W)`` maps are averaged over H and W, 3-D token sequences ``(B, N, C)`` over
    N; ``flatten``: everything after the batch dimension is flattened.
    """
    if pool == "flatten" or output.dim() == 2:
        return output.flatten(1)
    if output.dim() == 4:
        return output.mean(dim=(2, 3))
    if output.dim() == 3:
        return output.mean(dim=1)
    raise UserError(f"Cannot pool a layer output of shape {tuple(output.shape)}; use pool=flatten.")


class _Captured(Exception):
    """Raised by the hook to skip the layers after the one being read."""


@contextmanager
def capture_layer(module: nn.Module) -> Iterator[dict[str, Tensor]]:
    """While active, a forward through the model stores ``module``'s output and stops right after it."""
    store: dict[str, Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            raise UserError(
                f"The chosen layer returns a {type(output).__name__}, not a tensor; pick another layer."
            )
        store["output"] = output
        raise _Captured

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


class FeatureExtractor:
    """Features of image batches from a backbone's output or one of its layers.

    Args:
        backbone: the backbone, switched to eval mode.
        layer: a module name inside the backbone, or None for its pooled features.
        pool: how 3-D/4-D layer outputs become vectors, one of :data:`POOLS`.
    """

    def __init__(self, backbone: Backbone, layer: str | None = None, pool: str = "avg") -> None:
        if pool not in POOLS:
            raise UserError(f"pool={pool!r} is not one of {', '.join(POOLS)}.")
        self.backbone = backbone.eval()
        self.layer = layer
        self.pool = pool
        self._module = resolve_layer(backbone, layer) if layer else None

    @torch.inference_mode()
    def __call__(self, batch: Tensor) -> Tensor:
        """Features ``(B, D)`` of normalised images ``(B, 3, H, W)``."""
        if self._module is None:
            return self.backbone(batch)
        # The hook raises _Captured once the layer's output is stored: later layers are skipped.
        with capture_layer(self._module) as store, suppress(_Captured):
            self.backbone(batch)
        if "output" not in store:
            raise UserError(f"layer={self.layer!r} is not used in the backbone's forward pass.")
        return pool_features(store["output"], self.pool)


def load_backbone(cfg: DictConfig) -> tuple[Backbone, dict[str, Any]]:
    """The backbone to embed with and a plain description of it, from ``ckpt_path`` or ``backbone.*``."""
    if cfg.get("ckpt_path"):
        module = load_module_from_checkpoint(cfg.ckpt_path)
        description = {**module.hparams["backbone"], "ckpt_path": str(cfg.ckpt_path)}
        description.pop("weights", None)  # the checkpoint's weights are used, not the run's initial ones
        backbone = module.backbone
    else:
        description = to_container(cfg.backbone)
        backbone = build_backbone(**description)
    return backbone, {**description, "preprocessing": backbone.preprocessing.to_dict()}


def extract(cfg: DictConfig) -> tuple[dict[str, Any], Path]:
    """Embed every image of ``cfg.input``; write and return the result dict and its path."""
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise UserError(f"batch_size={cfg.batch_size!r} must be a positive integer.")
    images = list_images(cfg.input)
    backbone, description = load_backbone(cfg)
    extractor = FeatureExtractor(backbone, cfg.get("layer"), cfg.get("pool", "avg"))
    transform = build_eval_transform(backbone.preprocessing)
    chunks: list[Tensor] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("Extracting", total=len(images.paths))
        for start in range(0, len(images.paths), cfg.batch_size):
            files = images.paths[start : start + cfg.batch_size]
            batch = torch.stack([transform(load_rgb(path)) for path in files])
            chunks.append(extractor(batch).float())
            progress.advance(task, len(files))
    result = {
        "paths": images.paths,
        "labels": torch.tensor(images.labels, dtype=torch.long),
        "features": torch.cat(chunks),
        "class_names": images.class_names,
        "layer": extractor.layer,
        "pool": extractor.pool,
        "backbone": description,
    }
    output = Path(cfg.output)
    torch_save_atomically(result, output)
    print(
        f"Wrote {tuple(result['features'].shape)} features of {len(images.paths)} images to "
        f"{output.resolve()}"
    )
    return result, output


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="extract")
def main(cfg: DictConfig) -> None:
    """Console script ``transferlab-extract``."""
    print_config_tree(cfg, order=("input", "backbone", "ckpt_path", "layer", "pool", "output"))
    run_task(extract, cfg)


# the console script: main, then a quick exit (see exit_when_done)
cli = exit_when_done(main)

if __name__ == "__main__":
    cli()
