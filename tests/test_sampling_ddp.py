"""Issue 13, point 1: under DDP every rank slices the same epoch order, so each image is seen once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import FAST_OVERRIDES
from tests.helpers.sampling import make_tests_importable, read_recorded
from tests.test_scale import _run_ddp_sim

TRAIN_IMAGES = 36  # tiny_data: 12 training images in each of 3 classes


def test_ddp_ranks_together_see_each_training_image_once_per_epoch(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tests_importable(monkeypatch)
    seen = tmp_path / "seen"
    overrides = [o for o in FAST_OVERRIDES if not o.startswith("data.num_workers=")]
    overrides += [
        f"data.root={tiny_data}",
        "data.num_workers=2",  # the shipped default: indices are drawn in the main process, loaded in workers
        "trainer.max_epochs=2",
        "test=false",
        "+callbacks.index_recorder._target_=tests.helpers.sampling.IndexRecorder",
        f"+callbacks.index_recorder.folder={seen}",
    ]
    work, result = _run_ddp_sim(overrides, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stderr + result.stdout
    runs = list((work / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1, runs  # rank 0 only: one run folder, nothing else written
    assert {p.name for p in work.iterdir()} <= {"logs", ".cache"}
    assert (runs[0] / "checkpoints" / "best.ckpt").is_file()
    orders = []
    for epoch in (0, 1):
        ranks = [read_recorded(seen, rank, epoch) for rank in (0, 1)]
        assert [len(indices) for indices in ranks] == [TRAIN_IMAGES // 2] * 2
        counts = Counter(ranks[0] + ranks[1])
        missed = [index for index in range(TRAIN_IMAGES) if index not in counts]
        repeated = [index for index, count in counts.items() if count > 1]
        assert not missed and not repeated, f"epoch {epoch}: missed {missed}, seen twice {repeated}"
        orders.append(ranks)
    assert orders[0] != orders[1]  # still a new order every epoch
