"""Scaling up: trainer configs (GPU, DDP), mixed precision, channels_last, torch.compile, DDP on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import open_dict, read_write

from benchmarks._target import BELOW_TARGET
from tests.conftest import CONF_DIR, FAST_OVERRIDES, compose_config, run_cli
from transferlab.callbacks import PerformanceTuning
from transferlab.train import train
from transferlab.utils import distributed

# Strategies that need other data run under ddp_sim in their own tests: two-domain ones
# (data=domain_adaptation) in tests/test_dann_train.py, model=protonet (data=fewshot) in
# tests/test_protonet_ddp.py.
OTHER_DATA_MODELS = {"dann", "source_only", "protonet"}
MODELS = sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml") if p.stem not in OTHER_DATA_MODELS)


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_gpu_config_picks_the_mixed_precision_the_device_supports(
    bf16: bool, expected: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("gpu", "ddp"):
        cfg = compose_config("train", [f"trainer={name}"], tmp_path / name)
        assert cfg.trainer.accelerator == "gpu"
        _fake_cuda(monkeypatch, bf16)
        assert instantiate(cfg.trainer.precision) == expected
        monkeypatch.undo()
    assert distributed.mixed_precision() == "16-mixed" or torch.cuda.is_available()


def test_gpu_config_builds_a_trainer_with_cpu_swapped_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The same file as on a GPU machine; only the accelerator is swapped (CPU runs bf16-mixed, not 16-mixed).
    cfg = compose_config("train", ["trainer=gpu", "trainer.accelerator=cpu"], tmp_path)
    _fake_cuda(monkeypatch, bf16=True)
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert trainer.precision == "bf16-mixed"


def _set_mode(cfg, mode: str) -> None:
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = mode
    HydraConfig().set_config(cfg)


def test_ddp_config_spawns_inside_a_multirun_and_uses_popen_otherwise(tmp_path: Path) -> None:
    cfg = compose_config("train", ["trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4"], tmp_path)
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (2, 4)
    for mode, expected in (("RUN", "popen"), ("MULTIRUN", "spawn")):
        _set_mode(cfg, mode)
        strategy = instantiate(cfg.trainer.strategy)
        assert isinstance(strategy, DDPStrategy)
        assert strategy._start_method == expected, mode
    # the CPU simulation always spawns, and talks over gloo
    sim = compose_config("train", ["trainer=ddp_sim"], tmp_path / "sim")
    strategy = instantiate(sim.trainer.strategy)
    assert (strategy._start_method, strategy.process_group_backend) == ("spawn", "gloo")
    assert (sim.trainer.accelerator, sim.trainer.devices) == ("cpu", 2)


def test_ddp_node_count_comes_from_slurm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "3")
    cfg = compose_config("train", ["trainer=ddp"], tmp_path)
    assert cfg.trainer.num_nodes == 3


def test_bf16_mixed_runs_on_cpu(train_config) -> None:
    cfg = train_config("debug=fast", "trainer.precision=bf16-mixed")
    metrics, objects = train(cfg)
    assert objects["trainer"].precision == "bf16-mixed"
    assert "test/acc" in metrics


class BatchFormatRecorder(L.Callback):
    """Records whether each training batch reached the model in channels_last format."""

    def __init__(self) -> None:
        self.channels_last: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.channels_last.append(batch[0].is_contiguous(memory_format=torch.channels_last))


def _callback(trainer: L.Trainer, kind: type) -> L.Callback:
    return next(c for c in trainer.callbacks if isinstance(c, kind))


def test_channels_last_converts_model_and_batches(train_config) -> None:
    cfg = train_config(
        "debug=fast",
        "callbacks.performance.channels_last=true",
        "+callbacks.recorder._target_=tests.test_scale.BatchFormatRecorder",
    )
    metrics, objects = train(cfg)
    trainer, model = objects["trainer"], objects["model"]
    assert _callback(trainer, PerformanceTuning).channels_last
    assert _callback(trainer, BatchFormatRecorder).channels_last == [True]
    conv_weights = [p for p in model.parameters() if p.dim() == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    assert "test/acc" in metrics


def _compiled_run(train_config, *extra: str) -> tuple[dict, object, float]:
    cfg = train_config("debug=fast", "callbacks.performance.compile=true", *extra)
    start = time.perf_counter()
    metrics, objects = train(cfg)
    return metrics, objects["model"], time.perf_counter() - start


def test_compile_wraps_the_forward_pass(train_config) -> None:
    # the eager backend goes through torch.compile's graph capture without generating C++: fast
    metrics, model, _ = _compiled_run(train_config, "+callbacks.performance.compile_kwargs.backend=eager")
    assert model._compiled_call_impl is not None
    assert not any(k.startswith("_orig_mod") for k in model.state_dict())  # checkpoints keep their keys
    assert "test/acc" in metrics


@pytest.mark.slow
def test_compile_with_inductor_runs_a_step(train_config) -> None:
    metrics, model, seconds = _compiled_run(train_config)
    assert model._compiled_call_impl is not None
    assert "test/acc" in metrics, seconds


def _metric_names(run_dir: Path) -> set[str]:
    return set(json.loads((run_dir / "metrics.json").read_text()))


# Seen once in about 20 runs on 2 loaded cores: a gloo worker process aborts in C++ while exiting after
# fit ("terminate called without an active exception"), a teardown race below Lightning and transferlab.
# Only that exact crash is retried, once, in a fresh folder, and the retry is reported as a warning.
UPSTREAM_EXIT_CRASH = "terminate called without an active exception"


def _run_ddp_sim(overrides: list[str], tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess]:
    for attempt in range(2):
        work = tmp_path / f"ddp{attempt}"
        work.mkdir()
        result = run_cli("transferlab.train", *overrides, "trainer=ddp_sim", cwd=work)
        if result.returncode == 0 or UPSTREAM_EXIT_CRASH not in result.stderr:
            break
        warnings.warn(f"ddp_sim worker crashed at exit ({UPSTREAM_EXIT_CRASH}); retrying once", stacklevel=2)
    return work, result


# slow: the fast suite runs fine-tuning under ddp_sim in test_sampling_ddp.py, with the same folder checks
@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_ddp_sim_run_matches_a_single_process_run(
    model: str, train_config, tiny_data: Path, tmp_path: Path
) -> None:
    overrides = [*FAST_OVERRIDES, f"data.root={tiny_data}", f"model={model}", "trainer.max_epochs=2"]
    single = train_config(f"model={model}", "trainer.max_epochs=2", output_dir=tmp_path / "single")
    train(single)

    work, result = _run_ddp_sim(overrides, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stderr + result.stdout
    runs = list((work / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1, runs  # rank 0 only: one run folder, nothing else written
    assert {p.name for p in work.iterdir()} <= {"logs", ".cache"}
    assert _metric_names(runs[0]) == _metric_names(tmp_path / "single")
    assert (runs[0] / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.slow
def test_single_ddp_run_with_the_popen_launcher_writes_one_folder(tiny_data: Path, tmp_path: Path) -> None:
    # trainer=ddp outside a multirun re-runs the command once per extra rank (popen): same CPU path here.
    overrides = [
        *FAST_OVERRIDES,
        f"data.root={tiny_data}",
        "trainer=ddp_sim",
        "trainer.strategy.start_method=popen",
    ]
    result = run_cli("transferlab.train", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1, runs
    assert {p.name for p in tmp_path.iterdir()} <= {"logs", ".cache"}
    assert (runs[0] / "metrics.json").is_file() and (runs[0] / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_multirun_of_ddp_sim_runs_finishes(tiny_data: Path, tmp_path: Path) -> None:
    # Each job starts 2 processes; with Lightning's popen launcher they would re-run `-m ...` (the sweep).
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "transferlab.train", "-m", *FAST_OVERRIDES, f"data.root={tiny_data}"]
    command += ["trainer=ddp_sim", "model.lr=0.001,0.01", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["0", "1"]  # no extra jobs or folders from re-entered sweeps
    assert all((tmp_path / "sweep" / job / "metrics.json").is_file() for job in jobs)
    assert json.loads((tmp_path / "sweep" / "summary.json").read_text())["metrics"]["val/acc_best"]["n"] == 2
    assert not (tmp_path / "logs").exists()


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_gpu_benchmark_help_and_clear_exit_without_cuda() -> None:
    assert _bench("bench_gpu_amp.py", "--help").returncode == 0
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = _bench("bench_gpu_amp.py")
    assert result.returncode == 3 and "no CUDA GPU" in result.stderr


def test_gpu_benchmark_code_path_runs_on_cpu() -> None:
    # bf16 autocast on the CPU, tiny sizes; torch.compile is covered by test_compile_* above
    args = ["--allow-cpu", "--backbone=small_cnn", "--image-size=16", "--batch-size=4", "--steps=3"]
    result = _bench("bench_gpu_amp.py", *args, "--warmup=1", "--rounds=1", "--variants=plain,channels_last")
    assert result.returncode in (0, BELOW_TARGET), result.stderr[-3000:]  # below target is not an error
    assert result.stdout.count("| **") == 2
