"""Backbone embeddings computed once and kept on disk, keyed on everything that could change them.

A cache entry is one ``.npy`` file of float32 rows (one per image, in dataset order) named by the SHA-256
of its key. It is written chunk by chunk while the backbone computes it (never whole in memory) into a
temporary file that is then renamed into place, and its rows are read back on demand, without pickle:
every process training on it shares the operating system's page cache instead of holding its own copy.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from rich.progress import Progress
from torch import nn
from torch.utils.data import DataLoader, Dataset

from transferlab.data.dataset import ImageSampleDataset
from transferlab.data.transforms import build_eval_transform, min_decode_size
from transferlab.preprocessing import Preprocessing
from transferlab.utils.atomic import write_atomically
from transferlab.utils.processes import loader_worker_context

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
FEATURE_DTYPE = np.dtype("<f4")
# The libraries whose code turns image files into features: decoding, transforms, the network.
FEATURE_LIBRARIES = ("torch", "torchvision", "timm", "pillow")
_HAS_PREADV = hasattr(os, "preadv")


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's state dict: the name, dtype, shape and bytes of every tensor.

    Two modules with this fingerprint compute the same function (given the same architecture), whatever
    the weights setting that produced them (pretrained, random with some seed, a file). About 60 ms for
    EfficientNet-Lite0's 14 MB on one slow CPU core.
    """
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def library_versions() -> dict[str, str | None]:
    """Installed versions of :data:`FEATURE_LIBRARIES` (None for one that is not installed)."""
    versions: dict[str, str | None] = {}
    for name in FEATURE_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def eval_images(samples: ImageSampleDataset, reference: ImageSampleDataset) -> ImageSampleDataset:
    """``samples``' images read the way ``reference`` reads its own (transform, pixel limit, decode size).

    The feature cache passes the data module's validation set as ``reference``: the cached training and
    validation features then come from exactly the pipeline that validation and test images go through.
    """
    return ImageSampleDataset(
        samples.samples,
        samples.class_names,
        reference.transform,
        max_pixels=reference.max_pixels,
        min_size=reference.min_size,
    )


def _file_identity(path: str) -> list[Any]:
    stat = os.stat(path)
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def feature_cache_key(
    backbone_cfg: Mapping[str, Any],
    weights: str,
    preprocessing: Preprocessing,
    images: ImageSampleDataset,
) -> str:
    """Hash of what determines the embeddings of ``images``.

    That is: the backbone's architecture settings and its actual weights (``weights``, from
    :func:`weights_fingerprint`; the ``weights`` setting itself is left out, so a random backbone of
    another seed gets another key), the versions of the libraries that compute features, the
    preprocessing and the way images are read (transform, pixel limit, reduced-size decode), and every
    file by path, size and modification time (an edited, added or removed image gives a new key).
    """
    payload = {
        "format": CACHE_FORMAT,
        "libraries": library_versions(),
        "backbone": {key: value for key, value in backbone_cfg.items() if key != "weights"},
        "weights": weights,
        "preprocessing": preprocessing.to_dict(),
        "transform": repr(images.transform),
        "max_pixels": images.max_pixels,
        "min_size": images.min_size,
        "samples": [[*_file_identity(path), label] for path, label in images.samples],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def write_features(path: str | os.PathLike[str], num_rows: int, chunks: Iterable[Any]) -> Path:
    """Write ``num_rows`` float32 rows, given as consecutive chunks, to an ``.npy`` file, atomically.

    Only one chunk is in memory at a time: the header is written from the first chunk's width and
    ``num_rows``, then each chunk is appended as it comes. A reader never sees a partial file.

    Args:
        path: the ``.npy`` file to write.
        num_rows: the total number of rows the chunks hold.
        chunks: 2-D tensors or arrays of equal width, in row order.

    Raises:
        ValueError: the chunks hold another number of rows, or widths differ (no file is written).
    """

    def write(handle: IO[bytes]) -> None:
        rows, width = 0, None
        for chunk in iterator:
            array = _as_rows(chunk)
            if width is None:
                width = array.shape[1]
                header = {"descr": FEATURE_DTYPE.str, "fortran_order": False, "shape": (num_rows, width)}
                np.lib.format.write_array_header_1_0(handle, header)
            elif array.shape[1] != width:
                raise ValueError(f"feature chunk of width {array.shape[1]} after chunks of width {width}")
            rows += len(array)
            if rows > num_rows:
                raise ValueError(f"the feature chunks hold more than the {num_rows} rows announced")
            handle.write(array.tobytes())
        if rows != num_rows or width is None:
            raise ValueError(f"the feature chunks hold {rows} rows, not the {num_rows} announced")

    iterator = iter(chunks)
    try:
        return write_atomically(path, write)
    finally:
        # A generator stopped early (an error) still restores what it changed (see compute_features).
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _as_rows(chunk: Any) -> np.ndarray:
    if isinstance(chunk, torch.Tensor):
        chunk = chunk.detach().to("cpu", torch.float32).numpy()
    array = np.ascontiguousarray(chunk, dtype=FEATURE_DTYPE)
    if array.ndim != 2:
        raise ValueError(f"feature chunks must be 2-D (rows, features), got shape {array.shape}")
    return array


class FeatureFile:
    """The rows of a feature file written by :func:`write_features`, read on demand by position.

    Indexing reads just the rows asked for (one read per run of consecutive rows) into a new array.
    The file's pages stay in the operating system's page cache, shared by every process that reads the
    file, and are never mapped into a process: training on a cache of any size costs each process the
    batch it reads, not the file. (A read-only memory map reads random rows faster, but every page it
    touches becomes resident in the process, on recent kernels in large folios: one random epoch over a
    0.5 GB cache leaves all of it resident in each training process, and handing the pages back with
    ``madvise`` makes an epoch slower than these reads; see benchmarks/RESULTS.md.) Nothing is unpickled.
    Usable as a context manager that closes the file.

    Args:
        path: the ``.npy`` file.

    Raises:
        ValueError: the file is not a complete 2-D float32 ``.npy`` array.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 (kept open; see close)
        try:
            version = np.lib.format.read_magic(self._file)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise ValueError(f"{self.path} is a .npy file of unsupported version {version}")
            shape, fortran_order, dtype = read_header(self._file)
            if dtype != FEATURE_DTYPE or len(shape) != 2 or fortran_order:
                raise ValueError(f"{self.path} holds a {dtype} array of shape {shape}, not float32 rows")
            self._offset = self._file.tell()
            self._row_bytes = shape[1] * FEATURE_DTYPE.itemsize
            size = os.fstat(self._file.fileno()).st_size
            if size != self._offset + shape[0] * self._row_bytes:
                raise ValueError(f"{self.path} has {size} bytes, not the {shape} rows its header announces")
        except BaseException:
            self._file.close()
            raise
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, indices: Any) -> np.ndarray:
        """Rows ``indices`` (an integer array or a slice), in that order, as a new float32 array."""
        if isinstance(indices, slice):
            positions = np.arange(*indices.indices(len(self)))
        else:
            positions = np.asarray(indices, dtype=np.int64).reshape(-1)
            if positions.size and not 0 <= positions.min() <= positions.max() < len(self):
                raise IndexError(f"row indices outside [0, {len(self)}) in {self.path}")
        rows = np.empty((len(positions), self.shape[1]), FEATURE_DTYPE)
        if not len(positions):
            return rows
        target, size = memoryview(rows).cast("B"), self._row_bytes
        # Runs of consecutive rows (a slice, the validation order) take one read each.
        runs = np.flatnonzero(np.diff(positions, prepend=-2) != 1)
        starts, ends = runs.tolist(), [*runs[1:].tolist(), len(positions)]
        offsets = (self._offset + positions[runs] * size).tolist()
        for start, end, offset in zip(starts, ends, offsets, strict=True):
            self._read_into(target[start * size : end * size], offset)
        return rows

    def _read_into(self, buffer: memoryview, offset: int) -> None:
        if _HAS_PREADV:
            count = os.preadv(self._file.fileno(), [buffer], offset)
        else:  # no positional reads on this system
            self._file.seek(offset)
            count = self._file.readinto(buffer) or 0
        if count != len(buffer):
            raise OSError(f"{self.path} was cut short while being read ({count} of {len(buffer)} bytes)")

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_features(path: str | os.PathLike[str]) -> FeatureFile:
    """Open a feature file for reading rows (see :class:`FeatureFile`)."""
    return FeatureFile(path)


class FeatureCache:
    """A folder of feature files, one per key (see :func:`feature_cache_key`)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        """Where the features of ``key`` are stored."""
        return self.folder / f"{key}.npy"

    def load(self, key: str, num_rows: int) -> FeatureFile | None:
        """The stored features of ``key`` (opened for reading rows), or None if there are none yet.

        A damaged file (wrong row count, unreadable) counts as missing, with a warning: it is rebuilt.
        """
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            features = read_features(path)
        except (OSError, ValueError, EOFError) as err:
            log.warning("Ignoring the damaged feature cache file %s (%s); computing it again.", path, err)
            return None
        if len(features) != num_rows:
            log.warning(
                "Ignoring the feature cache file %s: %d rows instead of %d; computing it again.",
                path,
                len(features),
                num_rows,
            )
            return None
        return features

    def store(self, key: str, num_rows: int, chunks: Iterable[Any]) -> Path:
        """Write the features of ``key`` from ``chunks`` (see :func:`write_features`)."""
        return write_features(self.path(key), num_rows, chunks)


@torch.inference_mode()
def compute_features(
    backbone: nn.Module,
    images: ImageSampleDataset,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    label: str,
) -> Iterator[torch.Tensor]:
    """Embeddings of every image of ``images`` in order, batch by batch, with the backbone in eval mode.

    A generator: each batch can be written out before the next is computed. The backbone's device and the
    train/eval mode of every submodule are restored when it ends (a plain ``backbone.train()`` would
    switch frozen BatchNorm layers back to training mode).
    """
    modes = {module: module.training for module in backbone.modules()}
    original_device = next(backbone.parameters()).device
    backbone.eval()
    backbone.to(device)
    loader = DataLoader(
        images,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        multiprocessing_context=loader_worker_context(num_workers),
    )
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task(f"Computing features ({label})", total=len(images))
            for batch, _ in loader:
                yield backbone(batch.to(device)).float().cpu()
                progress.advance(task, len(batch))
    finally:
        backbone.to(original_device)
        for module, training in modes.items():
            module.training = training


class FeatureDataset(Dataset):
    """A split's cached features held in memory: ``(features[i], class_index)`` pairs.

    For strategies that index a whole split at random (few-shot episodes); the frozen-feature classifier
    reads its features in batches from the file instead (:mod:`transferlab.strategies.feature_batches`).
    The image paths are kept for callbacks that show images.
    """

    def __init__(self, features: torch.Tensor, images: ImageSampleDataset) -> None:
        self.features = features
        self.samples = list(images.samples)
        self.class_names = list(images.class_names)
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.features[index], self.targets[index]


def cached_features(
    cache_dir: str | os.PathLike[str],
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
    """The backbone's features of ``dataset``'s un-augmented images, from the cache or computed and stored.

    Images are read with the eval transform of ``preprocessing`` and the dataset's own pixel limit; the
    key is :func:`feature_cache_key` (actual weights, libraries, preprocessing, files).
    """
    images = ImageSampleDataset(
        dataset.samples,
        dataset.class_names,
        build_eval_transform(preprocessing),
        max_pixels=dataset.max_pixels,
        min_size=min_decode_size(preprocessing),
    )
    cache = FeatureCache(cache_dir)
    key = feature_cache_key(backbone_cfg, weights_fingerprint(backbone), preprocessing, images)
    stored = cache.load(key, len(images))
    if stored is None:
        chunks = compute_features(
            backbone, images, batch_size=batch_size, num_workers=num_workers, device=device, label=label
        )
        cache.store(key, len(images), chunks)
        log.info("Stored %d %s features in %s", len(images), label, cache.path(key))
        stored = cache.load(key, len(images))
        assert stored is not None
    else:
        log.info("Feature cache hit for %s: %s", label, cache.path(key))
    with stored:
        features = torch.from_numpy(stored[:])
    return FeatureDataset(features, images)
