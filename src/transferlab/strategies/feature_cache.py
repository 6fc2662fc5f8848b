"""Backbone embeddings computed once and kept on disk, keyed on everything that could change them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import nn
from torch.utils.data import DataLoader, Dataset

from transferlab.data import build_eval_transform
from transferlab.data.dataset import ImageSampleDataset
from transferlab.preprocessing import Preprocessing
from transferlab.utils.atomic import torch_save_atomically
from transferlab.utils.safe_load import safe_torch_load

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


class FeatureDataset(Dataset):
    """Precomputed ``(features, class_index)`` pairs; keeps the image paths for callbacks that show images."""

    def __init__(
        self, features: torch.Tensor, samples: Sequence[tuple[str, int]], class_names: list[str]
    ) -> None:
        self.features = features
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.features[index], self.targets[index]


def _file_identity(path: str) -> list[Any]:
    stat = os.stat(path)
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def feature_cache_key(
    backbone_cfg: Mapping[str, Any], preprocessing: Preprocessing, samples: Sequence[tuple[str, int]]
) -> str:
    """Hash of what determines the embeddings: backbone and its weights, preprocessing, and the files.

    Each file counts by path, size and modification time, so an edited, added or removed image gives a
    new key. A weights file counts the same way.
    """
    weights = backbone_cfg.get("weights")
    weights_id = _file_identity(str(weights)) if weights and os.path.isfile(str(weights)) else weights
    payload = {
        "format": CACHE_FORMAT,
        "torch": torch.__version__,
        "backbone": {**dict(backbone_cfg), "weights": weights_id},
        "preprocessing": preprocessing.to_dict(),
        "samples": [[*_file_identity(path), label] for path, label in samples],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@torch.inference_mode()
def compute_features(
    backbone: nn.Module, dataset: Dataset, batch_size: int, num_workers: int, device: torch.device, label: str
) -> torch.Tensor:
    """Embeddings of every item of ``dataset`` in order, with the backbone in eval mode.

    The train/eval mode of every submodule is restored afterwards (a plain ``backbone.train()`` would
    switch frozen BatchNorm layers back to training mode).
    """
    modes = {module: module.training for module in backbone.modules()}
    backbone.eval()
    original_device = next(backbone.parameters()).device
    backbone.to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    chunks = []
    with Progress(transient=True) as progress:
        task = progress.add_task(f"Computing features ({label})", total=len(dataset))
        for images, _ in loader:
            chunks.append(backbone(images.to(device)).float().cpu())
            progress.advance(task, len(images))
    backbone.to(original_device)
    for module, training in modes.items():
        module.training = training
    return torch.cat(chunks)


def cached_features(
    cache_dir: str | Path,
    backbone: nn.Module,
    backbone_cfg: Mapping[str, Any],
    preprocessing: Preprocessing,
    dataset: ImageSampleDataset,
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    label: str,
) -> FeatureDataset:
    """Features of ``dataset``'s images (un-augmented), read from the cache or computed and stored."""
    key = feature_cache_key(backbone_cfg, preprocessing, dataset.samples)
    path = Path(cache_dir) / f"{key[:32]}.pt"
    if path.is_file():
        stored = safe_torch_load(path, what="feature cache file")
        if stored.get("key") == key:
            log.info("Feature cache hit for %s: %s", label, path)
            return FeatureDataset(stored["features"], dataset.samples, dataset.class_names)
    plain = ImageSampleDataset(dataset.samples, dataset.class_names, build_eval_transform(preprocessing))
    features = compute_features(backbone, plain, batch_size, num_workers, device, label)
    torch_save_atomically({"key": key, "features": features}, path)
    log.info("Stored %d %s features in %s", len(features), label, path)
    return FeatureDataset(features, dataset.samples, dataset.class_names)
