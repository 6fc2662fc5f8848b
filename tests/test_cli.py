"""The console entry points end to end, as a user runs them: train, then eval, then predict."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import CLASSES, FAST_OVERRIDES, run_cli


def _csv_metric(path: Path, name: str) -> float:
    with path.open() as handle:
        values = [row[name] for row in csv.DictReader(handle) if row.get(name)]
    assert values, f"{name} not in {path}"
    return float(values[-1])


@pytest.fixture(scope="module")
def trained_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("cli") / "train_run"
    result = run_cli(
        "transferlab.train",
        *FAST_OVERRIDES,
        f"data.root={tiny_data}",
        "trainer.max_epochs=2",
        f"hydra.run.dir={run_dir}",
        cwd=run_dir.parent,
        warnings=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backbone" in result.stdout and "small_cnn" in result.stdout  # the config tree
    assert "test/acc" in result.stdout
    assert f"tensorboard --logdir {run_dir}" in result.stdout.replace("\n", "")
    assert "GPU available" in result.stdout + result.stderr  # Lightning's own messages are kept ...
    assert "litlogger" not in result.stdout + result.stderr  # ... but not its advertisement
    assert "LeafSpec" not in result.stderr  # nor a deprecation inside Lightning (warnings on)
    return run_dir


def test_train_run_folder_holds_config_checkpoints_and_logs(trained_run: Path) -> None:
    assert (trained_run / ".hydra" / "config.yaml").is_file()
    assert (trained_run / "checkpoints" / "best.ckpt").is_file()
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert list((trained_run / "tensorboard").glob("events.out.tfevents.*"))
    assert (trained_run / "csv" / "metrics.csv").is_file()


def test_eval_and_predict_agree_with_training(trained_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    # Only the checkpoint travels: the training run folder is gone when eval and predict run.
    ckpt = tmp_path / "model.ckpt"
    shutil.copy(trained_run / "checkpoints" / "best.ckpt", ckpt)
    train_test_acc = _csv_metric(trained_run / "csv" / "metrics.csv", "test/acc")

    eval_dir = tmp_path / "eval"
    result = run_cli(
        "transferlab.eval",
        f"ckpt_path={ckpt}",
        "data=imagefolder",
        f"data.root={tiny_data}",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={eval_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "litlogger" not in result.stdout + result.stderr
    eval_acc = _csv_metric(eval_dir / "csv" / "metrics.csv", "test/acc")
    assert eval_acc == pytest.approx(train_test_acc, abs=1e-6)

    output = tmp_path / "predictions.csv"
    result = run_cli(
        "transferlab.predict",
        f"ckpt_path={ckpt}",
        f"input={tiny_data / 'test'}",
        f"output={output}",
        f"hydra.run.dir={tmp_path / 'predict'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with output.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * len(CLASSES)
    assert set(rows[0]) == {"path", "predicted_class", "probability"}
    assert all(r["predicted_class"] in CLASSES and 0.0 <= float(r["probability"]) <= 1.0 for r in rows)
    predict_acc = sum(Path(r["path"]).parent.name == r["predicted_class"] for r in rows) / len(rows)
    assert predict_acc == pytest.approx(eval_acc, abs=1e-6)


def test_train_false_tests_the_given_checkpoint(trained_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    out = tmp_path / "retest"
    result = run_cli(
        "transferlab.train",
        *FAST_OVERRIDES,
        f"data.root={tiny_data}",
        "train=false",
        f"ckpt_path={ckpt}",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((trained_run / "metrics.json").read_text())
    retested = json.loads((out / "metrics.json").read_text())
    # The training run tested the same best.ckpt on the same test split: the same numbers, to the last digit
    # for the loss, which a freshly built model would not reproduce.
    for name in ("test/acc", "test/loss", "test/f1_macro"):
        assert retested[name] == pytest.approx(trained[name], abs=1e-6), name
    assert not (out / "checkpoints").exists()  # nothing was trained


# In process: that a UserError becomes one line and exit status 2 at the command line is tested once, for
# every entry point, by test_a_required_value_left_unset_is_one_line_and_exit_status_2 and the bad-input
# CLI tests (test_data_errors_cli, test_data_demo_root).
def test_train_false_without_a_checkpoint_is_one_clear_message(train_config) -> None:
    from transferlab.errors import UserError
    from transferlab.train import train

    with pytest.raises(UserError, match=r"(?s)train=false.*ckpt_path="):
        train(train_config("train=false"))


def test_checkpoint_of_another_model_is_one_clear_message(trained_run: Path, train_config) -> None:
    from transferlab.errors import UserError
    from transferlab.train import train

    ckpt = trained_run / "checkpoints" / "best.ckpt"
    # the run was trained with a linear head
    cfg = train_config("model.head_hidden_dim=16", "train=false", f"ckpt_path={ckpt}")
    with pytest.raises(UserError) as error:
        train(cfg)
    message = str(error.value)
    assert "do not fit the model the config builds" in message and "head." in message
    assert "transferlab-eval" in message


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize(
    "entry",
    [
        "transferlab.train",
        pytest.param("transferlab.eval", marks=pytest.mark.slow),  # the same loader as train and predict
        pytest.param("transferlab.predict", marks=pytest.mark.slow),
    ],
)
def test_checkpoint_with_malicious_pickle_is_refused(entry: str, tiny_data: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, bad)
    args = {
        "transferlab.predict": [f"input={tiny_data / 'test'}"],
        "transferlab.eval": ["data=imagefolder", f"data.root={tiny_data}"],
        "transferlab.train": [*FAST_OVERRIDES, f"data.root={tiny_data}"],
    }[entry]
    result = run_cli(entry, f"ckpt_path={bad}", *args, f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "Refusing to load checkpoint" in result.stderr and str(bad) in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


@pytest.mark.slow  # the same path as test_data_demo_root's mistyped-root test, with data=imagefolder
def test_missing_data_root_is_one_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"
    result = run_cli(
        "transferlab.train",
        *FAST_OVERRIDES,
        f"data.root={missing}",
        f"hydra.run.dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_skips_unreadable_images_and_says_so(
    trained_run: Path, tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import compose_config
    from transferlab.predict import predict

    folder = tmp_path / "photos"
    shutil.copytree(tiny_data / "test" / "circle", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cfg = compose_config(
        "predict",
        [f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", f"input={folder}", "batch_size=3"],
        tmp_path / "out",
    )
    rows, output = predict(cfg)
    assert len(rows) == 4 and output.is_file()
    assert "Skipped 1 unreadable image(s)" in caplog.text and "broken.png" in caplog.text


def test_a_required_value_left_unset_is_one_line_and_exit_status_2(capsys: pytest.CaptureFixture) -> None:
    from omegaconf import OmegaConf

    from transferlab.utils.cli import run_task

    cfg = OmegaConf.create({"ckpt_path": "???"})  # as `transferlab-eval` without ckpt_path=...
    with pytest.raises(SystemExit) as exited:
        run_task(lambda c: c.ckpt_path, cfg)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "ckpt_path is required and not set: add ckpt_path=..." in error and "Traceback" not in error
