"""Gradual unfreezing: schedules, layer-wise rates under every scheduler, BatchNorm modes, bad settings."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import CONF_DIR, compose_config
from transferlab.backbones import available_backbones
from transferlab.callbacks.gradual_unfreezing import build_schedule
from transferlab.errors import UserError
from transferlab.train import train
from transferlab.utils.cli import find_user_error
from transferlab.utils.config import to_container

SMALL_CNN_GROUPS = ["block1", "block2", "block3"]


def _module(tmp_path: Path, *overrides: str, backbone: str = "small_cnn"):
    cfg = compose_config("train", ["model=gradual_unfreezing", f"backbone={backbone}", *overrides], tmp_path)
    args = to_container(cfg.backbone)
    if args.get("weights") == "imagenet":
        args["weights"] = "none"
    return instantiate(cfg.model, backbone=args, class_names=["a", "b", "c"], class_counts=[4, 4, 4])


# ----------------------------------------------------------------------------------------- schedules
def test_each_schedule_setting_gives_the_trainable_groups_per_epoch() -> None:
    def per_epoch(epochs: int, **settings) -> list[int]:
        schedule = build_schedule(SMALL_CNN_GROUPS, **settings)
        return [schedule.trainable_at(epoch) for epoch in range(epochs)]

    assert per_epoch(8) == [0, 0, 1, 1, 2, 2, 3, 3]  # default: one group every 2 epochs, head alone first
    assert per_epoch(5, epochs_per_group=1) == [0, 1, 2, 3, 3]
    assert per_epoch(7, unfreeze_milestones={2: 1, 5: "all"}) == [0, 0, 1, 1, 1, 3, 3]
    assert per_epoch(4, unfreeze_milestones={"0": 1, "3": 2}) == [1, 1, 1, 2]  # keys as strings (YAML/CLI)
    assert per_epoch(4, freeze_epochs=1) == [0, 3, 3, 3]  # fastai's fine_tune
    assert per_epoch(2, freeze_epochs=0) == [3, 3]


def test_schedule_description_names_groups_rates_and_what_stays_frozen() -> None:
    schedule = build_schedule(SMALL_CNN_GROUPS, epochs_per_group=2)
    lines = schedule.describe(SMALL_CNN_GROUPS, lambda index: 10.0**-index, max_epochs=5)
    assert lines[0].split() == ["epochs", "0-1", "head", "only"]
    assert "+ block3 (lr 1.0e-02)" in lines[1] and lines[1].split()[:2] == ["epochs", "2-3"]
    assert "+ block2 (lr 1.0e-01)" in lines[2] and lines[2].split()[:2] == ["epoch", "4"]
    assert lines[3].endswith("frozen until the end (max_epochs=5): block1")


BAD_SCHEDULES = {
    "out of order": (["model.unfreeze_milestones={4:1,2:2}"], "out of order"),
    "groups decrease": (["model.unfreeze_milestones={1:2,3:1}"], "out of order"),
    "more groups than the backbone": (["model.unfreeze_milestones={2:5}"], "the backbone has 3"),
    "zero epochs per group": (["model.epochs_per_group=0"], "model.epochs_per_group=0"),
    "negative freeze epochs": (["model.freeze_epochs=-1"], "model.freeze_epochs=-1"),
    "two schedules": (["model.freeze_epochs=1", "model.unfreeze_milestones={2:1}"], "choose one"),
    "count not a number": (["model.unfreeze_milestones={2:some}"], "'some' trainable block groups"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCHEDULES))
def test_bad_schedules_are_user_errors_before_training(case: str, tmp_path: Path) -> None:
    overrides, message = BAD_SCHEDULES[case]
    with pytest.raises(Exception) as caught:
        _module(tmp_path, *overrides)
    error = find_user_error(caught.value)
    assert error is not None, caught.value
    assert message in str(error)


def test_callback_on_a_module_whose_optimizer_lacks_frozen_groups_says_what_to_use(train_config) -> None:
    cfg = train_config(
        "model.trainable_blocks=0", "+callbacks.unfreeze._target_=transferlab.callbacks.GradualUnfreezing"
    )
    with pytest.raises(UserError, match=r"every parameter in the optimizer.*model=gradual_unfreezing"):
        train(cfg)


# ----------------------------------------------------------------------------------------- groups
def test_optimizer_holds_every_group_at_its_layer_wise_rate_without_decay_on_norms(tmp_path: Path) -> None:
    model = _module(tmp_path, "model.layer_decay=0.5", "model.lr=0.01", "model.backbone_lr_factor=0.1")
    groups = model.param_groups()
    owner: dict[int, dict] = {}
    for group in groups:
        for param in group["params"]:
            assert id(param) not in owner, "a parameter in two groups"
            owner[id(param)] = group
    assert set(owner) == {id(p) for p in model.parameters()}, "every parameter, frozen ones too"
    for index, block in enumerate(model.backbone.block_groups()):
        expected = 0.01 * 0.1 * 0.5 ** (2 - index)
        assert model.block_group_lr(index) == pytest.approx(expected)
        for param in block.parameters():
            assert not param.requires_grad  # the backbone starts frozen
            assert owner[id(param)]["lr"] == pytest.approx(expected)
            assert owner[id(param)]["name"].startswith(f"backbone.{block.name}")
    for name, param in model.named_parameters():
        assert owner[id(param)]["weight_decay"] == (0.0 if param.ndim <= 1 else 1e-4), name
    assert {owner[id(p)]["lr"] for p in model.head.parameters()} == {0.01}


def test_frozen_groups_keep_batchnorm_in_eval_mode_until_unfrozen(tmp_path: Path) -> None:
    model = _module(tmp_path).train()

    def modes() -> dict[str, tuple[bool, bool]]:
        out = {}
        for group in model.backbone.block_groups():
            norms = [m for mod in group.modules for m in mod.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            params = list(group.parameters())
            out[group.name] = (all(n.training for n in norms), all(p.requires_grad for p in params))
        return out

    assert modes() == {name: (False, False) for name in SMALL_CNN_GROUPS}
    model.set_trainable_blocks(1)
    assert modes() == {"block1": (False, False), "block2": (False, False), "block3": (True, True)}
    assert model.num_trainable_blocks == 1
    model.set_trainable_blocks("all")
    assert modes() == {name: (True, True) for name in SMALL_CNN_GROUPS}
    model.eval()
    assert not any(m.training for m in model.modules())


FAST_BACKBONES = {"small_cnn", "resnet18", "mobilenet_v3_small", "efficientnet_lite0", "timm"}


@pytest.mark.parametrize(
    "name",
    [n if n in FAST_BACKBONES else pytest.param(n, marks=pytest.mark.slow) for n in available_backbones()],
)
def test_every_registry_backbone_unfreezes_from_the_top(name: str, tmp_path: Path) -> None:
    extra = ["backbone.model_name=resnet10t"] if name == "timm" else []
    model = _module(tmp_path, *extra, backbone=name).train()
    groups = model.backbone.block_groups()
    assert model.num_block_groups == len(groups) >= 2
    assert len({id(p) for g in model.param_groups() for p in g["params"]}) == len(list(model.parameters()))
    model.set_trainable_blocks(1)
    size = model.backbone.preprocessing.input_size
    images = torch.randn(2, 3, size, size)
    model(images).sum().backward()
    top = {id(p) for p in groups[-1].parameters()}
    for pname, param in model.backbone.named_parameters():
        # no gradient is computed below the trainable part
        assert (param.grad is not None) == (id(param) in top), pname


# ----------------------------------------------------------------------------------------- schedulers
class RecordRates(L.Callback):
    """Each optimizer step: every group's rate, which parameters have gradients; weights per epoch."""

    def __init__(self) -> None:
        self.rates: list[list[float]] = []
        self.steps: list[int] = []
        self.grads_where_frozen: list[str] = []
        self.changed: dict[int, set[str]] = {}
        self.trainable: dict[int, int] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.steps.append(trainer.global_step)
        self.rates.append([g["lr"] for g in optimizer.param_groups])
        self.trainable[trainer.current_epoch] = pl_module.num_trainable_blocks
        self.grads_where_frozen += [
            n for n, p in pl_module.named_parameters() if not p.requires_grad and p.grad is not None
        ]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        end = pl_module.state_dict()
        changed = {
            k.split(".")[2]
            for k, v in end.items()
            if k.startswith("backbone.") and not torch.equal(v, self._start[k])
        }
        self.changed[trainer.current_epoch] = changed


def _expected_factor(name: str, step: int, total: int) -> float:
    """The configured schedules' formulas (conf/model/scheduler defaults), relative to a group's rate."""
    if name == "constant":
        return 1.0
    if name == "dann":  # mu_0 / (1 + 10 p) ** 0.75, p = step / total
        return 1 / (1 + 10 * step / total) ** 0.75
    if name == "step":
        return 0.1 ** sum(step >= int(total * m) for m in (0.5, 0.75))
    if name == "cosine":
        warmup = int(total * 0.05)
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))
    # one_cycle: from max/25 up to max over pct_start of the steps, then cosine down to max/25/1e4
    start, low, peak_step = 1 / 25, 1 / 25 / 1e4, float(0.3 * total) - 1
    if step <= peak_step:
        return 1 + (start - 1) / 2 * (math.cos(math.pi * step / peak_step) + 1)
    return low + (1 - low) / 2 * (math.cos(math.pi * (step - peak_step) / (total - 1 - peak_step)) + 1)


SCHEDULERS = sorted(p.stem for p in (Path(CONF_DIR) / "model" / "scheduler").glob("*.yaml"))


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_gives_each_unfrozen_group_its_rate(name: str, train_config) -> None:
    cfg = train_config(
        "model=gradual_unfreezing",
        f"model/scheduler={name}",
        "model.epochs_per_group=1",
        "model.layer_decay=0.5",
        "trainer.max_epochs=3",
        "test=false",
        "+callbacks.rates._target_=tests.test_gradual_unfreezing.RecordRates",
    )
    _, objects = train(cfg)
    trainer, model = objects["trainer"], objects["model"]
    recorder = next(c for c in trainer.callbacks if isinstance(c, RecordRates))
    total = trainer.estimated_stepping_batches
    assert recorder.steps == list(range(total))  # the schedule spans exactly the trainer's steps

    base = {"head": 3e-3, "block3": 3e-4, "block2": 1.5e-4, "block1": 7.5e-5}
    group_names = [g["name"] for g in trainer.optimizers[0].param_groups]
    for step, rates in zip(recorder.steps, recorder.rates, strict=True):
        for group_name, rate in zip(group_names, rates, strict=True):
            part = group_name.split("/")[0].removeprefix("backbone.")
            assert rate == pytest.approx(
                base[part] * _expected_factor(name, step, total), rel=1e-6, abs=1e-12
            ), (
                step,
                group_name,
            )

    # Epoch e trains the head and the top e groups; frozen groups get no gradient and do not move.
    assert recorder.trainable == {0: 0, 1: 1, 2: 2}
    assert recorder.changed == {0: set(), 1: {"block3"}, 2: {"block2", "block3"}}
    assert not recorder.grads_where_frozen
    assert model.num_trainable_blocks == 2
