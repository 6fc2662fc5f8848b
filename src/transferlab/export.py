"""``transferlab-export ckpt_path=FILE format=onnx|torchscript [output=FILE]``: a deployable classifier.

The exported model takes normalised images ``(batch, 3, S, S)`` (``S`` = the checkpoint's input size, any
batch size) and returns logits ``(batch, classes)``. A JSON sidecar ``<output>.json`` next to it records
the class names and the preprocessing, so whoever deploys the file knows how to prepare its input. After
writing, the file is run once on a random batch and compared with the PyTorch module.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing, as_preprocessing
from transferlab.strategies.loading import load_module_from_checkpoint, require_fixed_classes
from transferlab.utils.atomic import atomic_path, write_json_atomically
from transferlab.utils.cli import print_config_tree, run_task
from transferlab.utils.paths import CONF_DIR
from transferlab.utils.quick_exit import exit_when_done

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT_NAME, OUTPUT_NAME = "images", "logits"
# Libraries of the ONNX exporter that log each step of their graph passes at INFO (about 70 lines a model).
ONNX_EXPORTER_LOGGERS = ("onnx_ir", "onnxscript")
# Exported and PyTorch logits may differ by float rounding only; more means a wrong export.
TOLERANCE = 1e-4
# Example batch for tracing: 2, not 1, so that no exporter treats the batch dimension as a constant 1.
_TRACE_BATCH = 2
_CHECK_BATCH = 4


class LogitsModel(nn.Module):
    """A trained module's backbone and head as a plain ``nn.Module``: normalised images in, logits out.

    Tracing the LightningModule itself would touch Lightning's machinery (its ``trainer`` property raises
    outside training); the backbone and head are all a deployed model needs.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))


def deployable(model: nn.Module) -> nn.Module:
    """What to trace for ``model``: backbone + head when it has both, else the model itself.

    :func:`export_model` compares the exported file with ``model`` itself, so a strategy whose forward is
    more than ``head(backbone(x))`` fails that check instead of exporting something else silently.
    """
    backbone, head = getattr(model, "backbone", None), getattr(model, "head", None)
    if isinstance(backbone, nn.Module) and isinstance(head, nn.Module):
        return LogitsModel(backbone, head).eval()
    return model.eval()


@contextmanager
def _warnings_only(names: tuple[str, ...]) -> Iterator[None]:
    """Inside the block the loggers ``names`` pass warnings and errors only (levels restored after)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(model: nn.Module, example: Tensor, output: Path) -> None:
    """Write ``model`` as ONNX with a dynamic batch dimension (torch.export based exporter)."""
    _require("onnx", "onnxscript")
    batch = torch.export.Dim("batch", min=1)
    with _warnings_only(ONNX_EXPORTER_LOGGERS):
        torch.onnx.export(
            model,
            (example,),
            str(output),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            # One self-contained file (weights inside, fine below ONNX's 2 GB limit): external data would
            # be named after the temporary file and lost when it is renamed into place.
            external_data=False,
            verbose=False,
        )


TORCHSCRIPT_NOTICE = (
    "format=torchscript: PyTorch deprecates TorchScript (torch.jit.trace, save and load), so a later "
    "release may not load this file; prefer format=onnx for deployment."
)


@contextmanager
def _torch_jit_deprecations_silenced() -> Iterator[None]:
    """Hide torch's FutureWarnings about ``torch.jit``: :data:`TORCHSCRIPT_NOTICE` says it once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def export_torchscript(model: nn.Module, example: Tensor, output: Path) -> None:
    """Write ``model`` as a traced TorchScript module (``torch.jit.load`` reads it, no Python code needed)."""
    log.warning(TORCHSCRIPT_NOTICE)
    # check_trace off: it re-runs the model several times; run_exported() compares outputs afterwards.
    with _torch_jit_deprecations_silenced():
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(output))


def run_onnx(path: Path, images: Tensor) -> Tensor:
    """Logits of the ONNX model at ``path`` computed by onnxruntime."""
    _require("onnxruntime")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    return torch.from_numpy(np.asarray(logits))


def run_torchscript(path: Path, images: Tensor) -> Tensor:
    """Logits of the TorchScript model at ``path``."""
    with _torch_jit_deprecations_silenced():
        return torch.jit.load(str(path), map_location="cpu")(images)


_EXPORTERS: dict[str, tuple[Callable[[nn.Module, Tensor, Path], None], Callable[[Path, Tensor], Tensor]]] = {
    "onnx": (export_onnx, run_onnx),
    "torchscript": (export_torchscript, run_torchscript),
}


def export_model(
    model: nn.Module,
    preprocessing: Preprocessing | dict[str, Any],
    class_names: list[str],
    fmt: str,
    output: str | os.PathLike[str],
    source: str | None = None,
) -> dict[str, Any]:
    """Export a classifier (normalised images -> logits), check it, and write the JSON sidecar.

    Args:
        model: maps ``(B, 3, S, S)`` normalised images to ``(B, len(class_names))`` logits.
        preprocessing: the input the model expects (``S`` = ``input_size``).
        class_names: class names in logit order.
        fmt: ``"onnx"`` or ``"torchscript"``.
        output: the model file to write (its folder is created).
        source: where the model came from (a checkpoint path), recorded in the sidecar.

    Returns:
        The sidecar's content; ``max_abs_diff`` is the largest logit difference to PyTorch on a random
        batch of 4.

    Raises:
        UserError: unknown format, exporter packages missing, or exported outputs that differ from
            PyTorch's by more than :data:`TOLERANCE`.
    """
    if fmt not in _EXPORTERS:
        raise UserError(f"format={fmt!r} is not supported; use one of: {', '.join(_EXPORTERS)}.")
    prep = as_preprocessing(preprocessing)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    traced = deployable(model)
    size = prep.input_size
    write, run = _EXPORTERS[fmt]

    # Written to a temporary file and renamed into place only once it reproduces PyTorch's outputs.
    with atomic_path(output) as tmp:
        with torch.no_grad():
            write(traced, torch.randn(_TRACE_BATCH, 3, size, size), tmp)
            # A batch size other than the traced one proves the batch dimension is dynamic.
            images = torch.randn(_CHECK_BATCH, 3, size, size)
            expected = model(images)
            got = run(tmp, images)
        if got.shape != expected.shape:
            raise UserError(
                f"The exported model returns shape {tuple(got.shape)}, not {tuple(expected.shape)}."
            )
        diff = (got - expected).abs().max().item()
        if not diff <= TOLERANCE:
            raise UserError(
                f"The exported {fmt} model's logits differ from PyTorch's by {diff:.3g} (> {TOLERANCE}); the "
                "export is not faithful. Try the other format."
            )

    sidecar = {
        "format": fmt,
        "model_file": output.name,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, size, size],
            "dtype": "float32",
            "layout": "NCHW, RGB",
            "normalisation": "pixels scaled to [0, 1], then (x - mean) / std per channel",
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(class_names)], "meaning": "logits"},
        "class_names": list(class_names),
        "preprocessing": {**prep.to_dict(), "resize_size": prep.resize_size},
        "source": source,
        "max_abs_diff": diff,
    }
    write_json_atomically(sidecar, sidecar_path(output))
    return sidecar


def sidecar_path(model_file: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of an exported model file: ``model.onnx`` -> ``model.onnx.json``."""
    model_file = Path(model_file)
    return model_file.with_name(model_file.name + ".json")


def export(cfg: DictConfig) -> tuple[Path, dict[str, Any]]:
    """Export the checkpoint ``cfg.ckpt_path`` in ``cfg.format``; return the model file and its sidecar."""
    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise UserError(f"format={fmt!r} is not supported; use one of: {', '.join(FORMATS)}.")
    module = load_module_from_checkpoint(cfg.ckpt_path)
    require_fixed_classes(
        module,
        cfg.ckpt_path,
        "An exported model maps images to one logit per class, so there is nothing to export. Embed images "
        f"with it: transferlab-extract ckpt_path={cfg.ckpt_path} input=IMAGES; classify them: "
        f"transferlab-fewshot ckpt_path={cfg.ckpt_path} support=DIR query=IMAGES.",
    )
    output = Path(cfg.output) if cfg.get("output") else Path(cfg.paths.output_dir) / f"model{FORMATS[fmt]}"
    sidecar = export_model(
        module, module.preprocessing, module.class_names, fmt, output, source=str(cfg.ckpt_path)
    )
    print(
        f"Wrote {fmt} model to {output.resolve()} (max |logit difference| to PyTorch "
        f"{sidecar['max_abs_diff']:.2g}) and its description to {sidecar_path(output).resolve()}"
    )
    return output, sidecar


def _require(*modules: str) -> None:
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"Exporting to ONNX needs {', '.join(missing)}: run `pip install 'transferlab[export]'` "
            "(or `make env`), or use format=torchscript."
        )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    """Console script ``transferlab-export``."""
    print_config_tree(cfg, order=("ckpt_path", "format", "output"))
    run_task(export, cfg)


# the console script: main, then a quick exit (see exit_when_done)
cli = exit_when_done(main)

if __name__ == "__main__":
    cli()
