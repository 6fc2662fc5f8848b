"""Every command in README.md works: composed by the fast suite, run end to end by the slow one.

The convention README.md follows, so that this test finds its commands:

* A command is a line of a fenced ```bash block, or in a markdown table row the first inline code span of
  a cell that starts with ``transferlab-``, ``make ``, ``python `` or ``tensorboard --`` (after optional
  ``NAME=value`` environment assignments; at most one command per cell). A trailing ``\\`` continues it
  on the next line; ``# ...`` is a comment.
* A command that needs something this machine lacks ends with one of these comments (after any other):
  ``# needs a GPU``, ``# needs a SLURM cluster``, ``# needs internet`` (pretrained weights that are not in
  the local caches). Marked commands are still composed by the fast test; the slow test skips them.
* Placeholders are whole words in capitals from :data:`PLACEHOLDERS`; the tests substitute tiny real data
  and checkpoints trained here (``DIR`` = the ``tiny_data`` fixture, ``CKPT`` = a checkpoint trained on it).
* ``make TARGET [VAR=value]``: TARGET must exist in the Makefile. When its recipe is one call of a console
  script (``make train``, ``make sweep``, ``make tensorboard``) the command is checked and run as that
  call, with the command's variables filled in. ``make`` itself is never run here: its ``env`` step would
  reinstall the shared environment; ``make test`` and ``make lint`` run in CI (``.ci/run``).
* ``python benchmarks/...``: run by the slow test of tests/test_readme_benchmarks.py as written plus the
  shrinking arguments of its ``SHRINK`` table (which must have an entry for the script: a fast test checks
  it), and pass when the script printed its result row and exited with 0 or with its "below target" status
  (4, ``benchmarks/_target.py``): shrunk and on a loaded machine, a figure may miss its target.

Fast tests take a few seconds. The slow tests (``make test-all``) run every unmarked command through its
real entry point (or benchmark script) in a temporary folder, with overrides that only shrink it (one epoch,
two batches, a tiny demo, few episodes or rounds), and check the exit status and the file or line the
command is documented to give.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
import tomllib
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from tests.conftest import ROOT, run_cli
from tests.helpers.readme_commands import (
    MARKERS,
    ReadmeCommand,
    make_invocation,
    make_targets,
    readme_commands,
    sweep_combinations,
)
from transferlab.utils.compose import compose_run_config

README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"

# placeholder -> what the tests put in its place
PLACEHOLDERS = {
    "DIR": "an ImageFolder tree with train/val/test (the tiny_data fixture)",
    "IMAGES": "a folder of images (tiny_data/test)",
    "SUPPORT": "one folder of example images per class (tiny_data/train)",
    "CKPT": "checkpoints/best.ckpt of `transferlab-train data=imagefolder data.root=DIR`",
    "LAST_CKPT": "checkpoints/last.ckpt of that run",
    "FEWSHOT_DIR": "class folders for data=fewshot (25 classes of 20 images)",
    "TARGET_DIR": "images of the target domain for data=domain_adaptation (tiny_data/test)",
    "SOURCE_DIR": "the data a source checkpoint was trained on (tiny_data, the data of CKPT)",
}
_CAPITAL_WORD = re.compile(r"\b[A-Z][A-Z0-9_]{2,}\b")


def _entry_points() -> dict[str, tuple[str, str]]:
    """Console script -> (module, Hydra config name), from pyproject.toml and each module's hydra.main."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    found = {}
    for name, target in scripts.items():
        module = target.split(":")[0]
        source = Path(find_spec(module).origin).read_text()
        (config_name,) = re.findall(r'config_name="(\w+)"', source)
        found[name] = (module, config_name)
    return found


ENTRY_POINTS = _entry_points()
COMMANDS = readme_commands(README)


def _resolve(command: ReadmeCommand) -> list[str]:
    """The argv the command amounts to: ``make`` targets through their recipe, others as written."""
    if command.program == "make":
        return make_invocation(command, MAKEFILE)[1]
    return list(command.argv)


def _substitute(args: list[str], values: dict[str, str]) -> list[str]:
    pattern = re.compile(r"\b(" + "|".join(sorted(PLACEHOLDERS, key=len, reverse=True)) + r")\b")
    return [pattern.sub(lambda m: values[m.group(1)], arg) for arg in args]


def _split_multirun(args: list[str]) -> tuple[bool, list[str]]:
    multirun = any(a in ("-m", "--multirun") for a in args)
    return multirun, [a for a in args if a not in ("-m", "--multirun")]


def _entry_commands() -> list[tuple[ReadmeCommand, list[str]]]:
    """Commands that are (or whose make recipe is) a transferlab entry point, with that argv."""
    out = []
    for command in COMMANDS:
        if command.program == "make" and command.argv[1:] and _target_of(command) not in _targets():
            continue  # reported by test_make_targets_exist
        argv = _resolve(command)
        if argv and argv[0] in ENTRY_POINTS:
            out.append((command, argv))
    return out


def _targets() -> dict:
    return make_targets(MAKEFILE)[0]


def _target_of(command: ReadmeCommand) -> str:
    words = [w for w in command.argv[1:] if "=" not in w]
    return words[0] if words else "help"


def _compose(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    return compose_run_config(config_name, overrides, output_dir)


def _ids(items) -> list[str]:
    return [f"L{c.line}:{c.text[:60]}" for c, *_ in items]


# ----------------------------------------------------------------------------------------------- fast


def test_readme_has_commands_of_every_kind() -> None:
    programs = {c.program for c in COMMANDS}
    assert {"transferlab-train", "make", "python", "tensorboard"} <= programs, programs
    assert any(c.needs for c in COMMANDS) and any(not c.needs for c in COMMANDS)


def test_every_command_is_known_here_or_marked() -> None:
    problems = []
    for command in COMMANDS:
        program = command.program
        if program == "make":
            continue  # test_make_targets_exist
        if program == "python":
            if command.argv[1:2] and command.argv[1].startswith("benchmarks/"):
                continue
            problems.append(f"{command}: only `python benchmarks/<script>.py ...` commands are known")
        elif program == "tensorboard":
            if not (Path(sys.executable).parent / "tensorboard").is_file():
                problems.append(f"{command}: no tensorboard in {Path(sys.executable).parent}")
        elif program not in ENTRY_POINTS:
            problems.append(f"{command}: {program} is not a console script of pyproject.toml")
    assert not problems, "\n".join(problems)


def test_markers_and_placeholders_are_the_documented_ones() -> None:
    problems = []
    text = README.read_text().splitlines()
    for command in COMMANDS:
        comment = text[command.line - 1].partition(" # ")[2]
        if re.search(r"#\s*needs\b", "# " + comment) and not command.needs:
            problems.append(f"{command}: comment {comment!r} is not one of {list(MARKERS)}")
        for arg in _resolve(command)[1:]:
            value = arg.partition("=")[2] if "=" in arg else arg
            unknown = [w for w in _CAPITAL_WORD.findall(value) if w not in PLACEHOLDERS]
            if unknown:
                problems.append(f"{command}: unknown placeholder(s) {unknown}; known: {list(PLACEHOLDERS)}")
    assert not problems, "\n".join(problems)


def test_make_targets_exist() -> None:
    targets = _targets()
    named = [c for c in COMMANDS if c.program == "make"]
    # `make X` written inline in the prose counts too
    for number, line in enumerate(README.read_text().splitlines(), start=1):
        for span in re.findall(r"`(make [^`]+)`", line):
            named.append(ReadmeCommand(span, number, None, {}, tuple(shlex.split(span))))
    missing = [
        f"{c}: no target {_target_of(c)!r} in the Makefile" for c in named if _target_of(c) not in targets
    ]
    assert not missing, "\n".join(missing)
    assert {"train", "test", "test-all"} <= {_target_of(c) for c in named}


@pytest.mark.parametrize(("command", "argv"), _entry_commands(), ids=_ids(_entry_commands()))
def test_entry_point_command_composes(command: ReadmeCommand, argv: list[str], tmp_path: Path) -> None:
    """The config the command asks for exists: groups, options and keys as written, nothing missing."""
    _, config_name = ENTRY_POINTS[argv[0]]
    multirun, overrides = _split_multirun(argv[1:])
    overrides = _substitute(overrides, {name: str(tmp_path / name.lower()) for name in PLACEHOLDERS})
    jobs = sweep_combinations(overrides) if multirun else [overrides]
    for job in jobs:
        try:
            cfg = _compose(config_name, job, tmp_path / "run")
        except Exception as err:
            pytest.fail(f"{command} does not compose (overrides {job}): {type(err).__name__}: {err}")
        missing = OmegaConf.missing_keys(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
        assert not missing, f"{command} leaves required value(s) unset: {missing}"


# ----------------------------------------------------------------------------------------------- slow


# Shrinks a run (only where the composed config has the key): sizes, never the strategy or backbone.
def _shrink(cfg: DictConfig, epochs: int) -> list[str]:
    extra = []
    trainer = cfg.get("trainer")
    if trainer is not None and "max_epochs" in trainer:
        extra.append(f"trainer.max_epochs={epochs}")
        for loop in ("train", "val", "test"):
            key = f"limit_{loop}_batches"
            extra.append(f"{'' if key in trainer else '+'}trainer.{key}=2")
    data = cfg.get("data")
    if data is not None and data.get("demo") == "animal_mnist":
        extra.append("data.demo_per_class={train:4,val:2,test:2}")
    if data is not None and "episodes_per_epoch" in data:
        extra += ["data.episodes_per_epoch=2", "data.val_episodes=2", "data.test_episodes=3"]
    sweeper = cfg.hydra.get("sweeper")
    if sweeper is not None and "n_trials" in sweeper:
        extra.append("hydra.sweeper.n_trials=2")
    return extra


# what each entry point's run folder holds afterwards, and a line it prints
EXPECTED = {
    "train": ("metrics.json", "TensorBoard: tensorboard --logdir"),
    "eval": ("csv/metrics.csv", "test/acc"),
    "predict": ("predictions.csv", "predictions to"),
    "extract": ("features.pt", "features of"),
    "export": ("model.onnx", "model to"),
    "fewshot": ("fewshot_predictions.csv", "predictions to"),
}


def _fewshot_classes(root: Path, classes: int = 25, per_class: int = 20, size: int = 20) -> Path:
    """Class folders for data=fewshot: enough classes for 5-way val and test splits of the classes."""
    rng = np.random.default_rng(0)
    for index in range(classes):
        folder = root / f"class_{index:02d}"
        folder.mkdir(parents=True)
        base = rng.integers(0, 256, 3)
        for i in range(per_class):
            noise = rng.integers(-40, 40, (size, size, 3))
            Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def workplace(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The working folder of the slow runs and the values of the placeholders (a checkpoint trained here)."""
    work = tmp_path_factory.mktemp("readme")
    fewshot_dir = _fewshot_classes(work / "fewshot_classes")
    run_dir = work / "ckpt_run"
    result = run_cli(
        "transferlab.train", "data=imagefolder", f"data.root={tiny_data}", "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2", f"hydra.run.dir={run_dir}", cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    values = {
        "DIR": str(tiny_data),
        "IMAGES": str(tiny_data / "test"),
        "SUPPORT": str(tiny_data / "train"),
        "CKPT": str(run_dir / "checkpoints" / "best.ckpt"),
        "LAST_CKPT": str(run_dir / "checkpoints" / "last.ckpt"),
        "FEWSHOT_DIR": str(fewshot_dir),
        "TARGET_DIR": str(tiny_data / "test"),
        "SOURCE_DIR": str(tiny_data),
    }
    assert set(values) == set(PLACEHOLDERS)
    # `tensorboard --logdir logs/train` (or logs/eval) from the working folder sees a run
    for task in ("train", "eval"):
        (work / "logs" / task / "runs").mkdir(parents=True)
        (work / "logs" / task / "runs" / "ckpt_run").symlink_to(run_dir)
    return {"work": work, "values": values}


def _runnable() -> list[tuple[ReadmeCommand, list[str]]]:
    """Unmarked commands this test runs (entry points and tensorboard), each distinct argv once."""
    out, seen = [], set()
    for command in COMMANDS:
        if command.needs or command.program == "python":
            continue
        if command.program == "make" and _target_of(command) not in _targets():
            continue  # reported by test_make_targets_exist
        argv = _resolve(command)
        if argv and (argv[0] in ENTRY_POINTS or argv[0] == "tensorboard") and tuple(argv) not in seen:
            seen.add(tuple(argv))
            out.append((command, argv))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("command", "argv"), _runnable(), ids=_ids(_runnable()))
def test_command_runs(command: ReadmeCommand, argv: list[str], workplace: dict, tmp_path: Path) -> None:
    work: Path = workplace["work"]
    args = _substitute(argv[1:], workplace["values"])
    if argv[0] == "tensorboard":
        _check_tensorboard(command, args, work)
        return
    module, config_name = ENTRY_POINTS[argv[0]]
    multirun, overrides = _split_multirun(args)
    cfg = _compose(config_name, sweep_combinations(overrides)[0], tmp_path / "compose")
    multirun = multirun or "MULTIRUN" in str(cfg.hydra.get("mode"))  # an Optuna search needs no -m
    resumes = bool(cfg.get("ckpt_path")) and cfg.get("train", False) and config_name == "train"
    out = tmp_path / "out"
    where = f"hydra.sweep.dir={out}" if multirun else f"hydra.run.dir={out}"
    result = run_cli(module, *args, *_shrink(cfg, epochs=2 if resumes else 1), where, cwd=work)
    assert result.returncode == 0, f"{command} failed:\n{result.stderr[-3000:]}"
    if multirun:
        summary = json.loads((out / "summary.json").read_text())
        assert summary["jobs"], f"{command}: no job finished"
        return
    expected_file, expected_text = EXPECTED.get(config_name, (None, ""))
    if config_name == "export" and cfg.format != "onnx":
        expected_file = "model.pt"
    if expected_file:
        assert (out / expected_file).is_file(), f"{command} wrote no {expected_file} in {out}"
    assert expected_text in result.stdout.replace("\n", " "), f"{command} did not print {expected_text!r}"


def _check_tensorboard(command: ReadmeCommand, args: list[str], work: Path) -> None:
    """Start the server as the README says (on a free port) and ask it for the runs it found."""
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "tensorboard"), *args, "--port", "0", "--host", "127.0.0.1"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line or process.poll() is None, f"{command}: tensorboard exited"
            found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            url = found.group(1) if found else None
        assert url, f"{command}: tensorboard never said where it serves"
        runs: list = []
        while not runs and time.monotonic() < deadline:
            with urllib.request.urlopen(url + "data/runs", timeout=10) as response:
                runs = json.loads(response.read())
            time.sleep(0.5)
        assert any("ckpt_run" in run for run in runs), f"{command}: tensorboard lists {runs}"
    finally:
        process.terminate()
        process.wait(timeout=30)
