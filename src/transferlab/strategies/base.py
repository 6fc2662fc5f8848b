"""What every transfer strategy shares: backbone, freezing, optimizer from named parts, checkpoints."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import Metric

from transferlab.backbones import Backbone, build_backbone
from transferlab.errors import UserError
from transferlab.optim import split_weight_decay
from transferlab.utils.config import require_plain
from transferlab.utils.lightning_messages import drop_lightning_deprecation_warnings

CHECKPOINT_KEY = "transferlab"

# Frozen backbone blocks are kept in eval mode on purpose (see TransferModule.train); Lightning warns
# about any module in eval mode when training starts.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
# at import, so that spawned DDP processes (which import this module to rebuild the model) get it too
drop_lightning_deprecation_warnings()


class TransferModule(L.LightningModule):
    """Base of every strategy: a pretrained backbone, the parts a strategy adds, and the bookkeeping.

    This class provides:

    - ``self.backbone`` built from the backbone config (name, weights, image size);
    - freezing by block groups (:meth:`set_trainable_blocks`), which keeps ``requires_grad`` and the
      train/eval mode of the backbone's modules together, and may be called again to unfreeze more;
    - optimizer parameter groups from named parts (:meth:`trainable_parts`) and layer-wise rates of the
      backbone's block groups (:meth:`block_group_lr`), with no weight decay on norms and biases;
    - ``configure_optimizers`` from ``_partial_`` optimizer / scheduler configs;
    - checkpoint metadata (module class, preprocessing, class names when there are any), so eval,
      predict and :func:`~transferlab.strategies.loading.load_module_from_checkpoint` need nothing else.

    A concrete strategy builds its parts, calls :meth:`set_trainable_blocks` and
    ``self.save_hyperparameters()`` in its own ``__init__`` (so each checkpoint records exactly its own
    class's arguments), and writes ``training_step`` and friends.

    Args:
        backbone: backbone config (``name``, ``weights``, ``image_size``, family options).
        optimizer: ``_partial_`` optimizer config; it receives :meth:`param_groups`.
        scheduler: ``_partial_`` scheduler config taking ``(optimizer, total_steps)``, or None.
        lr: learning rate of the parts (e.g. the head).
        backbone_lr_factor: rate of the top block group relative to ``lr`` (discriminative learning rate).
        layer_decay: rate multiplier per block group going down from the top group.
        weight_decay: decay of weights; norms and biases (1-D parameters) get none.
        frozen_blocks_eval: frozen block groups run in eval mode, so their BatchNorm statistics (and
            dropout) stay fixed.
        freeze_bn_stats: every BatchNorm layer of the backbone keeps its running statistics, in trainable
            block groups too (their scale and shift still train; useful with small batches).
        class_names: the fixed class set, in label order, or None for a module without one (few-shot).
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        *,
        lr: float,
        backbone_lr_factor: float = 0.1,
        layer_decay: float = 1.0,
        weight_decay: float = 1e-4,
        frozen_blocks_eval: bool = True,
        freeze_bn_stats: bool = False,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        require_plain(backbone=backbone, optimizer=optimizer, scheduler=scheduler, class_names=class_names)
        if lr <= 0 or backbone_lr_factor < 0 or not 0 < layer_decay <= 1 or weight_decay < 0:
            raise UserError(
                f"Bad learning rates: model.lr={lr} must be > 0, model.backbone_lr_factor="
                f"{backbone_lr_factor} >= 0, model.layer_decay={layer_decay} in (0, 1] and "
                f"model.weight_decay={weight_decay} >= 0."
            )
        self.backbone: Backbone = build_backbone(**backbone)
        self.optimizer_cfg = dict(optimizer)
        self.scheduler_cfg = dict(scheduler) if scheduler else None
        self.lr, self.backbone_lr_factor, self.layer_decay = lr, backbone_lr_factor, layer_decay
        self.weight_decay = weight_decay
        self.frozen_blocks_eval, self.freeze_bn_stats = frozen_blocks_eval, freeze_bn_stats
        self.class_names: list[str] | None = None if class_names is None else list(class_names)
        # A new backbone trains whole until set_trainable_blocks says otherwise.
        self._num_trainable_blocks = self.num_block_groups

    # ----------------------------------------------------------------- freezing
    @property
    def block_group_names(self) -> list[str]:
        """Names of the backbone's block groups, input to output."""
        return [group.name for group in self.backbone.block_groups()]

    @property
    def num_block_groups(self) -> int:
        """Number of block groups of the backbone."""
        return len(self.backbone.block_groups())

    @property
    def num_trainable_blocks(self) -> int:
        """How many block groups, counted from the top, :meth:`set_trainable_blocks` made trainable."""
        return self._num_trainable_blocks

    def set_trainable_blocks(self, count: int | str) -> None:
        """Make the last ``count`` block groups trainable and freeze the rest (``"all"``: every group).

        May be called again later, e.g. by a gradual-unfreezing callback, to unfreeze more: newly unfrozen
        groups get ``requires_grad`` back and return to train mode when the module is training. Frozen
        groups run in eval mode when ``frozen_blocks_eval``. Parameters of groups unfrozen after the
        optimizer was built must be added to it (see :meth:`block_group_param_groups`).
        """
        groups = self.backbone.block_groups()
        if count == "all":
            count = len(groups)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= len(groups):
            raise UserError(
                f"model.trainable_blocks={count!r} is not valid for this backbone: use 0 (frozen), a number "
                f"up to {len(groups)}, or 'all'. Its block groups, input to output: {self.block_group_names}."
            )
        first_trainable = len(groups) - count
        for index, group in enumerate(groups):
            for param in group.parameters():
                param.requires_grad_(index >= first_trainable)
        self._num_trainable_blocks = count
        if self.training:
            self._set_backbone_modes()

    def train(self, mode: bool = True) -> TransferModule:
        """Set train/eval mode; in train mode frozen blocks (and, if asked, BatchNorm layers) stay in eval."""
        super().train(mode)
        if mode:
            self._set_backbone_modes()
        return self

    def _set_backbone_modes(self) -> None:
        """Train mode for trainable block groups, eval mode where statistics must stay fixed."""
        groups = self.backbone.block_groups()
        first_trainable = len(groups) - self._num_trainable_blocks
        for index, group in enumerate(groups):
            keep_eval = index < first_trainable and self.frozen_blocks_eval
            for module in group.modules:
                module.train(not keep_eval)
        if self.freeze_bn_stats:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    # ----------------------------------------------------------------- optimization
    def trainable_parts(self) -> dict[str, nn.Module]:
        """The strategy's named modules outside the backbone (e.g. ``{"head": ...}``).

        A strategy that adds parts overrides this and extends ``super().trainable_parts()``; each part gets
        its own parameter groups at :meth:`part_lr`.
        """
        return {}

    def part_lr(self, name: str) -> float:
        """Learning rate of the part ``name`` (by default ``lr`` for every part)."""
        return self.lr

    def block_group_lr(self, index: int) -> float:
        """Rate of block group ``index`` (0 = nearest the input), whatever is trainable at the moment.

        ``lr * backbone_lr_factor * layer_decay ** (num_block_groups - 1 - index)``: the top group trains at
        ``lr * backbone_lr_factor`` and each group below it at ``layer_decay`` times the rate above.
        """
        count = self.num_block_groups
        if not 0 <= index < count:
            raise IndexError(f"Block group index {index} is out of range for {count} block groups.")
        return self.lr * self.backbone_lr_factor * self.layer_decay ** (count - 1 - index)

    def block_group_param_groups(self, names: Sequence[str]) -> list[dict]:
        """Optimizer parameter groups of the named block groups, at the rates :meth:`block_group_lr` gives.

        Each block group gives a decayed and a no-decay group (norms and biases), named
        ``backbone.<group>`` and ``backbone.<group>/no_decay``. Frozen parameters are left out, so call
        this after :meth:`set_trainable_blocks` (a gradual-unfreezing callback adds the result to the
        optimizer with ``optimizer.add_param_group``).
        """
        groups = self.backbone.block_groups()
        index_of = {group.name: index for index, group in enumerate(groups)}
        unknown = [name for name in names if name not in index_of]
        if unknown:
            raise UserError(
                f"Unknown block group(s) {unknown}: this backbone's groups, input to output, are "
                f"{list(index_of)}."
            )
        param_groups: list[dict] = []
        for name in names:
            index = index_of[name]
            named = ((n, p) for module in groups[index].modules for n, p in module.named_parameters())
            param_groups += split_weight_decay(
                named, self.weight_decay, self.block_group_lr(index), f"backbone.{name}"
            )
        return param_groups

    def param_groups(self) -> list[dict]:
        """Parameter groups of every trainable part and every trainable block group (frozen ones left out)."""
        groups: list[dict] = []
        for name, part in self.trainable_parts().items():
            groups += split_weight_decay(part.named_parameters(), self.weight_decay, self.part_lr(name), name)
        trainable = [
            group.name
            for group in self.backbone.block_groups()
            if any(p.requires_grad for p in group.parameters())
        ]
        return groups + self.block_group_param_groups(trainable)

    def configure_optimizers(self) -> dict:
        groups = self.param_groups()
        if not groups:
            raise UserError("Nothing to train: every parameter is frozen. Check model.trainable_blocks.")
        optimizer = instantiate(self.optimizer_cfg)(groups)
        if not self.scheduler_cfg:
            return {"optimizer": optimizer}
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(self.scheduler_cfg)(optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------------- logging
    def log_step_loss(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """Log ``train/loss_step`` on the training steps whose values reach the loggers.

        Lightning writes step values every ``trainer.log_every_n_steps`` steps (and at the last step), but
        each ``self.log`` call costs its bookkeeping, about a millisecond: as much as a whole step of a
        head on cached features. So the loss is logged only on the steps Lightning writes, found as its own
        ``LearningRateMonitor`` finds them: the loggers get the same values at the same steps, and
        ``trainer.callback_metrics["train/loss_step"]`` holds the loss of the last step written.
        ``kwargs`` go to ``self.log``. Outside a trainer (a step called on its own) nothing is logged.
        """
        trainer = self._trainer
        if trainer is not None and (trainer._logger_connector.should_update_logs or trainer.fast_dev_run):
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, **kwargs)

    def log_epoch_metrics(self, metrics: Mapping[str, Metric], prog_bar: Sequence[str] = ()) -> None:
        """Compute, log under its name and reset each metric updated this epoch (the others are reset).

        The metrics gather the updates of every process when they compute, so each rank logs the same
        value.
        """
        for name, metric in metrics.items():
            if metric.update_count:
                self.log(name, metric.compute(), prog_bar=name in prog_bar, sync_dist=True)
            metric.reset()

    # ----------------------------------------------------------------- checkpoints
    @property
    def preprocessing(self) -> dict:
        """The preprocessing the backbone expects, as a plain dict."""
        return self.backbone.preprocessing.to_dict()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cls = type(self)
        metadata: dict[str, Any] = {
            "module": f"{cls.__module__}.{cls.__qualname__}",
            "preprocessing": self.preprocessing,
        }
        if self.class_names is not None:
            metadata["class_names"] = list(self.class_names)
        checkpoint[CHECKPOINT_KEY] = metadata
