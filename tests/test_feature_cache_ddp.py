"""Cached features under DDP: a 2-process ddp_sim run shares every epoch between the ranks exactly once."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tests.conftest import FAST_OVERRIDES, ROOT, make_imagefolder
from tests.test_feature_cache import FE, cache_files, probe_overrides
from tests.test_scale import _run_ddp_sim
from transferlab.data.sampling import epoch_permutation


def test_ddp_ranks_share_each_cached_epoch_exactly_once(tmp_path: Path, monkeypatch) -> None:
    # 21 training and 9 validation images: neither divides between the 2 ranks or into global batches.
    data = make_imagefolder(tmp_path / "data", {"train": 7, "val": 3, "test": 2}, seed=5)
    cache, probes = tmp_path / "cache", tmp_path / "probe"
    # The probe callback is imported from this folder by the training processes.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    overrides = [
        *FAST_OVERRIDES, *FE, f"data.root={data}", "trainer.max_epochs=2", "data.batch_size=4",
        "data.num_workers=2", "seed=3", "test=false", f"model.cache_dir={cache}", *probe_overrides(probes),
    ]  # fmt: skip
    _, result = _run_ddp_sim(overrides, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    ranks = [torch.load(probes / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    rows = cache_files(cache)
    assert sorted(rows) == [9, 21]  # rank zero computed them once; both ranks read the same files
    for epoch in (0, 1):
        order = epoch_permutation(21, 3, epoch)  # the same order a one-process run follows
        seen = [ranks[rank][f"train/{epoch}"][0] for rank in (0, 1)]
        for rank in (0, 1):
            expected = torch.from_numpy(rows[21][order[rank::2].numpy()])
            assert torch.equal(seen[rank], expected), (epoch, rank)
        assert len(seen[0]) + len(seen[1]) == 21  # disjoint shares covering the epoch once
        for rank in (0, 1):
            val = ranks[rank][f"val/{epoch}"][0]
            assert torch.equal(val, torch.from_numpy(rows[9][rank::2]))
    assert [recorded["children"] for recorded in ranks] == [0, 0]  # no loader worker processes
