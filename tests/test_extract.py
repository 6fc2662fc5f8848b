"""``transferlab-extract``: embeddings of a folder, from the pooled features or any named layer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import CLASSES, compose_config, make_imagefolder, run_cli
from transferlab.backbones import build_backbone
from transferlab.data import build_eval_transform, load_rgb
from transferlab.errors import UserError
from transferlab.extract import extract


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder tree of 3 classes x 2 images, 24 px."""
    return make_imagefolder(tmp_path_factory.mktemp("extract_data"), {"test": 2}) / "test"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small_cnn state dict file, so the test process and the CLI use the same weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("extract_weights") / "small_cnn.pt"
    torch.save(build_backbone("small_cnn", weights="none").state_dict(), path)
    return path


def test_cli_writes_paths_labels_and_pooled_features(images: Path, weights: Path, tmp_path: Path) -> None:
    output = tmp_path / "out" / "features.pt"
    result = run_cli(
        "transferlab.extract",
        f"input={images}",
        "backbone=small_cnn",
        f"backbone.weights={weights}",
        "batch_size=4",  # 6 images: two batches, the last one partial
        f"output={output}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in output.parent.iterdir()] == ["features.pt"]  # no temporary file left

    saved = torch.load(output, weights_only=True)
    assert saved["class_names"] == list(CLASSES)
    assert saved["features"].shape == (6, 32) and saved["features"].dtype == torch.float32
    assert saved["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    assert [Path(p).parent.name for p in saved["paths"]] == [c for c in CLASSES for _ in range(2)]
    assert all(Path(p).is_file() for p in saved["paths"])
    assert saved["layer"] is None
    assert saved["backbone"]["name"] == "small_cnn"
    assert saved["backbone"]["preprocessing"]["input_size"] == 32

    backbone = build_backbone("small_cnn", weights=weights).eval()
    image = build_eval_transform(backbone.preprocessing)(load_rgb(saved["paths"][3]))
    with torch.no_grad():
        expected = backbone(image.unsqueeze(0))[0]
    torch.testing.assert_close(saved["features"][3], expected, rtol=1e-5, atol=1e-6)


def _extract(images: Path, tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_config("extract", [f"input={images}", "backbone=small_cnn", *overrides], tmp_path / "run")
    result, output = extract(cfg)
    assert output == tmp_path / "run" / "features.pt"
    return result


def test_named_layer_gives_its_pooled_channels(images: Path, weights: Path, tmp_path: Path) -> None:
    result = _extract(images, tmp_path, f"backbone.weights={weights}", "layer=body.block2")
    assert result["layer"] == "body.block2"
    assert result["features"].shape == (6, 16)  # block2 has 16 channels

    # The same layer flattened: 16 channels x 16 x 16 (block2 halves the 32 px input).
    flat = _extract(images, tmp_path, f"backbone.weights={weights}", "layer=body.block2", "pool=flatten")
    assert flat["features"].shape == (6, 16 * 16 * 16)
    torch.testing.assert_close(flat["features"].view(6, 16, -1).mean(dim=2), result["features"])


def test_checkpoint_backbone_is_used(images: Path, train_config, tmp_path: Path) -> None:
    from transferlab.strategies import load_module_from_checkpoint
    from transferlab.train import train

    cfg = train_config(output_dir=tmp_path / "train")
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    # backbone.* is ignored when ckpt_path is set: an unavailable backbone config would fail otherwise.
    result = _extract(images, tmp_path, f"ckpt_path={ckpt}", "backbone.weights=imagenet")
    assert result["backbone"]["ckpt_path"] == str(ckpt)
    backbone = load_module_from_checkpoint(ckpt).backbone
    image = build_eval_transform(backbone.preprocessing)(load_rgb(result["paths"][0]))
    with torch.no_grad():
        expected = backbone(image.unsqueeze(0))[0]
    torch.testing.assert_close(result["features"][0], expected, rtol=1e-5, atol=1e-6)


def test_flat_folder_is_unlabelled(images: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for index, path in enumerate(sorted(images.rglob("*.png"))):
        shutil.copy(path, flat / f"{index}.png")
    result = _extract(flat, tmp_path)
    assert result["labels"].tolist() == [-1] * 6
    assert result["class_names"] == []
    assert result["features"].shape == (6, 32)


def test_split_tree_asks_for_one_split(images: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="point input at one of them"):
        _extract(images.parent, tmp_path)


def test_bad_layer_name_is_one_clear_message(images: Path, tmp_path: Path) -> None:
    result = run_cli(
        "transferlab.extract",
        f"input={images}",
        "backbone=small_cnn",
        "layer=body.blok2",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "layer='body.blok2'" in result.stderr
    assert "body.block2" in result.stderr  # a valid name is suggested
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "features.pt").exists()
