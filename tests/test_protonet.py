"""Prototypical networks: the maths, and model=protonet trained, tested and used through the real CLIs."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from tests.test_episodic import make_fewshot_folder
from transferlab.strategies import ProtoNetModule, load_module_from_checkpoint
from transferlab.strategies.protonet import (
    Distance,
    cosine_logits,
    mean_and_ci95,
    prototypes,
    squared_euclidean_logits,
)

# A 3-way episode shape small enough for seconds-long runs; the data has 14 classes (8/3/3 split).
FEWSHOT_OVERRIDES = [
    "data=fewshot",
    "model=protonet",
    "backbone=small_cnn",
    "backbone.image_size=16",
    "data.n_way=3",
    "data.k_shot=2",
    "data.q_query=2",
    "data.episodes_per_epoch=10",
    "data.val_episodes=6",
    "data.test_episodes=12",
    "data.test_way=3",
    "data.test_shots=[1,2]",
    "data.test_query=3",
    "model.projection_dim=16",
    "model.lr=0.01",
    "callbacks.rich_progress_bar=null",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]


def test_prototypes_are_the_class_means_of_the_support_embeddings() -> None:
    torch.manual_seed(0)
    embeddings = torch.randn(7, 5)
    labels = torch.tensor([2, 0, 1, 0, 2, 2, 1])  # unequal shots: 2, 2 and 3
    centres = prototypes(embeddings, labels, 3)
    for c in range(3):
        torch.testing.assert_close(centres[c], embeddings[labels == c].mean(dim=0))
    with pytest.raises(ValueError, match="at least one support example"):
        prototypes(embeddings, labels, 4)


def test_logits_are_negative_squared_distances_or_scaled_cosines() -> None:
    torch.manual_seed(0)
    queries, centres = torch.randn(6, 4), torch.randn(3, 4)
    expected = torch.tensor(
        [
            [-sum((a - b) ** 2 for a, b in zip(q, c, strict=True)) for c in centres.tolist()]
            for q in queries.tolist()
        ]
    )
    torch.testing.assert_close(squared_euclidean_logits(queries, centres), expected)
    torch.testing.assert_close(Distance("squared_euclidean")(queries, centres), expected)
    cosine = torch.nn.functional.cosine_similarity(queries.unsqueeze(1), centres.unsqueeze(0), dim=-1)
    torch.testing.assert_close(cosine_logits(queries, centres, 4.0), 4.0 * cosine)
    learned = Distance("cosine", temperature=4.0)
    torch.testing.assert_close(learned(queries, centres), 4.0 * cosine)
    learned(queries, centres).sum().backward()
    assert learned.log_scale.grad is not None  # the temperature is trained


def test_mean_and_ci95_use_the_sample_standard_deviation() -> None:
    values = torch.tensor([0.2, 0.6, 0.8, 1.0])
    mean, half = mean_and_ci95(values)
    assert mean == pytest.approx(0.65)
    assert half == pytest.approx(1.96 * values.double().std(unbiased=True).item() / 2.0)
    assert math.isnan(mean_and_ci95(torch.tensor([0.5]))[1])


def test_episode_logits_come_from_the_embedded_support_and_query() -> None:
    torch.manual_seed(0)
    module = ProtoNetModule(
        {"name": "small_cnn", "weights": "none", "image_size": 16},
        {"_target_": "torch.optim.AdamW", "_partial_": True},
        projection_dim=8,
        feature_cache=False,
    ).eval()
    support, query = torch.randn(6, 3, 16, 16), torch.randn(4, 3, 16, 16)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.no_grad():
        logits = module.logits(support, labels, query, 3)
        z_support, z_query = module.embed(support), module.embed(query)
    centres = torch.stack([z_support[labels == c].mean(0) for c in range(3)])
    torch.testing.assert_close(logits, -(torch.cdist(z_query, centres) ** 2), atol=1e-4, rtol=1e-4)
    # cached features (2-D) skip the backbone, not the projection
    features = module.backbone(support)
    torch.testing.assert_close(module.embed(features), z_support)
    assert set(module.trainable_parts()) == {"projection"}
    assert not any(p.requires_grad for p in module.backbone.parameters())


@pytest.fixture(scope="module")
def fewshot_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One real training run: frozen backbone on the feature cache, worker processes as shipped."""
    work = tmp_path_factory.mktemp("protonet")
    data = make_fewshot_folder(work / "data", num_classes=14, per_class=8)
    run_dir = work / "run"
    result = run_cli(
        "transferlab.train",
        *FEWSHOT_OVERRIDES,
        f"data.root={data}",
        "trainer.max_epochs=3",
        f"hydra.run.dir={run_dir}",
        cwd=work,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, data, result.stdout + result.stderr


def test_protonet_trains_and_reports_accuracy_with_ci_and_the_baseline(
    fewshot_run: tuple[Path, Path, str],
) -> None:
    run_dir, _, output = fewshot_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for prefix in ("test", "test/3way_1shot", "test/3way_2shot"):
        for name in ("acc", "acc_ci95", "baseline_acc", "baseline_acc_ci95"):
            assert 0.0 <= metrics[f"{prefix}/{name}"] <= 1.0, (prefix, name)
    assert metrics["test/acc"] == metrics["test/3way_1shot/acc"]
    assert metrics["test/baseline_acc"] == metrics["test/3way_1shot/baseline_acc"]
    assert {"val/acc", "val/acc_ci95", "val/acc_best", "train/loss"} <= set(metrics)
    # every test episode counted once, for each setting
    assert metrics["test/3way_1shot/episodes"] == metrics["test/3way_2shot/episodes"] == 12
    assert re.search(r"Test 3way_2shot over 12 episodes: accuracy [\d.]+ \+- [\d.]+", output)
    # training lowered the episode loss
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        losses = [float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")]
    assert len(losses) == 3 and losses[-1] < losses[0]
    # the class split is recorded and class-disjoint
    split = json.loads((run_dir / "split.json").read_text())
    names = [name for part in split["classes"].values() for name in part]
    assert len(names) == len(set(names)) == 14
    # episodes ran on cached features: one file per split
    assert len(list((run_dir.parent / ".cache" / "features").glob("*.npy"))) == 3
    module = load_module_from_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    assert isinstance(module, ProtoNetModule) and module.class_names is None


def test_fewshot_cli_classifies_with_a_trained_protonet(
    fewshot_run: tuple[Path, Path, str], tmp_path: Path
) -> None:
    run_dir, data, _ = fewshot_run
    support, query = tmp_path / "support", tmp_path / "query"
    classes = ["c01", "c05", "c09"]
    for name in classes:
        (support / name).mkdir(parents=True)
        for i in range(3 if name != "c05" else 1):  # unequal shots are allowed
            shutil.copy(data / name / f"{i}.png", support / name / f"{i}.png")
        (query / "nested" / name).mkdir(parents=True)
        for i in range(5, 8):
            shutil.copy(data / name / f"{i}.png", query / "nested" / name / f"{i}.png")
    output = tmp_path / "predictions.csv"
    result = run_cli(
        "transferlab.fewshot",
        f"support={support}",
        f"query={query}",
        f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}",
        f"output={output}",
        f"hydra.run.dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Support: 3 classes, 7 images" in result.stdout
    with output.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and list(rows[0]) == ["path", "predicted_class", "probability"]
    correct = sum(Path(row["path"]).parent.name == row["predicted_class"] for row in rows)
    assert correct >= 8, rows
    assert all(0.0 < float(row["probability"]) <= 1.0 for row in rows)


def test_a_protonet_checkpoint_fits_few_shot_data_only(fewshot_run: tuple[Path, Path, str]) -> None:
    from transferlab.errors import UserError
    from transferlab.strategies import FineTuneClassifier
    from transferlab.strategies.loading import read_checkpoint
    from transferlab.utils.checkpoint_match import check_checkpoint_matches

    path = fewshot_run[0] / "checkpoints" / "last.ckpt"
    checkpoint, module = read_checkpoint(path), load_module_from_checkpoint(path)
    check_checkpoint_matches(checkpoint, module, None, path, purpose="resumed")  # few-shot data: no classes
    classifier = FineTuneClassifier(
        {"name": "small_cnn", "weights": "none"},
        ["a", "b"],
        {"_target_": "torch.optim.AdamW", "_partial_": True},
    )
    with pytest.raises(UserError, match=r"holds a transferlab.strategies.protonet.ProtoNetModule"):
        check_checkpoint_matches(checkpoint, classifier, ["a", "b"], path, purpose="resumed")


@pytest.mark.parametrize(
    ("entry_point", "pointer"),
    [
        ("transferlab.eval", r"transferlab-train data=fewshot .* model=protonet train=false ckpt_path=/"),
        ("transferlab.export", r"transferlab-extract ckpt_path=\S+ input=IMAGES"),
    ],
)
def test_eval_and_export_of_a_protonet_checkpoint_say_what_to_run_instead(
    entry_point: str, pointer: str, fewshot_run: tuple[Path, Path, str], tmp_path: Path
) -> None:
    # Both need fixed classes (a test split of classes, logits to export): one line, exit status 2.
    run_dir, data, _ = fewshot_run
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    data_root = [f"data.root={data}"] if entry_point == "transferlab.eval" else []  # export takes no data
    result = run_cli(
        entry_point, f"ckpt_path={checkpoint}", *data_root, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "holds a ProtoNetModule, which has no fixed classes" in line
    assert re.search(pointer, line), line


def test_predict_on_a_protonet_checkpoint_points_to_the_few_shot_command(
    fewshot_run: tuple[Path, Path, str], tmp_path: Path
) -> None:
    from tests.conftest import compose_config
    from transferlab.errors import UserError
    from transferlab.predict import predict

    run_dir, data, _ = fewshot_run
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    cfg = compose_config("predict", [f"ckpt_path={checkpoint}", f"input={data / 'c01'}"], tmp_path)
    with pytest.raises(UserError, match=r"no fixed classes.*transferlab-fewshot ckpt_path=.* support=DIR"):
        predict(cfg)
