"""Throughput of our fine-tuning training step against a plain PyTorch loop on the same model and data.

Both sides train a FineTuneClassifier on the same batches with the same optimizer parameter groups and
schedule; ours runs through a Lightning Trainer (loggers, progress bar, checkpoints and validation off),
the baseline is a hand-written loop. Rounds alternate between the two so that machine noise hits both;
the result is the median of the per-round throughput ratios (ours / plain, target >= 0.9). Exits with
status 4 (``_target.BELOW_TARGET``) below the target.

    python benchmarks/bench_training_step.py              # ~1-2 minutes on 2 CPU cores
    python benchmarks/bench_training_step.py --help
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from _target import BELOW_TARGET
from torch.utils.data import DataLoader, TensorDataset

from transferlab.optim import cosine_with_warmup
from transferlab.strategies import FineTuneClassifier

warnings.filterwarnings("ignore", message=r".*(does not have many workers|in eval mode).*")
# Lightning's per-fit banners ("GPU available", "max_steps reached") would bury the per-round lines
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


@dataclass
class Setup:
    """What both sides of a comparison train on."""

    backbone: str
    image_size: int
    batch_size: int
    steps: int
    warmup: int
    device: str
    precision: str  # "32-true" or "bf16-mixed"
    channels_last: bool = False
    compile: bool = False


def make_model(setup: Setup, num_classes: int = 10, seed: int = 0) -> FineTuneClassifier:
    """A fine-tuning classifier with random weights (throughput does not depend on their values)."""
    torch.manual_seed(seed)
    return FineTuneClassifier(
        backbone={"name": setup.backbone, "weights": "none", "image_size": setup.image_size},
        class_names=[f"c{i}" for i in range(num_classes)],
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True},
        scheduler={"_target_": "transferlab.optim.cosine_with_warmup", "_partial_": True},
        trainable_blocks="all",
        lr=1e-3,
    )


def make_loader(setup: Setup, num_classes: int = 10, seed: int = 0) -> DataLoader:
    """Random images in memory: the same batches, in the same order, for every round and both sides."""
    g = torch.Generator().manual_seed(seed)
    n = setup.batch_size * setup.steps
    images = torch.randn(n, 3, setup.image_size, setup.image_size, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return DataLoader(TensorDataset(images, labels), batch_size=setup.batch_size, shuffle=False)


class _StepTimer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch (steady-state steps)."""

    def __init__(self, warmup: int, sync: Callable[[], None]) -> None:
        self.warmup, self.sync = warmup, sync
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.sync()
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.sync()
        self.end = time.perf_counter()


def _sync(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _timed_images(setup: Setup, seconds: float) -> float:
    return setup.batch_size * (setup.steps - setup.warmup) / seconds


def run_ours(setup: Setup) -> float:
    """Images per second of FineTuneClassifier trained by a Lightning Trainer."""
    from transferlab.callbacks import PerformanceTuning

    model, loader = make_model(setup), make_loader(setup)
    timer = _StepTimer(setup.warmup, _sync(setup.device))
    callbacks: list[L.Callback] = [timer]
    if setup.channels_last or setup.compile:
        callbacks.append(PerformanceTuning(channels_last=setup.channels_last, compile=setup.compile))
    trainer = L.Trainer(
        accelerator="gpu" if setup.device.startswith("cuda") else "cpu",
        devices=1,
        precision=setup.precision,
        max_steps=setup.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    trainer.fit(model, train_dataloaders=loader)
    return _timed_images(setup, timer.end - timer.start)


def _batches(loader: DataLoader, device: str, channels_last: bool) -> Iterator[tuple[torch.Tensor, ...]]:
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, y.to(device, non_blocking=True)


def run_plain(setup: Setup) -> float:
    """Images per second of a hand-written loop: same model, parameter groups, optimizer and schedule."""
    model, loader = make_model(setup), make_loader(setup)
    model.to(setup.device)
    if setup.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    forward = torch.compile(model) if setup.compile else model
    optimizer = torch.optim.AdamW(model.param_groups())
    scheduler = cosine_with_warmup(optimizer, total_steps=setup.steps)
    autocast_device = "cuda" if setup.device.startswith("cuda") else "cpu"
    sync = _sync(setup.device)
    start = 0.0
    for step, (x, y) in enumerate(_batches(loader, setup.device, setup.channels_last)):
        if step == setup.warmup:
            sync()
            start = time.perf_counter()
        with torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=setup.precision == "bf16-mixed"):
            loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    sync()
    return _timed_images(setup, time.perf_counter() - start)


@dataclass
class Comparison:
    """Per-round throughputs of both sides."""

    ours: list[float]
    plain: list[float]

    @property
    def ratio(self) -> float:
        """Median over rounds of ours / plain."""
        return statistics.median(o / p for o, p in zip(self.ours, self.plain, strict=True))


def compare(setup: Setup, rounds: int, log: Callable[[str], None] = print) -> Comparison:
    """Alternate ours and plain for ``rounds`` rounds (which goes first alternates too)."""
    result = Comparison([], [])
    for r in range(rounds):
        order = [("ours", run_ours), ("plain", run_plain)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            getattr(result, name).append(fn(setup))
        log(f"round {r + 1}/{rounds}: ours {result.ours[-1]:.1f} img/s, plain {result.plain[-1]:.1f} img/s")
    return result


def machine() -> str:
    """One line describing the machine the figures were measured on."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        device = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU"
    return f"{device}, torch {torch.__version__}, lightning {L.__version__}"


def markdown_row(command: str, setup_text: str, cmp: Comparison) -> str:
    """``| date | command | machine | setup | ours | plain | ratio |``"""
    ours, plain = statistics.median(cmp.ours), statistics.median(cmp.plain)
    today = dt.date.today().isoformat()
    return (
        f"| {today} | `{command}` | {machine()} | {setup_text} | {ours:.1f} img/s | {plain:.1f} img/s "
        f"| **{cmp.ratio:.3f}x** |"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18", help="backbone name (random weights)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="training steps per round and side")
    parser.add_argument("--warmup", type=int, default=3, help="first steps of each round not timed")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = Setup(args.backbone, args.image_size, args.batch_size, args.steps, args.warmup, "cpu", "32-true")
    command = shlex.join(["python", "benchmarks/bench_training_step.py", *sys.argv[1:]])
    print(f"$ {command}\n{machine()}, {torch.get_num_threads()} threads")
    cmp = compare(setup, args.rounds)
    setup_text = (
        f"{setup.backbone} {setup.image_size}px, batch {setup.batch_size}, fp32, {args.rounds} rounds"
    )
    print("\n| date | command | machine | setup | ours | plain | ours/plain (median) |")
    print("|---|---|---|---|---|---|---|")
    print(markdown_row(command, setup_text, cmp))
    return 0 if cmp.ratio >= 0.9 else BELOW_TARGET


if __name__ == "__main__":
    sys.exit(main())
