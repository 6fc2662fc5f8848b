"""Feature extraction: a frozen pretrained backbone (eval mode) and a new linear or MLP head.

With ``feature_cache=true`` the embeddings of the un-augmented training and validation images are computed
once, stored on disk and reused by every later epoch and run, so the epochs after the first only train the
head.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from transferlab.errors import UserError
from transferlab.strategies.classifier import ClassifierModule
from transferlab.strategies.feature_cache import FeatureDataset, cached_features

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
        """Before fitting, swap the data module's train/val images for cached embeddings.

        This runs before any data loader exists (Lightning builds the training loader early to count the
        scheduler's steps), inside each launched process.
        """
        if stage != "fit" or not self.hparams.feature_cache:
            return
        datamodule = self.trainer.datamodule
        for split in ("train", "val"):
            if not hasattr(datamodule, f"{split}_set"):
                raise UserError(
                    "model.feature_cache=true needs a data module with train_set/val_set datasets "
                    f"(such as transferlab.data.ImageFolderDataModule); got {type(datamodule).__name__}."
                )
        if getattr(datamodule, "augmentation", "none") != "none":
            log.warning(
                "model.feature_cache=true trains on embeddings of un-augmented images: data.augmentation=%s "
                "is not applied. Set data.augmentation=none to silence this, or feature_cache=false.",
                datamodule.augmentation,
            )
        strategy = self.trainer.strategy
        # Rank zero computes and stores; the other ranks then read the same files.
        for rank_pass in (True, False):
            if strategy.is_global_zero == rank_pass:
                for split in ("train", "val"):
                    dataset = getattr(datamodule, f"{split}_set")
                    if isinstance(dataset, FeatureDataset):
                        continue
                    setattr(datamodule, f"{split}_set", self._cached(dataset, datamodule, split))
            strategy.barrier("feature_cache")

    def _cached(self, dataset: Any, datamodule: Any, split: str) -> FeatureDataset:
        return cached_features(
            self.hparams.cache_dir,
            self.backbone,
            self.hparams.backbone,
            self.backbone.preprocessing,
            dataset,
            batch_size=self.hparams.cache_batch_size,
            num_workers=getattr(datamodule, "num_workers", 0),
            device=self.trainer.strategy.root_device,
            label=split,
        )
