"""Multiruns through the real CLI: a grid, an Optuna search, parallel jobs, SLURM job rendering, summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import submitit
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import FAST_OVERRIDES, compose_config, run_cli
from transferlab.train import _flat_config, train
from transferlab.utils.hparams import log_final_hparams
from transferlab.utils.hydra_callbacks import MultirunSummary, read_jobs, summarize


def _sweep(tiny_data: Path, cwd: Path, *args: str):
    cwd.mkdir(parents=True, exist_ok=True)
    # -m goes first: Hydra's parser takes the overrides as one trailing list
    result = run_cli("transferlab.train", *args, *FAST_OVERRIDES, f"data.root={tiny_data}", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())


def test_multirun_jobs_share_one_folder_with_tensorboard_and_summary(tiny_data: Path, tmp_path: Path) -> None:
    # a k-fold cross-validation is the typical basic multirun: one job per fold, mean ± std at the end
    result = _sweep(tiny_data, tmp_path, "-m", "data.num_folds=2", "data.fold=0,1")
    # the default sweep folder: logs/train/multiruns/<timestamp>/<job number>
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    jobs = _job_dirs(sweep_dir)
    assert [j.name for j in jobs] == ["0", "1"]
    for job in jobs:  # one `tensorboard --logdir <sweep dir>` sees both
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))
        assert (job / "folds.json").is_file()

    summary = json.loads((sweep_dir / "summary.json").read_text())
    best = summary["metrics"]["val/acc_best"]
    values = [json.loads((j / "metrics.json").read_text())["val/acc_best"] for j in jobs]
    assert best["n"] == 2 and best["min"] == min(values) and best["max"] == max(values)
    assert best["mean"] == pytest.approx(sum(values) / 2)
    assert sorted(o for job in summary["jobs"] for o in job["overrides"] if o.startswith("data.fold")) == [
        "data.fold=0",
        "data.fold=1",
    ]
    assert f"val/acc_best: {best['mean']:.4f} ± {best['std']:.4f} over 2 jobs" in result.stdout


def test_optuna_search_maximizes_the_returned_metric(tiny_data: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "optuna"
    _sweep(
        tiny_data,
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep_dir}",
    )
    jobs = _job_dirs(sweep_dir)
    assert len(jobs) == 2
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    values = [json.loads((j / "metrics.json").read_text())["val/acc_best"] for j in jobs]
    assert isinstance(results.best_value, float)
    assert results.best_value == pytest.approx(max(values))
    assert set(results.best_params) >= {"model.lr", "model.trainable_blocks"}
    assert (sweep_dir / "summary.json").is_file()


def test_optuna_config_composes_with_tpe_and_maximize(tmp_path: Path) -> None:
    cfg = compose_config("train", ["hparams_search=optuna"], tmp_path)
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize" and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.n_trials > 0 and "model.lr" in sweeper.params
    assert cfg.optimized_metric == "val/acc_best"


def test_feature_extraction_search_space_covers_only_head_settings(tmp_path: Path) -> None:
    overrides = ["model=feature_extraction", "hparams_search=optuna_feature_extraction"]
    cfg = compose_config("train", overrides, tmp_path)
    params = set(cfg.hydra.sweeper.params)
    assert "model.lr" in params and "model.head_hidden_dim" in params
    assert all(name.removeprefix("model.") in cfg.model for name in params)  # options of that model only
    assert cfg.hydra.sweeper.direction == "maximize"


def test_joblib_launcher_runs_jobs_in_parallel_processes_with_loader_workers(
    tiny_data: Path, tmp_path: Path
) -> None:
    # The README's command with the shipped data.num_workers=2: each job (a loky worker process) starts
    # loader worker processes of its own. The pool is shut down when the command ends: idle workers that
    # linger (300 s) hold the output pipe, so the capture would run into the timeout.
    sweep_dir = tmp_path / "joblib"
    result = run_cli(
        "transferlab.train",
        "-m",
        "hydra/launcher=parallel",
        "seed=1,2",
        *FAST_OVERRIDES,
        "data.num_workers=2",
        f"data.root={tiny_data}",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    assert "pickle error" not in result.stderr
    jobs = _job_dirs(sweep_dir)
    assert len(jobs) == 2
    for job in jobs:
        assert OmegaConf.load(job / ".hydra" / "config.yaml").data.num_workers == 2
        assert (job / "metrics.json").is_file()
    assert json.loads((sweep_dir / "summary.json").read_text())["metrics"]["val/acc_best"]["n"] == 2


def test_slurm_launcher_renders_a_multi_node_sbatch_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    overrides = [
        "hydra/launcher=slurm",
        "trainer=ddp",
        "hydra.launcher.nodes=2",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=90",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    cfg = compose_config("train", overrides, tmp_path / "job")
    launcher_cfg = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher_cfg["tasks_per_node"] == 4  # one process per GPU

    # The plugin's own launch() builds the executor; map_array (which calls sbatch) is intercepted.
    captured = {}

    def no_submit(self, fn, *iterables):
        captured["executor"] = self
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", no_submit)
    # SlurmExecutor checks that srun exists; this machine has no SLURM
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    assert launcher.launch([["model.lr=0.01"]], initial_job_idx=0) == []
    script = captured["executor"]._executor._make_submission_file_text("python -m transferlab.train", "uid")
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=90",
    ):
        assert line in script, script
    HydraConfig.instance().cfg = None


def test_summary_statistics_over_job_folders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for num, (acc, overrides) in enumerate([(0.5, ["seed=1"]), (0.7, ["seed=2"]), (0.9, ["seed=3"])]):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / "metrics.json").write_text(json.dumps({"val/acc_best": acc, "test/acc": 1.0}))
        OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    (tmp_path / "3").mkdir()  # a job that failed before writing metrics is left out
    jobs = read_jobs(tmp_path)
    stats = summarize(jobs)
    assert stats["val/acc_best"] == pytest.approx({"mean": 0.7, "std": 0.2, "min": 0.5, "max": 0.9, "n": 3})
    assert stats["test/acc"]["std"] == 0.0

    config = OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(tmp_path)}}, "optimized_metric": "val/acc_best"}
    )
    MultirunSummary().on_multirun_end(config)
    assert "val/acc_best: 0.7000 ± 0.2000 over 3 jobs" in capsys.readouterr().out
    assert json.loads((tmp_path / "summary.json").read_text())["jobs"][2]["overrides"] == ["seed=3"]


def test_final_hparams_appear_in_tensorboard_hparams_view(train_config) -> None:
    cfg = train_config("model.lr=0.005")
    metrics, objects = train(cfg)
    log_final_hparams(objects["trainer"].loggers, _flat_config(cfg), metrics)

    events = EventAccumulator(str(Path(cfg.paths.output_dir) / "tensorboard")).Reload()
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert session.session_start_info.hparams["model/lr"].number_value == pytest.approx(0.005)
    assert session.session_start_info.hparams["backbone/name"].string_value == "small_cnn"
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert {"val/acc_best", "test/acc"} <= metric_tags
    # each metric's value in the view is the last point of its scalar series: the final metric
    assert events.Scalars("test/acc")[-1].value == pytest.approx(metrics["test/acc"])
    assert len(events.Scalars("val/acc")) == 1  # nothing was logged twice
