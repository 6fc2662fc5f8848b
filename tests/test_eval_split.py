"""Issue 13, point 6: ``transferlab-eval`` tests the split the model was trained with.

The checkpoint records its split (settings and file-list hashes); eval rebuilds that test split from
``data.root`` whatever the current config says, and refuses when the folder changed since training.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST_OVERRIDES, compose_config, make_imagefolder, run_cli
from transferlab.data import ImageFolderDataModule, build_imagefolder_splits
from transferlab.data.base import SPLIT_RECORD_KEY, split_record_from_checkpoint

PRE = {"input_size": 8, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def _csv_metric(path: Path, name: str) -> float:
    with path.open() as handle:
        values = [row[name] for row in csv.DictReader(handle) if row.get(name)]
    assert values, f"{name} not in {path}"
    return float(values[-1])


def _test_files(run_dir: Path) -> list[list]:
    return json.loads((run_dir / "split.json").read_text())["splits"]["test"]


@pytest.fixture(scope="module")
def fold_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run trained on fold 1 of 3 of a class-folder tree (split seed 5); returns (data root, run folder)."""
    base = tmp_path_factory.mktemp("eval_split")
    root = make_imagefolder(base / "flat", {"": 12})  # root/<class>/*.png: transferlab splits it
    run_dir = base / "train_run"
    result = run_cli(
        "transferlab.train",
        *FAST_OVERRIDES,
        f"data.root={root}",
        "data.num_folds=3",
        "data.fold=1",
        "data.split_seed=5",
        f"hydra.run.dir={run_dir}",
        cwd=base,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root, run_dir


def _eval(ckpt: Path, root: Path, out: Path, *extra: str):
    # The README's command: the default data config, only data.root given.
    return run_cli(
        "transferlab.eval",
        f"ckpt_path={ckpt}",
        f"data.root={root}",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={out}",
        *extra,
        cwd=out.parent,
    )


def test_eval_scores_the_test_split_of_training(fold_run: tuple[Path, Path], tmp_path: Path) -> None:
    root, run_dir = fold_run
    result = _eval(run_dir / "checkpoints" / "best.ckpt", root, tmp_path / "eval")
    assert result.returncode == 0, result.stderr[-3000:]
    trained_on = _test_files(run_dir)
    assert _test_files(tmp_path / "eval") == trained_on  # the same test images, not the config's split
    assert trained_on == json.loads((run_dir / "folds.json").read_text())["test"]
    assert _csv_metric(tmp_path / "eval" / "csv" / "metrics.csv", "test/acc") == pytest.approx(
        _csv_metric(run_dir / "csv" / "metrics.csv", "test/acc"), abs=1e-6
    )


def test_eval_refuses_a_folder_that_changed_since_training(
    fold_run: tuple[Path, Path], tmp_path: Path
) -> None:
    root, run_dir = fold_run
    moved = shutil.copytree(root, tmp_path / "moved")  # moving the folder is fine; adding an image is not
    shutil.copy(moved / "circle" / "0.png", moved / "circle" / "extra.png")
    result = _eval(run_dir / "checkpoints" / "best.ckpt", moved, tmp_path / "eval")
    stderr = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and stderr.count("error:") == 1
    assert f"{moved} no longer gives the test split the checkpoint was trained with" in stderr
    assert (
        "1 image added since training: 37 usable images now, 36 then (per class: circle 13 (was 12))"
        in stderr
    )
    assert "Restore the images as they were for training, or pass split_from_checkpoint=false" in stderr


def test_checkpoint_without_a_record_warns_and_uses_the_config(
    fold_run: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transferlab.eval import evaluate

    root, run_dir = fold_run
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert split_record_from_checkpoint(checkpoint)["settings"]["fold"] == 1
    del checkpoint["ImageFolderDataModule"]  # as saved before splits were recorded
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    cfg = compose_config(
        "eval",
        [f"ckpt_path={old}", f"data.root={root}", "data.num_workers=0", "trainer.accelerator=cpu"],
        tmp_path,
    )
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        metrics, objects = evaluate(cfg)
    assert "holds no record of its data split" in caplog.text and "test/acc" in metrics
    config_split = build_imagefolder_splits(root)  # data.num_folds=null, split_seed=0: the config's split
    assert objects["datamodule"].test_set.samples == config_split.test.samples


def test_resuming_onto_another_split_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_imagefolder(tmp_path / "flat", {"": 6}, size=8)
    trained = ImageFolderDataModule(str(root), preprocessing=PRE, num_workers=0, split_seed=1)
    trained.setup("fit")
    state = trained.state_dict()
    assert set(state) == {SPLIT_RECORD_KEY}
    same = ImageFolderDataModule(str(root), preprocessing=PRE, num_workers=0, split_seed=1)
    other = ImageFolderDataModule(str(root), preprocessing=PRE, num_workers=0, split_seed=2)
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        for dm in (same, other):
            dm.setup("fit")
            dm.load_state_dict(state)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # only the other seed's
    assert "split is not the one the checkpoint was trained with" in warnings[0]
    assert "the same images split with other settings: data.split_seed=2 (was 1)" in warnings[0]
