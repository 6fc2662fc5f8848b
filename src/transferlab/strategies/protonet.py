"""Prototypical networks (Snell et al., 2017): classify queries by the nearest class mean of the support.

The encoder is a registry backbone, frozen or with its last block groups trained, optionally followed by
an MLP projection. Each class's prototype is the mean embedding of its support images; a query's logits
are the negative squared Euclidean distances to the prototypes (as in the paper) or the scaled cosine
similarities, with a learned scale (temperature). Training minimises the cross-entropy of the queries of
each episode.

With a frozen backbone and ``feature_cache=true`` the episodes run on backbone features computed once
per split and kept on disk (:mod:`transferlab.strategies.feature_cache`): after that first pass no image
is decoded again.

Test metrics, for each test setting ``S`` (e.g. ``5way_1shot``) of the data module: ``test/S/acc`` and
``test/S/acc_ci95`` (mean accuracy over the episodes and the half-width of its 95% confidence interval),
and ``test/S/baseline_acc`` / ``test/S/baseline_acc_ci95``, the same episodes classified by the
pretrained backbone's features with the same distance and no episodic training. ``test/acc``,
``test/acc_ci95``, ``test/baseline_acc`` and ``test/baseline_acc_ci95`` repeat the first setting;
``test/S/episodes`` is the number of episodes the means are over (each counted once under DDP).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric

from transferlab.data.episodic import Episode
from transferlab.errors import UserError
from transferlab.strategies.base import TransferModule
from transferlab.strategies.feature_cache import cached_features

log = logging.getLogger(__name__)

DISTANCES = ("squared_euclidean", "cosine")
"""Values of ``model.distance``."""


# ---------------------------------------------------------------------------------------------- maths


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The mean embedding of each class: ``(num_classes, D)`` from ``(N, D)`` and labels in ``[0, C)``.

    Classes may have different numbers of examples.

    Raises:
        ValueError: a class has no example.
    """
    counts = torch.bincount(labels, minlength=num_classes)
    if len(counts) != num_classes or bool((counts == 0).any()):
        raise ValueError(
            f"Every class needs at least one support example; counts per class: {counts.tolist()}."
        )
    sums = torch.zeros(num_classes, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    sums.index_add_(0, labels, embeddings)
    return sums / counts.unsqueeze(1).to(embeddings.dtype)


def squared_euclidean_logits(queries: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``-||q - c||^2`` for every query and centre: ``(Q, C)``."""
    # Differences rather than the |q|^2 - 2qc + |c|^2 expansion: exact, and episodes are small.
    return -(queries.unsqueeze(1) - centres.unsqueeze(0)).pow(2).sum(dim=-1)


def cosine_logits(queries: torch.Tensor, centres: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """``scale * cos(q, c)`` for every query and centre: ``(Q, C)``."""
    return scale * F.normalize(queries, dim=-1) @ F.normalize(centres, dim=-1).T


def mean_and_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval, ``1.96 * std / sqrt(n)`` (NaN for one value)."""
    values = values.double()
    n = values.numel()
    if n == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan
    return mean, float(1.96 * values.std(unbiased=True) / math.sqrt(n))


class Distance(nn.Module):
    """Logits of queries against prototypes: negative squared Euclidean distance, or scaled cosine.

    Args:
        kind: ``"squared_euclidean"`` or ``"cosine"``.
        temperature: initial scale of cosine similarities (learned; its log is the parameter).

    Raises:
        UserError: unknown kind, or a temperature that is not positive.
    """

    def __init__(self, kind: str = "squared_euclidean", temperature: float = 10.0) -> None:
        super().__init__()
        if kind not in DISTANCES:
            raise UserError(f"model.distance={kind!r} is not known; use one of {', '.join(DISTANCES)}.")
        self.kind = kind
        if kind == "cosine":
            if not temperature > 0:
                raise UserError(f"model.temperature={temperature} must be > 0 (the scale of cosine logits).")
            self.log_scale = nn.Parameter(torch.tensor(math.log(temperature)))

    def forward(self, queries: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        if self.kind == "cosine":
            return cosine_logits(queries, centres, self.log_scale.exp())
        return squared_euclidean_logits(queries, centres)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def build_projection(in_features: int, dim: int | None, dropout: float = 0.0) -> nn.Module | None:
    """The MLP projection of the embeddings, ``in -> dim -> dim`` with ReLUs; None when ``dim`` is 0/None."""
    if not dim:
        return None
    if dim < 0:
        raise UserError(f"model.projection_dim={dim} must be a width > 0, or 0/null (no projection).")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"model.projection_dropout={dropout} must be in [0, 1).")
    return nn.Sequential(
        nn.Linear(in_features, dim),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(dim, dim),
        nn.ReLU(),
    )


# ---------------------------------------------------------------------------------------------- module


class ProtoNetModule(TransferModule):
    """A prototypical network trained and tested on episodes (:class:`~transferlab.data.episodic.Episode`).

    Args:
        backbone: backbone config (``name``, ``weights``, ``image_size``, family options).
        optimizer: ``_partial_`` optimizer config; it receives the parameter groups.
        scheduler: ``_partial_`` scheduler config taking ``(optimizer, total_steps)``, or None.
        class_names: None (a few-shot model has no fixed classes); accepted for the training entry point.
        class_counts: ignored, as ``class_names``.
        trainable_blocks: 0 = frozen backbone, N = its last N block groups trained by episodes, ``"all"``.
        projection_dim: width of the MLP projection after the backbone (0 or None: none).
        projection_dropout: dropout inside the projection.
        distance: ``"squared_euclidean"`` or ``"cosine"``.
        temperature: initial scale of cosine logits (learned).
        lr: learning rate of the projection and temperature.
        backbone_lr_factor: backbone rate relative to ``lr``.
        layer_decay: rate multiplier per block going down from the top trainable block.
        weight_decay: decay of weights (norms, biases and the temperature get none).
        frozen_blocks_eval: frozen block groups run in eval mode, so BatchNorm statistics do not move.
        freeze_bn_stats: every BatchNorm layer of the backbone keeps its statistics, trainable blocks too.
        feature_cache: with a frozen backbone, run the episodes on backbone features kept in ``cache_dir``.
        cache_dir: folder of the feature cache (the config's ``${paths.cache_dir}/features``).
        cache_batch_size: batch size used to compute the cached features.
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        class_counts: Sequence[int] | None = None,
        trainable_blocks: int | str = 0,
        projection_dim: int | None = 512,
        projection_dropout: float = 0.0,
        distance: str = "squared_euclidean",
        temperature: float = 10.0,
        lr: float = 1e-3,
        backbone_lr_factor: float = 0.1,
        layer_decay: float = 1.0,
        weight_decay: float = 1e-4,
        frozen_blocks_eval: bool = True,
        freeze_bn_stats: bool = False,
        feature_cache: bool = True,
        cache_dir: str | None = "./.cache/features",
        cache_batch_size: int = 64,
    ) -> None:
        if feature_cache and not cache_dir:
            raise UserError("model.feature_cache=true needs model.cache_dir (a folder for the features).")
        # No fixed class set: every episode brings its own classes (class_names is accepted for the
        # training entry point, which passes the data module's, None for data=fewshot).
        super().__init__(
            backbone, optimizer, scheduler, lr=lr, backbone_lr_factor=backbone_lr_factor,
            layer_decay=layer_decay, weight_decay=weight_decay, frozen_blocks_eval=frozen_blocks_eval,
            freeze_bn_stats=freeze_bn_stats, class_names=None,
        )  # fmt: skip
        self.save_hyperparameters()
        self.projection = build_projection(self.backbone.feature_dim, projection_dim, projection_dropout)
        self.distance = Distance(distance, temperature)
        self.baseline_backbone: nn.Module | None = None
        self.set_trainable_blocks(trainable_blocks)
        self.backbone_frozen = self.num_trainable_blocks == 0
        # The baseline is the backbone before any episodic training. A frozen backbone stays that; a
        # trained one keeps a frozen copy (saved in checkpoints, so that eval runs report it too).
        if not self.backbone_frozen:
            self.baseline_backbone = copy.deepcopy(self.backbone).requires_grad_(False).eval()
        self.train_loss, self.train_acc = MeanMetric(), MeanMetric()  # means over the epoch's episodes
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # part of the checkpoint: a resumed run keeps its best
        self._episode_results: dict[str, list[torch.Tensor]] = {}
        self._test_names: dict[int, str] = {}

    # ----------------------------------------------------------------- embeddings and logits
    def train(self, mode: bool = True) -> ProtoNetModule:
        """Set the mode; frozen blocks and the baseline copy stay in eval mode."""
        super().train(mode)
        if self.baseline_backbone is not None:
            self.baseline_backbone.eval()
        return self

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of images; a 2-D input is taken as features already computed (cache)."""
        return x if x.ndim == 2 else self.backbone(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings that prototypes are averaged from: backbone features, then the projection."""
        features = self.backbone_features(x)
        return self.projection(features) if self.projection is not None else features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of images (or of cached features)."""
        return self.embed(x)

    def logits(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, num_classes: int
    ) -> torch.Tensor:
        """Query logits ``(Q, num_classes)`` against the prototypes of the support embeddings."""
        features = self.backbone_features(torch.cat([support, query]))  # one pass: BatchNorm sees it all
        return self._logits_of(features, len(support), support_labels, num_classes)

    def _logits_of(
        self, features: torch.Tensor, n_support: int, support_labels: torch.Tensor, num_classes: int
    ) -> torch.Tensor:
        embedded = self.projection(features) if self.projection is not None else features
        centres = prototypes(embedded[:n_support], support_labels, num_classes)
        return self.distance(embedded[n_support:], centres)

    def _baseline_logits(
        self,
        x: torch.Tensor,
        features: torch.Tensor,
        n_support: int,
        support_labels: torch.Tensor,
        num_classes: int,
    ) -> torch.Tensor:
        """The same episode on the features of the backbone before episodic training, no projection."""
        if self.baseline_backbone is not None and x.ndim != 2:
            features = self.baseline_backbone(x)
        # else: a frozen backbone (or cached features of it) is the pretrained one; its features are reused
        centres = prototypes(features[:n_support], support_labels, num_classes)
        if self.distance.kind == "cosine":
            return cosine_logits(features[n_support:], centres, 1.0)
        return squared_euclidean_logits(features[n_support:], centres)

    # ----------------------------------------------------------------- steps
    def _check(self, episode: Any) -> None:
        if not isinstance(episode, Episode):
            raise UserError(
                "model=protonet learns from episodes, but the data module gives plain batches: use "
                "data=fewshot (an image folder whose splits hold different classes)."
            )

    def _episode_step(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(episode)
        num_classes = len(episode.classes)
        logits = self.logits(episode.support, episode.support_labels, episode.query, num_classes)
        loss = F.cross_entropy(logits, episode.query_labels)
        accuracy = (logits.argmax(dim=1) == episode.query_labels).float().mean()
        return loss, accuracy

    def training_step(self, episode: Episode, batch_idx: int) -> torch.Tensor:
        loss, accuracy = self._episode_step(episode)
        # One episode per step: the epoch values are means over the episodes of every device, logged
        # once at the end of the epoch (on_train_epoch_end), not by a self.log call in every step.
        self.train_loss.update(loss.detach())
        self.train_acc.update(accuracy)
        self.log_step_loss(loss, batch_size=1)
        return loss

    def on_train_epoch_end(self) -> None:
        metrics = {"train/loss": self.train_loss, "train/acc": self.train_acc}
        self.log_epoch_metrics(metrics, prog_bar=tuple(metrics))

    def validation_step(self, episode: Episode, batch_idx: int) -> None:
        loss, accuracy = self._episode_step(episode)
        self._keep("val", episode.index, accuracy, loss)

    def test_step(self, episode: Episode, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._check(episode)
        num_classes, n_support = len(episode.classes), len(episode.support)
        x = torch.cat([episode.support, episode.query])
        features = self.backbone_features(x)
        logits = self._logits_of(features, n_support, episode.support_labels, num_classes)
        accuracy = (logits.argmax(dim=1) == episode.query_labels).float().mean()
        baseline = self._baseline_logits(x, features, n_support, episode.support_labels, num_classes)
        baseline_accuracy = (baseline.argmax(dim=1) == episode.query_labels).float().mean()
        name = f"{num_classes}way_{n_support // num_classes}shot"
        self._test_names[dataloader_idx] = name
        self._keep(f"test{dataloader_idx}", episode.index, accuracy, baseline_accuracy)

    def _keep(self, key: str, index: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> None:
        row = torch.stack([index.to(first.dtype), first.detach(), second.detach().to(first.dtype)])
        self._episode_results.setdefault(key, []).append(row)

    def _gathered(self, key: str) -> torch.Tensor:
        """This epoch's ``(episode, value, value)`` rows of every rank, each episode once."""
        rows = self._episode_results.pop(key, [])
        local = torch.stack(rows) if rows else torch.zeros(0, 3, device=self.device)
        gathered = self.all_gather(local)
        if gathered.ndim == 3:  # (world, n, 3) under DDP
            gathered = gathered.reshape(-1, 3)
        # The distributed sampler pads the ranks' shares with repeated episodes: count each once.
        unique, inverse = torch.unique(gathered[:, 0], return_inverse=True)
        keep = torch.zeros(len(unique), dtype=torch.long, device=gathered.device)
        keep.scatter_(0, inverse, torch.arange(len(inverse), device=gathered.device))
        return gathered[keep]

    def on_validation_epoch_start(self) -> None:
        self._episode_results.pop("val", None)

    def on_validation_epoch_end(self) -> None:
        rows = self._gathered("val")
        accuracy, ci95 = mean_and_ci95(rows[:, 1])
        loss, _ = mean_and_ci95(rows[:, 2])
        self._log_values({"val/acc": accuracy, "val/acc_ci95": ci95, "val/loss": loss}, prog_bar=True)
        if self.trainer.sanity_checking:  # the sanity check must not count towards the best accuracy
            return
        self.val_acc_best(torch.tensor(accuracy))
        self._log_values({"val/acc_best": float(self.val_acc_best.compute())}, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        for key in [k for k in self._episode_results if k.startswith("test")]:
            del self._episode_results[key]
        self._test_names.clear()

    def on_test_epoch_end(self) -> None:
        for dataloader_idx in sorted(self._test_names):
            rows = self._gathered(f"test{dataloader_idx}")
            accuracy, ci95 = mean_and_ci95(rows[:, 1])
            baseline, baseline_ci95 = mean_and_ci95(rows[:, 2])
            values = {
                "acc": accuracy,
                "acc_ci95": ci95,
                "baseline_acc": baseline,
                "baseline_acc_ci95": baseline_ci95,
                "episodes": float(len(rows)),
            }
            name = self._test_names[dataloader_idx]
            self._log_values({f"test/{name}/{key}": value for key, value in values.items()})
            if dataloader_idx == 0:
                self._log_values({f"test/{key}": value for key, value in values.items()})
            log.info(
                "Test %s over %d episodes: accuracy %.4f +- %.4f (backbone without episodic training: "
                "%.4f +- %.4f)", name, len(rows), accuracy, ci95, baseline, baseline_ci95,
            )  # fmt: skip

    def _log_values(self, values: Mapping[str, float], prog_bar: bool = False) -> None:
        # Every rank holds the same gathered values; sync_dist only averages identical numbers.
        for name, value in values.items():
            self.log(name, value, prog_bar=prog_bar, sync_dist=True, add_dataloader_idx=False)

    # ----------------------------------------------------------------- feature cache
    def setup(self, stage: str) -> None:
        """With a frozen backbone and the cache on, swap the data module's images for cached features.

        Runs in each launched process before any data loader exists. Rank zero computes and stores the
        features; the other ranks then read the same files.
        """
        if not self.hparams.feature_cache:
            return
        if not self.backbone_frozen:
            log.info("model.feature_cache is not used: the backbone trains (model.trainable_blocks).")
            return
        if self.trainer.fast_dev_run:
            # debug=fast checks the wiring on a few episodes; caching would first embed every image.
            log.info("model.feature_cache is not used under fast_dev_run (debug=fast).")
            return
        splits = ("train", "val") if stage == "fit" else ("test",) if stage == "test" else ()
        datamodule = self.trainer.datamodule
        if splits and getattr(datamodule, "augmentation", "none") != "none":
            log.warning(
                "model.feature_cache=true runs episodes on features of un-augmented images: "
                "data.augmentation=%s is not applied. Set data.augmentation=none to silence this, or "
                "model.feature_cache=false.",
                datamodule.augmentation,
            )
        strategy = self.trainer.strategy
        for rank_pass in (True, False):
            if strategy.is_global_zero == rank_pass:
                for split in splits:
                    dataset = getattr(datamodule, f"{split}_set", None)
                    if dataset is not None and not isinstance(
                        getattr(dataset, "features", None), torch.Tensor
                    ):
                        setattr(datamodule, f"{split}_set", self._cached(dataset, datamodule, split))
            strategy.barrier("protonet_feature_cache")

    def _cached(self, dataset: Any, datamodule: Any, split: str) -> Any:
        return cached_features(
            self.hparams.cache_dir, self.backbone, self.hparams.backbone, self.backbone.preprocessing,
            dataset, batch_size=self.hparams.cache_batch_size,
            num_workers=getattr(datamodule, "num_workers", 0), device=self.trainer.strategy.root_device,
            label=split,
        )  # fmt: skip

    # ----------------------------------------------------------------- optimization and checkpoints
    def trainable_parts(self) -> dict[str, nn.Module]:
        """The named non-backbone parts: the projection (if any) and the cosine temperature (if any)."""
        parts = super().trainable_parts()
        if self.projection is not None:
            parts["projection"] = self.projection
        if any(True for _ in self.distance.parameters()):
            parts["distance"] = self.distance
        return parts
