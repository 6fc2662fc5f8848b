"""1000 five-way five-shot test episodes: on cached features of a frozen backbone vs on images, side by side.

Both runs are the product path, ``trainer.test`` of a ProtoNet module (pretrained EfficientNet-Lite0,
64 px by default, frozen, no projection) on the same episodes of the glyph demo's test classes
(``data=fewshot data.demo=glyphs``, the classes and episodes of ``experiment=fewshot_glyphs``):

- images: ``model.feature_cache=false``, every episode's images decoded and run through the backbone
  (loader worker processes as shipped, ``data.num_workers=2``);
- cached: ``model.feature_cache=true``; a first test run computes and stores the features of the test
  images (reported as the one-time cost), the second reads them and runs the episodes on them.

The two must agree on the accuracy (same episodes, same weights): exits with status 1 when they do not,
with status 4 (``_target.BELOW_TARGET``) when the cached run is less than 20x faster.

    python benchmarks/bench_fewshot_episodes.py [--episodes 1000] [--data DIR] [--image-size 64]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import lightning as L
from _target import below_target

from transferlab.backbones import backbone_preprocessing
from transferlab.data.episodic import EpisodicDataModule
from transferlab.strategies import ProtoNetModule

TARGET = 20.0


def test_run(
    backbone: dict, datamodule: EpisodicDataModule, cache_dir: Path | None
) -> tuple[float, float, float]:
    """Seconds of one ``trainer.test``, the mean accuracy and its 95% half-width."""
    model = ProtoNetModule(
        backbone,
        {"_target_": "torch.optim.AdamW", "_partial_": True},
        projection_dim=0,
        feature_cache=cache_dir is not None,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )  # fmt: skip
    # Each run starts from the images: the data module is rebuilt (a cached run swaps in features).
    start = time.perf_counter()
    trainer.test(model, datamodule=datamodule, verbose=False)
    seconds = time.perf_counter() - start
    return (
        seconds,
        float(trainer.callback_metrics["test/acc"]),
        float(trainer.callback_metrics["test/acc_ci95"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--data", type=Path, default=None, help="glyph folder to reuse (written if missing)")
    parser.add_argument("--image-size", type=int, default=64, help="backbone input size in pixels")
    args = parser.parse_args()
    backbone = {"name": "efficientnet_lite0", "weights": "imagenet", "image_size": args.image_size}
    work = Path(tempfile.mkdtemp(prefix="bench_fewshot_"))
    data = args.data or work / "glyphs"
    preprocessing = backbone_preprocessing(**{k: v for k, v in backbone.items() if k != "weights"})

    def datamodule() -> EpisodicDataModule:
        dm = EpisodicDataModule(
            str(data), preprocessing, demo="glyphs", test_episodes=args.episodes, test_way=5, test_shots=[5],
            test_query=10, num_workers=2, n_way=5, k_shot=5, q_query=10,
        )  # fmt: skip
        dm.prepare_data()
        dm.setup("test")
        return dm

    images_s, images_acc, images_ci = test_run(backbone, datamodule(), None)
    print(f"images: {images_s:.1f} s, acc {images_acc:.4f} +- {images_ci:.4f}")
    first_s, first_acc, _ = test_run(backbone, datamodule(), work / "cache")
    print(f"cached, first run (computes the features): {first_s:.1f} s, acc {first_acc:.4f}")
    cached_s, cached_acc, cached_ci = test_run(backbone, datamodule(), work / "cache")
    print(f"cached: {cached_s:.2f} s, acc {cached_acc:.4f} +- {cached_ci:.4f}")
    ratio = images_s / cached_s
    agree = abs(images_acc - cached_acc) < 1e-3 and abs(first_acc - cached_acc) < 1e-9
    print()
    print("| what | command | cached | images | ratio | target |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.episodes} five-way five-shot test episodes (10 queries per class), ProtoNet on frozen "
        f"EfficientNet-Lite0 at {args.image_size} px, glyph test classes; {datetime.date.today()}, "
        f"{platform.machine()}, {os.cpu_count()} cores "
        f"| `python benchmarks/bench_fewshot_episodes.py --episodes {args.episodes} "
        f"--image-size {args.image_size}` "
        f"| {cached_s:.2f} s (features computed once before: {first_s:.1f} s) | {images_s:.1f} s "
        f"| **{ratio:.0f}x** faster | >= {TARGET:.0f}x |"
    )
    print(
        f"| accuracy, same run | same | {cached_acc:.4f} +- {cached_ci:.4f} "
        f"| {images_acc:.4f} +- {images_ci:.4f} | {'equal' if agree else 'DIFFERENT'} | equal |"
    )
    if not agree:
        raise SystemExit(f"cached and image runs disagree on the accuracy: {cached_acc} vs {images_acc}")
    if ratio < TARGET:
        below_target(f"missed: ratio {ratio:.1f}x (target {TARGET}x)")


if __name__ == "__main__":
    main()
