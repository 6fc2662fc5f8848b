"""Speed switches that change how the model runs, not what it computes: channels_last and torch.compile."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import apply_to_collection

log = logging.getLogger(__name__)

_PATCHED = "_transferlab_channels_last_batches"

# The channels_last switch wraps the module's on_after_batch_transfer; Lightning then warns that the data
# module's hook (which transferlab does not define) is not used.
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")


def to_channels_last(batch: Any) -> Any:
    """Every 4-D tensor in ``batch`` (a tensor or a nested tuple/list/dict) in channels_last memory format."""
    return apply_to_collection(
        batch,
        torch.Tensor,
        lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t,
    )


class PerformanceTuning(L.Callback):
    """Run the model in channels_last memory format and/or compiled with ``torch.compile``.

    channels_last (NHWC) lets convolutions use the fast tensor-core kernels on recent GPUs, mostly under
    mixed precision; the weights and every batch are converted. ``torch.compile`` compiles the module's
    forward pass (``nn.Module.compile``: the parameters and checkpoint keys stay as they are).

    Both are applied in ``setup``, that is in the process that trains (also after DDP has started its
    processes), so the strategy may pickle the plain model first.

    Args:
        channels_last: convert the model and each batch after it reaches the device to channels_last.
        compile: compile the model with ``torch.compile``.
        compile_kwargs: passed to ``torch.compile`` (``mode``, ``backend``, ``dynamic``...).
    """

    def __init__(
        self,
        channels_last: bool = False,
        compile: bool = False,
        compile_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.channels_last = channels_last
        self.compile = compile
        self.compile_kwargs = dict(compile_kwargs or {})

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
            self._convert_batches(pl_module)
        if self.compile and getattr(pl_module, "_compiled_call_impl", None) is None:
            log.info("Compiling the model with torch.compile(%s)", self.compile_kwargs or "")
            pl_module.compile(**self.compile_kwargs)

    @staticmethod
    def _convert_batches(pl_module: L.LightningModule) -> None:
        """Wrap ``on_after_batch_transfer`` once so each batch on the device becomes channels_last."""
        if getattr(pl_module, _PATCHED, False):
            return
        original = pl_module.on_after_batch_transfer

        def on_after_batch_transfer(batch: Any, dataloader_idx: int) -> Any:
            return to_channels_last(original(batch, dataloader_idx))

        pl_module.on_after_batch_transfer = on_after_batch_transfer  # type: ignore[method-assign]
        setattr(pl_module, _PATCHED, True)
