"""``transferlab-export``: ONNX and TorchScript models that compute what the trained module computes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import CLASSES, FAST_OVERRIDES, compose_config, run_cli
from transferlab.data import build_eval_transform, load_rgb
from transferlab.export import TORCHSCRIPT_NOTICE, export, export_model, sidecar_path
from transferlab.strategies import FineTuneClassifier, load_module_from_checkpoint
from transferlab.train import train

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def checkpoint(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.ckpt of a one-epoch small_cnn run on the tiny shapes data."""
    out = tmp_path_factory.mktemp("export_train")
    cfg = compose_config("train", [*FAST_OVERRIDES, f"data.root={tiny_data}", "logger=csv"], out)
    train(cfg)
    return out / "checkpoints" / "best.ckpt"


def _real_batch(tiny_data: Path, preprocessing: dict) -> torch.Tensor:
    """Four test images prepared as the sidecar says (the way a deployment would)."""
    transform = build_eval_transform({k: v for k, v in preprocessing.items() if k != "resize_size"})
    files = sorted((tiny_data / "test").rglob("*.png"))[:4]
    return torch.stack([transform(load_rgb(path)) for path in files])


def _run(fmt: str, path: Path, images: torch.Tensor) -> torch.Tensor:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(np.asarray(session.run(None, {"images": images.numpy()})[0]))
    return torch.jit.load(str(path))(images)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_matches_the_checkpoint(
    fmt: str, checkpoint: Path, tiny_data: Path, tmp_path: Path
) -> None:
    output = tmp_path / "deploy" / f"model.{fmt}"
    cfg = compose_config("export", [f"ckpt_path={checkpoint}", f"format={fmt}", f"output={output}"], tmp_path)
    path, _ = export(cfg)
    assert path == output and output.is_file()
    assert sorted(p.name for p in output.parent.iterdir()) == sorted([output.name, output.name + ".json"])

    sidecar = json.loads(sidecar_path(output).read_text())
    assert sidecar["class_names"] == list(CLASSES)
    assert sidecar["preprocessing"]["input_size"] == 32
    assert sidecar["input"]["shape"] == ["batch", 3, 32, 32]
    assert sidecar["format"] == fmt and sidecar["model_file"] == output.name

    module = load_module_from_checkpoint(checkpoint)
    images = _real_batch(tiny_data, sidecar["preprocessing"])
    with torch.no_grad():
        expected = module(images)
        got = _run(fmt, output, images)
    assert got.shape == (4, len(CLASSES))  # traced with a batch of 2: the batch dimension is dynamic
    torch.testing.assert_close(got, expected, rtol=0, atol=TOLERANCE)


def test_cli_default_output_next_to_the_run(checkpoint: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "transferlab.export",
        f"ckpt_path={checkpoint}",
        "format=torchscript",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        warnings=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "model.pt").is_file()
    # torch's four FutureWarnings about torch.jit become one line of ours
    output = result.stdout + result.stderr
    assert "is deprecated" not in output and output.count(TORCHSCRIPT_NOTICE) == 1
    assert json.loads((run_dir / "model.pt.json").read_text())["class_names"] == list(CLASSES)


def test_unknown_format_is_one_clear_message(checkpoint: Path, tmp_path: Path) -> None:
    from transferlab.errors import UserError

    cfg = compose_config("export", [f"ckpt_path={checkpoint}", "format=tflite"], tmp_path)
    with pytest.raises(UserError, match="onnx, torchscript"):
        export(cfg)


def test_efficientnet_lite0_same_padding_exports_to_onnx(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import onnxruntime  # noqa: F401  (skip nothing: the export extra is part of the dev environment)

    torch.manual_seed(0)
    module = FineTuneClassifier(
        backbone={"name": "efficientnet_lite0", "weights": "none", "image_size": 64},
        class_names=["a", "b", "c"],
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True},
    ).eval()
    # Non-trivial BatchNorm statistics, so a mis-exported normalisation would show.
    with torch.no_grad():
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    output = tmp_path / "lite0.onnx"
    with caplog.at_level(logging.INFO):
        sidecar = export_model(module, module.preprocessing, module.class_names, "onnx", output)
    assert sidecar["input"]["shape"] == ["batch", 3, 64, 64]
    # The exporter's libraries log each graph pass at INFO (about 70 lines); the command shows warnings only.
    chatter = [r for r in caplog.records if r.name.startswith(("onnx_ir", "onnxscript")) and r.levelno < 30]
    assert not chatter, chatter[:3]
    assert logging.getLogger("onnx_ir").level == logging.NOTSET  # restored after the export

    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        expected = module(images)
    torch.testing.assert_close(_run("onnx", output, images), expected, rtol=0, atol=TOLERANCE)
