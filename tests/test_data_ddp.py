"""A run without a seed (``seed=null``) under DDP launched by re-running the command: every rank shuffles
with the same seed, so the ranks shard one epoch order instead of drawing overlapping ones."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest

from tests.conftest import FAST_OVERRIDES, ROOT, run_cli
from transferlab.data import ImageFolderDataModule

PRE = {"input_size": 8, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


class RecordShuffleSeed(L.Callback):
    """Writes ``<folder>/rank<N>.json`` with the data module's shuffle seed as training starts."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed = trainer.datamodule.shuffle_seed  # type: ignore[attr-defined]
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps({"seed": seed}))


def test_setup_takes_the_first_ranks_shuffle_seed(tiny_data: Path) -> None:
    broadcasts = []

    def broadcast(value: int, src: int = 0) -> int:
        broadcasts.append((value, src))
        return 1234  # what rank 0 drew

    dm = ImageFolderDataModule(str(tiny_data), preprocessing=PRE, batch_size=8, shuffle_seed=None)
    dm.trainer = SimpleNamespace(
        world_size=2, is_global_zero=False, strategy=SimpleNamespace(broadcast=broadcast)
    )
    dm.setup("fit")
    dm.setup("validate")
    assert len(broadcasts) == 1 and broadcasts[0][1] == 0  # once, from rank 0
    assert dm.shuffle_seed == 1234 and dm.train_sampler().seed == 1234


@pytest.mark.slow  # starts three Python processes
def test_ranks_share_the_shuffle_seed_of_a_run_without_seed(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The popen launcher (trainer=ddp outside a multirun) starts rank 1 as a new `python -m ...`: it
    # builds its own data module, so a seed drawn at random differs unless the ranks agree on one.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    seeds = tmp_path / "seeds"
    result = run_cli(
        "transferlab.train",
        *FAST_OVERRIDES,
        f"data.root={tiny_data}",
        "trainer=ddp_sim",
        "trainer.strategy.start_method=popen",
        "seed=null",
        "test=false",
        "+callbacks.seed_probe._target_=tests.test_data_ddp.RecordShuffleSeed",
        f"+callbacks.seed_probe.folder={seeds}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = [json.loads((seeds / f"rank{rank}.json").read_text())["seed"] for rank in (0, 1)]
    assert recorded[0] == recorded[1], recorded
