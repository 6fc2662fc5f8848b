"""How loader workers start: the platform's way, also inside a spawned DDP rank."""

from __future__ import annotations

import multiprocessing
import sys

import pytest

from transferlab.utils.processes import loader_worker_context, platform_start_method


def _worker_method_in_child(queue: multiprocessing.Queue) -> None:
    context = loader_worker_context(num_workers=2)
    queue.put(None if context is None else context.get_start_method())


def test_main_process_keeps_pytorchs_default() -> None:
    assert loader_worker_context(num_workers=2) is None


@pytest.mark.skipif(sys.platform != "linux", reason="the platform default is spawn elsewhere")
def test_a_spawned_process_starts_its_loader_workers_the_platform_way() -> None:
    # A rank of trainer=ddp_sim is such a process: without this its workers re-import PyTorch each.
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    child = spawn.Process(target=_worker_method_in_child, args=(queue,))
    child.start()
    method = queue.get(timeout=120)
    child.join(timeout=60)
    assert method == platform_start_method() == "fork"
