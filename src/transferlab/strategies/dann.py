"""Domain-adversarial training (DANN, Ganin et al., 2016) and its source-only baseline.

The network is backbone -> bottleneck (linear, BatchNorm, ReLU) -> label classifier. DANN adds a domain
classifier on the bottleneck features behind a gradient reversal layer: it learns to tell source from
target images while the features below it learn to make that impossible, so the label classifier trained
on labelled source images keeps working on the unlabelled target domain.

Both modules train on :class:`~transferlab.data.domain.DomainAdaptationDataModule` batches
``(source images, source labels, target images)``. Source-only is the same network, data and schedule
without the domain classifier: the comparison that shows what the adversarial loss is worth.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from transferlab.errors import UserError
from transferlab.optim.dann_schedule import reversal_coefficient, training_progress
from transferlab.strategies.a_distance import proxy_a_distance
from transferlab.strategies.classifier import ClassifierModule
from transferlab.strategies.gradient_reversal import GradientReversal
from transferlab.utils.config import require_plain

log = logging.getLogger(__name__)

DOMAINS: tuple[str, ...] = ("source", "target")
"""Validation and test dataloader ``i`` holds images of ``DOMAINS[i]``."""

ORACLE_METRIC = "oracle_selection"
"""Logged 1.0 when the best checkpoint was chosen on target labels (an optimistic, oracle result)."""


def build_bottleneck(in_features: int, width: int | None) -> nn.Module:
    """Linear -> BatchNorm -> ReLU to ``width`` features; ``None`` or 0 keeps the backbone's features."""
    if not width:
        return nn.Identity()
    if width < 0:
        raise UserError(f"model.bottleneck_dim={width} must be a width > 0, or 0/null for no bottleneck.")
    return nn.Sequential(nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True))


def build_domain_classifier(in_features: int, hidden_dims: Sequence[int], dropout: float) -> nn.Sequential:
    """MLP ``in -> hidden... -> 2`` (ReLU and dropout after each hidden layer): source (0) or target (1)."""
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"model.domain_dropout={dropout} must be in [0, 1).")
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden_dims):
        raise UserError(f"model.domain_hidden_dims={list(hidden_dims)} must be positive widths (or []).")
    layers: list[nn.Module] = []
    width = in_features
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = hidden
    layers.append(nn.Linear(width, 2))
    return nn.Sequential(*layers)


class DomainScores(nn.Module):
    """Loss, accuracy and macro F1 of one domain in one stage, accumulated over an epoch (DDP-synced)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.loss = MeanMetric()
        self.acc = MulticlassAccuracy(num_classes, average="micro")
        self.f1 = MulticlassF1Score(num_classes, average="macro")

    def update(self, loss: torch.Tensor, preds: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss.update(loss.detach(), weight=labels.numel())
        self.acc.update(preds, labels)
        self.f1.update(preds, labels)

    def compute_and_reset(self) -> dict[str, torch.Tensor] | None:
        """``{"loss", "acc", "f1_macro"}`` over the epoch, or None when nothing labelled was seen."""
        if not self.acc.update_called:
            return None
        values = {"loss": self.loss.compute(), "acc": self.acc.compute(), "f1_macro": self.f1.compute()}
        for metric in (self.loss, self.acc, self.f1):
            metric.reset()
        return values


class DANNClassifier(ClassifierModule):
    """Domain-adversarial neural network: labelled source, unlabelled target, one shared feature extractor.

    Each step runs the source and target batches through backbone and bottleneck in one concatenated
    forward pass (so BatchNorm normalises both domains together), computes the label loss on the source
    part and the domain loss on both parts behind the gradient reversal layer. The reversal coefficient
    rises as ``lambda_p = 2 / (1 + exp(-lambda_gamma * p)) - 1`` over the run's optimizer steps.

    Model selection uses ``val/acc``: the source validation accuracy, unless ``oracle_selection`` makes it
    the target validation accuracy (target labels then decide which checkpoint is tested: such runs log
    ``oracle_selection=1``). ``val/loss``, ``val/acc``, ``val/f1_macro`` and ``test/loss``, ``test/acc``,
    ``test/f1_macro`` describe that domain; ``{val,test}/{source,target}_acc`` name their domain.
    Test also logs ``test/forgetting`` (source minus target accuracy) and ``test/a_distance`` (proxy
    A-distance of the held-out source and target test images' bottleneck features).

    Args:
        backbone: backbone config (``name``, ``weights``, ``image_size``, family options).
        class_names: class names, in label order (the source's).
        optimizer: ``_partial_`` optimizer config; it receives the parameter groups.
        scheduler: ``_partial_`` scheduler config taking ``(optimizer, total_steps)``, or None.
        trainable_blocks: 0 = frozen backbone, N = last N block groups, ``"all"``.
        lr: learning rate of bottleneck, label classifier and domain classifier.
        backbone_lr_factor: backbone rate relative to ``lr``.
        layer_decay: rate multiplier per block going down from the top trainable block.
        weight_decay: decay of weights (norms and biases get none).
        bottleneck_dim: bottleneck width (None or 0: the label classifier sits on the backbone features).
        domain_hidden_dims: hidden widths of the domain classifier.
        domain_dropout: dropout after each hidden layer of the domain classifier.
        domain_loss_weight: weight of the domain loss in the total loss.
        lambda_gamma: steepness of the reversal coefficient's ramp.
        label_smoothing: label smoothing of the source cross-entropy.
        class_counts: source training images per class (given by the training entry point).
        class_weighted_loss: weight the source loss by inverse class frequency.
        frozen_blocks_eval: frozen blocks run in eval mode, so their BatchNorm statistics stay fixed.
        freeze_bn_stats: every BatchNorm layer of the backbone keeps its running statistics, in trainable
            blocks too (their scale and shift still train).
        oracle_selection: choose the best checkpoint on target validation accuracy (needs target labels;
            the result is an optimistic oracle, not a fair estimate).
        a_distance: measure the proxy A-distance at test time.
    """

    adversarial: ClassVar[bool] = True

    def __init__(
        self,
        backbone: Mapping[str, Any],
        class_names: list[str],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        trainable_blocks: int | str = "all",
        lr: float = 1e-2,
        backbone_lr_factor: float = 0.1,
        layer_decay: float = 1.0,
        weight_decay: float = 1e-3,
        bottleneck_dim: int | None = 256,
        domain_hidden_dims: Sequence[int] = (1024, 1024),
        domain_dropout: float = 0.5,
        domain_loss_weight: float = 1.0,
        lambda_gamma: float = 10.0,
        label_smoothing: float = 0.0,
        class_counts: list[int] | None = None,
        class_weighted_loss: bool = False,
        frozen_blocks_eval: bool = True,
        freeze_bn_stats: bool = False,
        oracle_selection: bool = False,
        a_distance: bool = True,
    ) -> None:
        require_plain(domain_hidden_dims=domain_hidden_dims)
        domain_hidden_dims = list(domain_hidden_dims)
        super().__init__(
            backbone, optimizer, scheduler, class_names=class_names, lr=lr,
            backbone_lr_factor=backbone_lr_factor, layer_decay=layer_decay, weight_decay=weight_decay,
            head_hidden_dim=None, head_dropout=0.0, label_smoothing=label_smoothing,
            class_counts=class_counts, class_weighted_loss=class_weighted_loss,
            frozen_blocks_eval=frozen_blocks_eval, freeze_bn_stats=freeze_bn_stats,
        )  # fmt: skip
        self.save_hyperparameters()
        if domain_loss_weight < 0:
            raise UserError(f"model.domain_loss_weight={domain_loss_weight} must be >= 0.")
        num_classes = len(self.class_names)
        bottleneck = build_bottleneck(self.backbone.feature_dim, bottleneck_dim)
        width = bottleneck_dim or self.backbone.feature_dim
        # One head module (bottleneck, then classifier): forward, predict and export see head(backbone(x)).
        self.head = nn.Sequential(
            OrderedDict(bottleneck=bottleneck, classifier=nn.Linear(width, num_classes))
        )
        if self.adversarial:
            self.reversal = GradientReversal(0.0)
            self.domain_classifier = build_domain_classifier(width, domain_hidden_dims, domain_dropout)
        self.domain_loss_weight = float(domain_loss_weight)
        self.lambda_gamma = float(lambda_gamma)
        self.oracle_selection = bool(oracle_selection)
        self.measure_a_distance = bool(a_distance)
        self.selection_domain = "target" if self.oracle_selection else "source"
        self.scores = nn.ModuleDict(
            {
                f"{stage}_{domain}": DomainScores(num_classes)
                for stage in ("val", "test")
                for domain in DOMAINS
            }
        )
        if self.adversarial:
            self.train_domain_loss = MeanMetric()
            self.train_domain_acc = MulticlassAccuracy(2, average="micro")
        self._test_features: dict[str, list[torch.Tensor]] = {domain: [] for domain in DOMAINS}
        self._total_steps: int | None = None
        self.set_trainable_blocks(trainable_blocks)

    # ----------------------------------------------------------------- network
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck features of normalised images (what both classifiers see)."""
        return self.head.bottleneck(self.backbone(x))

    def trainable_parts(self) -> dict[str, nn.Module]:
        """The label classifier (``"head"``), ``"bottleneck"`` and DANN's ``"domain_classifier"``."""
        parts = super().trainable_parts()
        parts.update(head=self.head.classifier, bottleneck=self.head.bottleneck)
        if self.adversarial:
            parts["domain_classifier"] = self.domain_classifier
        return parts

    def current_reversal_coefficient(self) -> float:
        """``lambda_p`` at the current optimizer step of the run."""
        if self._total_steps is None:
            self._total_steps = int(self.trainer.estimated_stepping_batches)
        return reversal_coefficient(training_progress(self.global_step, self._total_steps), self.lambda_gamma)

    # ----------------------------------------------------------------- checks
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and not hasattr(datamodule, "target_train_set"):
            raise UserError(
                f"model={self._config_name()} trains on two domains: use data=domain_adaptation "
                "data.source_root=DIR data.target_root=DIR."
            )
        if stage == "fit" and self.oracle_selection and not datamodule.target_labelled:  # type: ignore[union-attr]
            raise UserError(
                "model.oracle_selection=true chooses the checkpoint on target accuracy, but the target "
                f"data ({datamodule.target_root}) has no class folders. Set model.oracle_selection=false."  # type: ignore[union-attr]
            )

    def on_fit_start(self) -> None:
        self._total_steps = int(self.trainer.estimated_stepping_batches)
        if self.oracle_selection and self.trainer.is_global_zero:
            log.warning(
                "ORACLE model selection (model.oracle_selection=true): the best checkpoint is chosen on "
                "target validation accuracy, i.e. with target labels. Its target accuracy is optimistic; "
                "metrics.json records %s=1.",
                ORACLE_METRIC,
            )

    @classmethod
    def _config_name(cls) -> str:
        return "dann" if cls.adversarial else "source_only"

    # ----------------------------------------------------------------- training
    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        if len(batch) != 3:
            raise UserError(
                f"model={self._config_name()} needs batches (source images, source labels, target images) "
                "from data=domain_adaptation."
            )
        source_x, source_y, target_x = batch
        count = len(source_x)
        if self.adversarial:
            # One forward pass over both domains: BatchNorm layers normalise with statistics of both.
            features = self.features(torch.cat([source_x, target_x]))
            logits = self.head.classifier(features[:count])
        else:
            logits = self.head.classifier(self.features(source_x))
        loss = F.cross_entropy(
            logits, source_y, weight=self.class_weights, label_smoothing=self.label_smoothing
        )
        # Epoch values are logged in on_train_epoch_end (ClassifierModule.log_classification_epoch).
        self.train_loss.update(loss.detach(), weight=count)
        self.train_acc.update(logits.argmax(dim=1), source_y)
        self.log_step_loss(loss)
        if not self.adversarial:
            return loss
        coefficient = self.current_reversal_coefficient()
        self.reversal.coefficient = coefficient
        domain_logits = self.domain_classifier(self.reversal(features))
        domain_labels = torch.cat(
            [
                torch.zeros(count, dtype=torch.long, device=domain_logits.device),
                torch.ones(len(target_x), dtype=torch.long, device=domain_logits.device),
            ]
        )
        domain_loss = F.cross_entropy(domain_logits, domain_labels)
        self.train_domain_loss.update(domain_loss.detach(), weight=len(domain_labels))
        self.train_domain_acc.update(domain_logits.argmax(dim=1), domain_labels)
        self.log("train/lambda", coefficient, on_step=True, on_epoch=False)
        return loss + self.domain_loss_weight * domain_loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.adversarial:
            self.log_epoch_metrics(
                {"train/domain_loss": self.train_domain_loss, "train/domain_acc": self.train_domain_acc}
            )

    # ----------------------------------------------------------------- evaluation
    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val", DOMAINS[dataloader_idx])

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        features = self._evaluate(batch, "test", DOMAINS[dataloader_idx])
        if self.measure_a_distance:
            self._test_features[DOMAINS[dataloader_idx]].append(features.detach())

    def _evaluate(self, batch: Sequence[torch.Tensor], stage: str, domain: str) -> torch.Tensor:
        x, y = batch[0], batch[1]
        features = self.features(x)
        logits = self.head.classifier(features)
        labelled = y >= 0  # unlabelled target images carry -1
        if labelled.any():
            logits, y = logits[labelled], y[labelled]
            loss = F.cross_entropy(logits, y)
            preds = logits.argmax(dim=1)
            self.scores[f"{stage}_{domain}"].update(loss, preds, y)
            if stage == "val" and domain == self.selection_domain:
                self.val_confusion.update(preds, y)
        return features

    def on_validation_epoch_end(self) -> None:
        results = self._log_domain_scores("val")
        self.last_val_confusion = self.val_confusion.compute().cpu()
        self.val_confusion.reset()
        self.log(ORACLE_METRIC, float(self.oracle_selection), sync_dist=True)
        selected = results.get(self.selection_domain)
        if selected is None or self.trainer.sanity_checking:
            return  # the sanity check must not count towards the best accuracy
        self.val_acc_best(selected["acc"])
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        results = self._log_domain_scores("test")
        self.log(ORACLE_METRIC, float(self.oracle_selection), sync_dist=True)
        if "source" in results and "target" in results:
            # As in the usual transfer check: how much worse the model does on the domain it was adapted to.
            forgetting = results["source"]["acc"] - results["target"]["acc"]
            self.log("test/forgetting", forgetting, sync_dist=True)
        if self.measure_a_distance:
            self._log_a_distance()

    def _log_domain_scores(self, stage: str) -> dict[str, dict[str, torch.Tensor]]:
        results = {}
        for domain in DOMAINS:
            values = self.scores[f"{stage}_{domain}"].compute_and_reset()
            if values is not None:
                results[domain] = values
                self.log(f"{stage}/{domain}_acc", values["acc"], sync_dist=True, prog_bar=stage == "val")
                self.log(f"{stage}/{domain}_loss", values["loss"], sync_dist=True)
        selected = results.get(self.selection_domain)
        if selected is not None:
            for name, value in selected.items():
                self.log(f"{stage}/{name}", value, sync_dist=True)
        return results

    def _log_a_distance(self) -> None:
        gathered = {}
        for domain in DOMAINS:
            chunks = self._test_features[domain]
            self._test_features[domain] = []
            local = torch.cat(chunks) if chunks else torch.zeros(0, self.head.classifier.in_features)
            features = self.all_gather(local.to(self.device))
            gathered[domain] = features.reshape(-1, local.shape[-1]).cpu()
        distance = proxy_a_distance(gathered["source"], gathered["target"])
        if distance is None:
            log.warning("Too few test images in a domain to measure the proxy A-distance; not logged.")
            return
        self.log("test/a_distance", distance, sync_dist=True)


class SourceOnlyClassifier(DANNClassifier):
    """The DANN network, data stream and schedule trained on the labelled source images alone.

    The target batch of each step is not used (and no domain classifier exists), so this is the baseline
    DANN is measured against: ``transferlab-train -m model=source_only,dann ...``. Validation and test
    metrics are the same as DANN's.
    """

    adversarial: ClassVar[bool] = False
