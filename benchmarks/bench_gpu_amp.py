"""GPU throughput of bf16-mixed fine-tuning (ResNet-50, 224 px): ours against a plain PyTorch AMP loop.

Three variants, each ours (FineTuneClassifier + Lightning Trainer, precision bf16-mixed) against a
hand-written ``torch.autocast(bfloat16)`` loop on the same model, batches and optimizer groups: plain
NCHW, channels_last, and channels_last + torch.compile (ours through transferlab.callbacks.PerformanceTuning).
Target: ours >= 0.9x the plain loop in every variant; exits with status 4 (``_target.BELOW_TARGET``)
when a variant misses it.

    python benchmarks/bench_gpu_amp.py                 # needs a CUDA GPU; a few minutes
    python benchmarks/bench_gpu_amp.py --variants plain,channels_last --rounds 3

Without CUDA it stops with a message (the figures stay "not yet measured"). ``--allow-cpu`` runs the same
code on the CPU with whatever size is given, to check the script itself (not a benchmark).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace

import torch
from _target import BELOW_TARGET
from bench_training_step import Setup, compare, machine, markdown_row

VARIANTS = {
    "plain": {},
    "channels_last": {"channels_last": True},
    "compile": {"channels_last": True, "compile": True},
}
NO_CUDA_EXIT = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60, help="training steps per round and side")
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps (compilation happens here)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}"
    )
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run on the CPU when there is no GPU (checks the script only)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Setup(
        args.backbone, args.image_size, args.batch_size, args.steps, args.warmup, "cuda", "bf16-mixed"
    )
    setups = {name: replace(base, **VARIANTS[name]) for name in args.variants.split(",")}
    if not torch.cuda.is_available():
        if not args.allow_cpu:
            print(
                "bench_gpu_amp: no CUDA GPU on this machine, nothing measured (the GPU figures stay "
                "'not yet measured'). Run it on a GPU machine; --allow-cpu only checks the script.",
                file=sys.stderr,
            )
            return NO_CUDA_EXIT
        setups = {name: replace(s, device="cpu") for name, s in setups.items()}
    elif torch.cuda.is_bf16_supported():
        torch.backends.cudnn.benchmark = True
    else:
        print("bench_gpu_amp: this GPU has no bfloat16; the benchmark measures bf16-mixed", file=sys.stderr)
        return NO_CUDA_EXIT

    command = shlex.join(["python", "benchmarks/bench_gpu_amp.py", *sys.argv[1:]])
    print(f"$ {command}\n{machine()}")
    rows = []
    for name, setup in setups.items():
        print(f"--- {name}")
        cmp = compare(setup, args.rounds)
        text = f"{setup.backbone} {setup.image_size}px, batch {setup.batch_size}, bf16-mixed, {name}"
        rows.append((markdown_row(command, text, cmp), cmp.ratio))
    print("\n| date | command | machine | setup | ours | plain | ours/plain (median) |")
    print("|---|---|---|---|---|---|---|")
    for row, _ in rows:
        print(row)
    return 0 if all(ratio >= 0.9 for _, ratio in rows) else BELOW_TARGET


if __name__ == "__main__":
    sys.exit(main())
