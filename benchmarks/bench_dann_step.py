"""Time of one DANN training step against one source-only step, same network and batch sizes.

Both modules run their own ``training_step`` (DANN: source and target batch through the backbone in one
pass, domain classifier behind the reversal layer; source-only: the source batch alone), then backward,
optimizer and scheduler step, in the same hand-written loop on the same in-memory batches. Rounds
alternate between the two so machine noise hits both; the result is the median of per-round ratios of
seconds per step (DANN / source-only, target <= 2.2: DANN's step has twice the images to process).
Exits with status 4 (``_target.BELOW_TARGET``) when the ratio is above the target.

    python benchmarks/bench_dann_step.py                          # project default: EfficientNet-Lite0, 96 px
    python benchmarks/bench_dann_step.py --backbone small_cnn --image-size 32 --batch-size 64
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import time

import lightning as L
import torch
from _target import BELOW_TARGET

from transferlab.optim.dann_schedule import dann_annealing
from transferlab.strategies import DANNClassifier, SourceOnlyClassifier

TARGET_RATIO = 2.2


def make_model(cls: type[DANNClassifier], backbone: str, image_size: int) -> DANNClassifier:
    """The strategy with random weights (step time does not depend on their values)."""
    torch.manual_seed(0)
    model = cls(
        backbone={"name": backbone, "weights": "none", "image_size": image_size},
        class_names=[f"c{i}" for i in range(10)],
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True},
    )
    model.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no trainer to log to
    return model.train()


def seconds_per_step(model: DANNClassifier, batches: list[tuple[torch.Tensor, ...]], warmup: int) -> float:
    """Mean wall time of the steps after ``warmup``."""
    optimizer = torch.optim.SGD(model.param_groups(), momentum=0.9, nesterov=True)
    scheduler = dann_annealing(optimizer, total_steps=len(batches))
    model._total_steps = len(batches)
    start = 0.0
    for step, batch in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        loss = model.training_step(batch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return (time.perf_counter() - start) / (len(batches) - warmup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32, help="images of EACH domain per step")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    batches = [
        (
            torch.randn(shape, generator=g),
            torch.randint(0, 10, (args.batch_size,), generator=g),
            torch.randn(shape, generator=g),
        )
        for _ in range(args.steps)
    ]
    times: dict[str, list[float]] = {"dann": [], "source_only": []}
    for r in range(args.rounds):
        order = [("dann", DANNClassifier), ("source_only", SourceOnlyClassifier)]
        for name, cls in order if r % 2 == 0 else order[::-1]:
            times[name].append(
                seconds_per_step(make_model(cls, args.backbone, args.image_size), batches, args.warmup)
            )
        print(
            f"round {r + 1}/{args.rounds}: DANN {times['dann'][-1]:.3f} s/step, "
            f"source-only {times['source_only'][-1]:.3f} s/step",
            flush=True,
        )
    ratio = statistics.median(d / s for d, s in zip(times["dann"], times["source_only"], strict=True))
    cpu = (
        f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU"
        if not torch.cuda.is_available()
        else "GPU"
    )
    command = "python benchmarks/bench_dann_step.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(
        f"| {dt.date.today()} | `{command.strip()}` "
        f"| {cpu}, torch {torch.__version__}, lightning {L.__version__} "
        f"| {args.backbone} {args.image_size} px, batch {args.batch_size}+{args.batch_size} "
        f"| {statistics.median(times['dann']):.3f} s | {statistics.median(times['source_only']):.3f} s "
        f"| **{ratio:.2f}x** | <= {TARGET_RATIO}x |"
    )
    return 0 if ratio <= TARGET_RATIO else BELOW_TARGET


if __name__ == "__main__":
    sys.exit(main())
