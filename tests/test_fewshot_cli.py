"""``transferlab-fewshot`` with a pretrained registry backbone: the CSV it writes, and bad input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tests.conftest import make_imagefolder, run_cli


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``circle/``, ``cross/`` and ``square/``: 6 noisy 32 px drawings each."""
    return make_imagefolder(tmp_path_factory.mktemp("fewshot_cli"), {"all": 6}, size=32) / "all"


def _fewshot(tmp_path: Path, *args: str):
    return run_cli("transferlab.fewshot", *args, f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)


def test_fewshot_cli_writes_one_row_per_readable_query_image(images: Path, tmp_path: Path) -> None:
    support, query = tmp_path / "support", tmp_path / "query"
    for name, shots in (("circle", 1), ("cross", 3), ("square", 2)):  # unequal shots
        (support / name).mkdir(parents=True)
        for i in range(shots):
            shutil.copy(images / name / f"{i}.png", support / name)
    (support / "square" / "broken.png").write_bytes(b"not an image")
    for name in ("circle", "cross", "square"):
        (query / "deep" / name).mkdir(parents=True)  # found recursively
        for i in (4, 5):
            shutil.copy(images / name / f"{i}.png", query / "deep" / name)
    (query / "unreadable.jpg").write_bytes(b"\xff\xd8 truncated")
    (query / "notes.txt").write_text("not an image")
    output = tmp_path / "predictions.csv"
    result = _fewshot(
        tmp_path,
        f"support={support}",
        f"query={query}",
        "backbone=efficientnet_lite0",
        "backbone.image_size=32",
        f"output={output}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Support: 3 classes, 6 images" in result.stdout
    assert "1 unreadable support image(s) skipped" in result.stdout
    with output.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "predicted_class", "probability"]
    assert sorted(Path(row["path"]).name for row in rows) == ["4.png"] * 3 + ["5.png"] * 3
    for row in rows:  # shapes this distinct are told apart by a pretrained backbone
        assert row["predicted_class"] == Path(row["path"]).parent.name, row
        assert 1 / 3 < float(row["probability"]) <= 1.0


@pytest.mark.parametrize(
    "problem",
    [
        "support class without images",
        pytest.param("empty query folder", marks=pytest.mark.slow),
        pytest.param("one class", marks=pytest.mark.slow),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(problem: str, images: Path, tmp_path: Path) -> None:
    support, query = tmp_path / "support", tmp_path / "query"
    for name in ("circle", "cross"):
        shutil.copytree(images / name, support / name)
    shutil.copytree(images / "square", query)
    if problem == "support class without images":
        (support / "star").mkdir()
        (support / "star" / "readme.txt").write_text("no images here")
        expected = "star has no image files"
    elif problem == "empty query folder":
        shutil.rmtree(query)
        query.mkdir()
        expected = f"query={query} holds no image files"
    else:
        shutil.rmtree(support / "cross")
        expected = "needs at least 2"
    result = _fewshot(tmp_path, f"support={support}", f"query={query}", "backbone=small_cnn")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert expected in lines[0]
