"""DANN and source-only trained through the real config and command line on two tiny domains."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

import transferlab.train
from tests.conftest import FAST_OVERRIDES, compose_config, make_imagefolder, run_cli
from tests.helpers.sampling import make_tests_importable, read_recorded
from tests.test_domain_data import make_target, shuffle_class_folders
from tests.test_scale import UPSTREAM_EXIT_CRASH
from transferlab.optim.dann_schedule import reversal_coefficient
from transferlab.train import train

# FAST_OVERRIDES with the two-domain data module, its worker processes on (the shipped default).
DOMAIN_OVERRIDES = [
    *("data=domain_adaptation" if o == "data=imagefolder" else o for o in FAST_OVERRIDES),
    "data.num_workers=2",
    "data.batch_size=6",
]
TWO_DOMAIN_METRICS = {
    "val/source_acc",
    "val/target_acc",
    "test/source_acc",
    "test/target_acc",
    "test/forgetting",
    "test/a_distance",
    "oracle_selection",
}
DANN_METRICS = {"train/lambda", "train/domain_loss", "train/domain_acc"}


@pytest.fixture(scope="module")
def domains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A pre-split source of shapes and a flat target of inverted shapes (plus variants of the target)."""
    base = tmp_path_factory.mktemp("domains")
    source = make_imagefolder(base / "source", {"train": 8, "val": 3, "test": 3})
    target = make_target(base / "target", per_class=8)
    return {
        "source": source,
        "target": target,
        "shuffled": shuffle_class_folders(target, base / "shuffled"),
        "images": make_target(base / "images", per_class=8, flat_images=True),
    }


def _config(domains: dict[str, Path], tmp_path: Path, *overrides: str, target: str = "target", name="run"):
    args = [
        *DOMAIN_OVERRIDES,
        f"data.source_root={domains['source']}",
        f"data.target_root={domains[target]}",
        *overrides,
    ]
    return compose_config("train", args, tmp_path / name)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_training_is_bit_identical_when_the_target_class_folders_are_shuffled(
    domains, tmp_path: Path
) -> None:
    runs = {}
    for target in ("target", "shuffled"):
        cfg = _config(domains, tmp_path, "model=dann", "trainer.max_epochs=2", target=target, name=target)
        metrics, _ = train(cfg)
        runs[target] = (metrics, Path(cfg.paths.output_dir))
    expected, got = _weights(runs["target"][1]), _weights(runs["shuffled"][1])
    assert expected.keys() == got.keys()
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []
    # Same images in the same splits, with other labels (which only evaluation sees).
    splits = [json.loads((run / "target_split.json").read_text())["splits"] for _, run in runs.values()]
    names = [{k: [Path(p).name for p, _ in v] for k, v in split.items()} for split in splits]
    assert names[0] == names[1]
    assert [y for _, y in splits[0]["test"]] != [y for _, y in splits[1]["test"]]


def test_dann_logs_its_metrics_and_selects_on_source_accuracy(domains, tmp_path: Path) -> None:
    metrics, objects = train(_config(domains, tmp_path, "model=dann", "trainer.max_epochs=2"))
    assert set(metrics) >= TWO_DOMAIN_METRICS | DANN_METRICS
    assert metrics["oracle_selection"] == 0.0
    assert metrics["val/acc"] == metrics["val/source_acc"]
    assert metrics["test/acc"] == metrics["test/source_acc"]
    assert metrics["test/forgetting"] == pytest.approx(
        metrics["test/source_acc"] - metrics["test/target_acc"]
    )
    assert 0.0 <= metrics["test/a_distance"] <= 2.0
    # lambda at the last step of the run: p = (total - 1) / total
    total = objects["trainer"].estimated_stepping_batches
    assert metrics["train/lambda"] == pytest.approx(reversal_coefficient((total - 1) / total))


def test_oracle_selection_uses_target_accuracy_and_says_so(domains, tmp_path: Path, caplog) -> None:
    cfg = _config(domains, tmp_path, "model=dann", "model.oracle_selection=true", "test=false")
    metrics, _ = train(cfg)
    assert metrics["oracle_selection"] == 1.0
    assert metrics["val/acc"] == metrics["val/target_acc"]
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["oracle_selection"] == 1.0
    assert "ORACLE model selection" in caplog.text


def test_source_only_trains_with_an_unlabelled_target_folder(domains, tmp_path: Path) -> None:
    metrics, _ = train(_config(domains, tmp_path, "model=source_only", target="images"))
    assert {"val/source_acc", "test/source_acc", "test/a_distance"} <= set(metrics)
    assert not {"val/target_acc", "test/target_acc", "test/forgetting"} & set(metrics)
    assert not DANN_METRICS & set(metrics)


def _lambdas(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return {int(r["step"]): float(r["train/lambda"]) for r in csv.DictReader(handle) if r["train/lambda"]}


def test_resumed_run_continues_the_lambda_schedule(domains, tmp_path: Path) -> None:
    same = ["model=dann", "trainer.max_epochs=4", "trainer.log_every_n_steps=1", "test=false"]
    stop = ["+callbacks.stop._target_=tests.test_train.StopAfterEpoch", "+callbacks.stop.epoch=1"]
    first = _config(domains, tmp_path, *same, *stop, name="first")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    steps_done = torch.load(last, weights_only=True)["global_step"]
    resumed = _config(domains, tmp_path, *same, f"ckpt_path={last}", name="resumed")
    _, objects = train(resumed)
    total = objects["trainer"].estimated_stepping_batches
    assert steps_done == total // 2
    before, after = _lambdas(Path(first.paths.output_dir)), _lambdas(Path(resumed.paths.output_dir))
    assert max(before) < min(after)
    # each logged lambda is the formula at p = (optimizer steps done before that step) / total steps
    # in the resumed run as in the first: the schedule continues where it stopped, not from 0
    for logged in (before, after):
        for step, value in logged.items():
            assert value == pytest.approx(reversal_coefficient(step / total)), step
    assert after[min(after)] == pytest.approx(reversal_coefficient(steps_done / total))


def _train_in_process(monkeypatch, capsys, tmp_path: Path, *overrides: str) -> str:
    monkeypatch.setattr(sys, "argv", ["transferlab-train", f"hydra.run.dir={tmp_path / 'run'}", *overrides])
    GlobalHydra.instance().clear()
    try:
        with pytest.raises(SystemExit) as info:
            transferlab.train.main()
    finally:
        GlobalHydra.instance().clear()
    stderr = capsys.readouterr().err
    assert info.value.code == 2, stderr
    assert "Traceback" not in stderr and stderr.count("error:") == 1
    return " ".join(stderr.split())


def test_bad_target_input_is_one_line_and_exit_status_2(domains, monkeypatch, capsys, tmp_path: Path) -> None:
    base = [*DOMAIN_OVERRIDES, "model=dann", f"data.source_root={domains['source']}"]
    missing = tmp_path / "nowhere"
    stderr = _train_in_process(monkeypatch, capsys, tmp_path, *base, f"data.target_root={missing}")
    assert f"Target data root not found: {missing}" in stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    stderr = _train_in_process(monkeypatch, capsys, tmp_path, *base, f"data.target_root={empty}")
    assert f"Target data root {empty} holds no image files" in stderr
    stderr = _train_in_process(monkeypatch, capsys, tmp_path, *base, "data.target_root=")
    assert "data.target_root is not set" in stderr


@pytest.mark.slow  # the same check runs in-process in tests/test_domain_data.py
def test_class_mismatch_through_the_command_line(domains, tmp_path: Path) -> None:
    mismatched = make_target(tmp_path / "mismatched", per_class=2)
    (mismatched / "cross").rename(mismatched / "plus")
    overrides = [*DOMAIN_OVERRIDES, "model=dann", f"data.source_root={domains['source']}"]
    result = run_cli("transferlab.train", *overrides, f"data.target_root={mismatched}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    error = " ".join(result.stderr.split())
    assert error.count("error:") == 1
    assert "only in the source" in error and "['cross']" in error and "['plus']" in error


def test_multirun_compares_source_only_and_dann(domains, tmp_path: Path) -> None:
    overrides = [
        *DOMAIN_OVERRIDES,
        f"data.source_root={domains['source']}",
        f"data.target_root={domains['target']}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    result = run_cli("transferlab.train", "-m", "model=source_only,dann", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    jobs = {next(iter(job["overrides"])): job["metrics"] for job in summary["jobs"]}
    assert set(jobs) == {"model=source_only", "model=dann"}
    for name, metrics in jobs.items():
        assert set(metrics) >= TWO_DOMAIN_METRICS, name
    assert set(jobs["model=dann"]) >= DANN_METRICS and not DANN_METRICS & set(jobs["model=source_only"])
    assert summary["metrics"]["test/target_acc"]["n"] == 2


def _ddp_sim(domains: dict[str, Path], tmp_path: Path, model: str, *extra: str) -> Path:
    overrides = [
        *DOMAIN_OVERRIDES,  # loader workers on, as shipped
        f"data.source_root={domains['source']}",
        f"data.target_root={domains['target']}",
        f"model={model}",
        "trainer=ddp_sim",
        *extra,
    ]
    for attempt in range(2):  # see tests/test_scale.py: one retry of gloo's rare crash at exit
        work = tmp_path / f"ddp{attempt}"
        work.mkdir()
        result = run_cli("transferlab.train", *overrides, cwd=work)
        if result.returncode == 0 or UPSTREAM_EXIT_CRASH not in result.stderr:
            break
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stderr + result.stdout
    runs = list((work / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_dann_trains_under_ddp_sim_and_ranks_share_each_source_epoch(
    domains, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tests_importable(monkeypatch)
    seen = tmp_path / "seen"
    recorder = "+callbacks.index_recorder"
    run = _ddp_sim(
        domains,
        tmp_path,
        "dann",
        "trainer.max_epochs=2",
        f"{recorder}._target_=tests.helpers.sampling.IndexRecorder",
        f"{recorder}.folder={seen}",
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= TWO_DOMAIN_METRICS | DANN_METRICS
    assert (run / "checkpoints" / "best.ckpt").is_file()
    source_train = 3 * 8  # make_imagefolder: 8 training images in each of 3 classes
    for epoch in (0, 1):  # what each rank was actually fed: together, every source image once
        ranks = [read_recorded(seen, rank, epoch) for rank in (0, 1)]
        assert sorted(ranks[0] + ranks[1]) == list(range(source_train)), f"epoch {epoch}: {ranks}"
        assert len(ranks[0]) == len(ranks[1]) == source_train // 2


@pytest.mark.slow
def test_source_only_trains_under_ddp_sim(domains, tmp_path: Path) -> None:
    run = _ddp_sim(domains, tmp_path, "source_only")
    assert set(json.loads((run / "metrics.json").read_text())) >= TWO_DOMAIN_METRICS
