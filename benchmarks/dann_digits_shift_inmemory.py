"""Source-only against DANN on the digits shift, in memory: a quick, seeded comparison of the strategies.

The same ``SourceOnlyClassifier`` / ``DANNClassifier`` modules, their ``training_step``, parameter groups
and DANN learning-rate schedule, on the same images the ``digits_shift`` experiment writes (printed digits:
all 2520 for training; handwritten digits: a seeded 30% held out for testing, the rest as unlabelled
target training images). Images are upsampled and normalised as the eval transform does, once, and
trained in a plain loop without Lightning, loaders or validation, so a 6-run comparison costs minutes even
where ``transferlab-train -m experiment=digits_shift model=source_only,dann seed=1,2,3`` (the full
pipeline) is too slow because the machine is shared.

    python benchmarks/dann_digits_shift_inmemory.py --seeds 1 2 3
    python benchmarks/dann_digits_shift_inmemory.py --set backbone_lr_factor=1.0 domain_loss_weight=0.3
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from transferlab.data.digits_shift import load_handwritten_digits, render_printed_digits
from transferlab.optim.dann_schedule import dann_annealing
from transferlab.strategies import DANNClassifier, SourceOnlyClassifier


def prepare(ink: np.ndarray, size: int, crop_pct: float = 0.875) -> torch.Tensor:
    """8x8 ink counts -> normalised 3-channel images, as the eval transform makes them."""
    x = torch.tensor(ink, dtype=torch.float32)[:, None] / 16.0
    resized = math.floor(size / crop_pct + 1e-6)
    x = F.interpolate(x, size=(resized, resized), mode="bilinear", antialias=True, align_corners=False)
    offset = (resized - size) // 2
    x = x[:, :, offset : offset + size, offset : offset + size]
    return ((x - 0.5) / 0.5).repeat(1, 3, 1, 1)


def train_and_test(cls: type[DANNClassifier], data: dict, args: argparse.Namespace, seed: int) -> float:
    """Target test accuracy of one seeded run."""

    class Stepped(cls):  # type: ignore[misc, valid-type]
        """The strategy with its optimizer step counter set by this loop (no Lightning trainer here)."""

        step = 0
        global_step = property(lambda self: self.step)  # type: ignore[assignment]

    torch.manual_seed(seed)
    model = Stepped(
        backbone={"name": "small_cnn", "weights": "none", "image_size": args.image_size},
        class_names=[str(d) for d in range(10)],
        optimizer={},
        lr=args.lr,
        **args.set,
    )
    model.log = lambda *a, **k: None  # type: ignore[method-assign]
    optimizer = torch.optim.SGD(model.param_groups(), momentum=0.9, nesterov=True)
    source, labels, target = data["source"], data["labels"], data["target"]
    steps_per_epoch = math.ceil(len(source) / args.batch_size)
    model._total_steps = steps_per_epoch * args.epochs
    scheduler = dann_annealing(optimizer, model._total_steps)
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(source))
        target_order = torch.cat([torch.randperm(len(target)) for _ in range(2)])
        for b in range(steps_per_epoch):
            s = order[b * args.batch_size : (b + 1) * args.batch_size]
            t = target_order[b * args.batch_size : (b + 1) * args.batch_size]
            loss = model.training_step((source[s], labels[s], target[t]), b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            model.step += 1
    model.eval()
    with torch.no_grad():
        return (model(data["test"]).argmax(1) == data["test_labels"]).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--set", nargs="*", default=[], help="module arguments, e.g. domain_loss_weight=0.3")
    args = parser.parse_args(argv)
    args.set = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    torch.set_num_threads(1)  # steadier on a shared machine

    printed, printed_labels = render_printed_digits()
    handwritten, handwritten_labels = load_handwritten_digits()
    order = np.random.default_rng(0).permutation(len(handwritten))
    held_out, unlabelled = order[: int(0.3 * len(order))], order[int(0.3 * len(order)) :]
    data = {
        "source": prepare(printed, args.image_size),
        "labels": torch.tensor(printed_labels),
        "target": prepare(handwritten[unlabelled], args.image_size),
        "test": prepare(handwritten[held_out], args.image_size),
        "test_labels": torch.tensor(handwritten_labels[held_out]),
    }
    results: dict[str, list[float]] = {}
    for name, cls in (("source_only", SourceOnlyClassifier), ("dann", DANNClassifier)):
        start = time.perf_counter()
        results[name] = [train_and_test(cls, data, args, seed) for seed in args.seeds]
        spent = time.perf_counter() - start
        print(
            f"{name}: target test accuracy {[round(a, 4) for a in results[name]]} ({spent:.0f} s)", flush=True
        )
    print(f"settings: {vars(args)}")
    for name, accs in results.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {name} | {100 * statistics.fmean(accs):.1f} +- {100 * std:.1f} |")
    gain = statistics.fmean(d - s for d, s in zip(results["dann"], results["source_only"], strict=True))
    print(f"DANN - source-only: {100 * gain:+.1f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
