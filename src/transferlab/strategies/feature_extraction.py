"""Feature extraction: a frozen pretrained backbone (eval mode) and a new linear or MLP head.

With ``feature_cache=true`` the embeddings of the un-augmented training and validation images are computed
once by the backbone as it is when fitting starts, stored on disk (:mod:`.feature_cache`) and reused by
every later epoch and run; the epochs then only train the head, on batches read from the cache file in
the training process itself (:mod:`.feature_batches`). The test split still runs on images
through the backbone, which the cached features equal (same weights, same image pipeline).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from transferlab.data.dataset import ImageSampleDataset
from transferlab.data.sampling import EpochSampler
from transferlab.errors import UserError
from transferlab.strategies.classifier import ClassifierModule
from transferlab.strategies.feature_batches import EpochBatches, FeatureBatches, FeatureSplit
from transferlab.strategies.feature_cache import (
    FeatureCache,
    compute_features,
    eval_images,
    feature_cache_key,
    weights_fingerprint,
)

log = logging.getLogger(__name__)


class FeatureExtractionClassifier(ClassifierModule):
    """Frozen backbone + trainable head, optionally on cached embeddings.

    The defaults are those of ``conf/model/feature_extraction.yaml``.

    Args:
        backbone: backbone config (``name``, ``weights``, ``image_size``, family options).
        class_names: class names, in label order.
        optimizer: ``_partial_`` optimizer config; it receives the head's parameter groups.
        scheduler: ``_partial_`` scheduler config taking ``(optimizer, total_steps)``, or None.
        lr: head learning rate.
        weight_decay: decay of the head's weights.
        head_hidden_dim: hidden width of an MLP head (None or 0 = linear head).
        head_dropout: dropout in the head.
        label_smoothing: cross-entropy label smoothing (training only).
        class_counts: training images per class (given by the training entry point).
        class_weighted_loss: weight the loss by inverse class frequency.
        feature_cache: compute train/val embeddings once and keep them in ``cache_dir``.
        cache_dir: folder of the feature cache (the configs use ``${paths.cache_dir}/features``, which is
            this default unless ``TRANSFERLAB_ROOT`` moves it).
        cache_batch_size: batch size used to compute the embeddings.
    """

    # The cached train/val features while fitting with feature_cache=true (see setup).
    _feature_splits: dict[str, FeatureSplit] | None = None

    def __init__(
        self,
        backbone: Mapping[str, Any],
        class_names: Sequence[str],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        head_hidden_dim: int | None = None,
        head_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        class_counts: Sequence[int] | None = None,
        class_weighted_loss: bool = False,
        feature_cache: bool = True,
        cache_dir: str | None = "./.cache/features",
        cache_batch_size: int = 64,
    ) -> None:
        if feature_cache and not cache_dir:
            raise UserError("model.feature_cache=true needs model.cache_dir (a folder for the embeddings).")
        super().__init__(
            backbone, optimizer, scheduler, class_names=class_names, lr=lr, weight_decay=weight_decay,
            head_hidden_dim=head_hidden_dim, head_dropout=head_dropout, label_smoothing=label_smoothing,
            class_counts=class_counts, class_weighted_loss=class_weighted_loss, frozen_blocks_eval=True,
        )  # fmt: skip
        self.save_hyperparameters()
        self.set_trainable_blocks(0)

    def setup(self, stage: str) -> None:
        """Before fitting, make the data module serve cached embeddings for training and validation.

        Runs in each launched process before any data loader exists (Lightning builds the training loader
        early to count the scheduler's steps). The embeddings themselves are read or computed in
        :meth:`on_fit_start`, once a resumed run has loaded the weights it continues from.
        """
        if stage != "fit" or not self.hparams.feature_cache:
            return
        datamodule = self.trainer.datamodule
        _restore_loaders(datamodule)  # left there by a fit that failed
        sampler, train_batch, val_batch = _training_order(datamodule)
        shards = {"rank": self.trainer.global_rank, "world_size": self.trainer.world_size}
        train = FeatureSplit(datamodule.train_set.samples, datamodule.train_set.class_names)
        val = FeatureSplit(datamodule.val_set.samples, datamodule.val_set.class_names)
        # Built once now: a split too small for the processes fails before any feature is computed.
        EpochBatches(len(train), train_batch, **shards)
        EpochBatches(len(val), val_batch, **shards)
        self._feature_splits = {"train": train, "val": val}

        def train_batches() -> FeatureBatches:
            order = EpochBatches(
                len(train), train_batch, seed=sampler.seed, weights=sampler.weights, **shards
            )
            return FeatureBatches(train, order)

        def val_batches() -> FeatureBatches:
            return FeatureBatches(val, EpochBatches(len(val), val_batch, **shards))

        # For this fit the data module's training and validation loaders serve the features (undone in
        # teardown); its test loader keeps giving images to the backbone.
        datamodule.train_dataloader = train_batches
        datamodule.val_dataloader = val_batches

    def on_fit_start(self) -> None:
        """Read the embeddings from the cache, or compute and store them (rank zero; the others wait)."""
        super().on_fit_start()
        if self._feature_splits:
            self._attach_features(self._feature_splits)

    def teardown(self, stage: str) -> None:
        """After fitting, give the data module its own loaders back and release the features."""
        super().teardown(stage)
        if stage == "fit" and self._feature_splits:
            _restore_loaders(self.trainer.datamodule)
            for split in self._feature_splits.values():
                split.release()
            self._feature_splits = None

    @torch.no_grad()
    def sample_logits(self, samples: Sequence[tuple[str, int]]) -> torch.Tensor | None:
        """Logits of training or validation ``samples`` from their cached features (None if not cached).

        While fitting on cached features, this lets callbacks that show predictions on some images (such
        as :class:`~transferlab.callbacks.ValidationImageLogger`) skip the backbone, whose output for
        these images the cache already holds.
        """
        for split in (self._feature_splits or {}).values():
            indices = split.indices_of(samples) if split.features is not None else None
            if indices is not None:
                features, _ = split.batch(indices)
                return self(features.to(self.device))
        return None

    def _attach_features(self, splits: dict[str, FeatureSplit]) -> None:
        datamodule, strategy = self.trainer.datamodule, self.trainer.strategy
        cache = FeatureCache(self.hparams.cache_dir)
        weights = weights_fingerprint(self.backbone)  # the weights as they are now, restored or not
        preprocessing = getattr(datamodule, "preprocessing", None) or self.backbone.preprocessing
        # Every split is read the way the data module reads validation (and test) images.
        images = {
            name: eval_images(getattr(datamodule, f"{name}_set"), datamodule.val_set) for name in splits
        }
        keys = {
            name: feature_cache_key(self.hparams.backbone, weights, preprocessing, images[name])
            for name in splits
        }
        if strategy.is_global_zero:
            for name, key in keys.items():
                found = cache.load(key, len(images[name]))
                if found is not None:
                    found.close()
                    log.info("Feature cache hit for %s: %s", name, cache.path(key))
                    continue
                chunks = compute_features(
                    self.backbone,
                    images[name],
                    batch_size=self.hparams.cache_batch_size,
                    num_workers=getattr(datamodule, "num_workers", 0),
                    device=strategy.root_device,
                    label=name,
                )
                cache.store(key, len(images[name]), chunks)
                log.info("Stored %d %s features in %s", len(images[name]), name, cache.path(key))
        strategy.barrier("feature_cache")
        for name, key in keys.items():
            features = cache.load(key, len(images[name]))
            if features is None:
                raise RuntimeError(
                    f"Rank {self.trainer.global_rank} found no features at {cache.path(key)}: its backbone "
                    "weights or data differ from rank zero's."
                )
            splits[name].attach(features)


def _training_order(datamodule: Any) -> tuple[EpochSampler, int, int]:
    """The data module's training sampler and its training and validation batch sizes (per device)."""
    for split in ("train", "val"):
        if not isinstance(getattr(datamodule, f"{split}_set", None), ImageSampleDataset):
            raise UserError(
                "model.feature_cache=true needs a data module with train_set/val_set image datasets "
                f"(such as transferlab.data.ImageFolderDataModule); got {type(datamodule).__name__}."
            )
    if getattr(datamodule, "augmentation", "none") != "none":
        log.warning(
            "model.feature_cache=true trains on embeddings of un-augmented images: data.augmentation=%s "
            "is not applied. Set data.augmentation=none to silence this, or feature_cache=false.",
            datamodule.augmentation,
        )
    train_loader = datamodule.train_dataloader()  # built, not iterated: no worker starts
    sampler = getattr(train_loader, "sampler", None)
    if not isinstance(sampler, EpochSampler):
        raise UserError(
            "model.feature_cache=true follows the training order of the data module's EpochSampler "
            f"(transferlab.data.sampling), but {type(datamodule).__name__}.train_dataloader() uses "
            f"{type(sampler).__name__}. Set model.feature_cache=false with this data module."
        )
    return sampler, train_loader.batch_size, datamodule.val_dataloader().batch_size


def _restore_loaders(datamodule: Any) -> None:
    """Remove the feature loaders :meth:`FeatureExtractionClassifier.setup` put on ``datamodule``."""
    for hook in ("train_dataloader", "val_dataloader"):
        vars(datamodule).pop(hook, None)
