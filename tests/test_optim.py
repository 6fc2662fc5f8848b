"""Parameter groups and schedules: no decay on norms and biases, lengths from the trainer.

The rates of block groups and parts are tested with the module that builds them (test_strategy_base.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from tests.conftest import CONF_DIR, compose_config
from transferlab.errors import UserError
from transferlab.optim import cosine_with_warmup, one_cycle, split_weight_decay


def test_no_weight_decay_on_norms_and_biases_and_frozen_left_out() -> None:
    block = nn.Sequential(nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3), nn.Linear(3, 2))
    block[2].requires_grad_(False)
    groups = split_weight_decay(block.named_parameters(), weight_decay=0.05, lr=0.1, name="b")
    assert [g["name"] for g in groups] == ["b", "b/no_decay"]
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [block[0].weight.shape]  # conv kernel only
    assert {id(p) for p in no_decay["params"]} == {id(block[0].bias), id(block[1].weight), id(block[1].bias)}
    assert all(g["lr"] == 0.1 for g in groups)


def _optimizer() -> torch.optim.Optimizer:
    params = [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]
    return torch.optim.SGD([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 0.1}])


def _rates(scheduler, steps: int) -> list[list[float]]:
    rates = []
    for _ in range(steps):
        rates.append([g["lr"] for g in scheduler.optimizer.param_groups])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


def test_cosine_with_warmup_spans_the_given_steps_per_group() -> None:
    rates = _rates(cosine_with_warmup(_optimizer(), total_steps=100, warmup_fraction=0.1), 100)
    assert rates[0][0] == pytest.approx(0.1)  # first warm-up step
    assert max(r[0] for r in rates) == pytest.approx(1.0)
    assert rates[-1][0] < 0.01  # decayed by the last step
    assert all(r[1] == pytest.approx(r[0] * 0.1) for r in rates)  # groups keep their ratio


def test_one_cycle_peaks_at_each_groups_rate() -> None:
    rates = _rates(one_cycle(_optimizer(), total_steps=50, pct_start=0.3), 50)
    assert max(r[0] for r in rates) == pytest.approx(1.0, rel=1e-3)
    assert max(r[1] for r in rates) == pytest.approx(0.1, rel=1e-3)


def test_bad_fraction_is_a_user_error() -> None:
    with pytest.raises(UserError, match="warmup_fraction"):
        cosine_with_warmup(_optimizer(), total_steps=10, warmup_fraction=1.5)


def test_step_decay_multiplies_at_fractional_milestones() -> None:
    from transferlab.optim import step_decay

    rates = _rates(step_decay(_optimizer(), total_steps=100, milestones=(0.5, 0.75), gamma=0.1), 100)
    assert rates[49][0] == pytest.approx(1.0)
    assert rates[50][0] == pytest.approx(0.1)
    assert rates[75][0] == pytest.approx(0.01)
    assert rates[99][1] == pytest.approx(0.001)


SCHEDULERS = sorted(p.stem for p in (Path(CONF_DIR) / "model" / "scheduler").glob("*.yaml"))


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_config_builds_from_the_trainers_step_count(name: str, tmp_path: Path) -> None:
    cfg = compose_config("train", [f"model/scheduler={name}"], tmp_path)
    scheduler = instantiate(cfg.model.scheduler)(_optimizer(), total_steps=40)
    rates = _rates(scheduler, 40)
    assert all(r[1] == pytest.approx(r[0] * 0.1) for r in rates)  # groups keep their ratio
    assert max(r[0] for r in rates) <= 1.0 + 1e-6


def test_head_is_linear_for_no_hidden_width_and_an_mlp_otherwise() -> None:
    from transferlab.strategies.heads import build_head

    for hidden in (None, 0):
        assert [type(m) for m in build_head(8, 3, hidden)] == [nn.Dropout, nn.Linear]
    mlp = build_head(8, 3, 16, dropout=0.5)
    assert mlp(torch.zeros(2, 8)).shape == (2, 3) and mlp[0].out_features == 16
    with pytest.raises(UserError, match="head_hidden_dim"):
        build_head(8, 3, -4)
