"""TransferModule: freezing by block groups, layer-wise rates, parameter groups from parts, checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlab.errors import UserError
from transferlab.strategies import FineTuneClassifier, TransferModule, load_module_from_checkpoint
from transferlab.strategies.base import CHECKPOINT_KEY
from transferlab.strategies.classifier import ClassifierModule

BACKBONE = {"name": "small_cnn", "weights": "none"}  # three block groups: block1, block2, block3
ADAMW = {"_target_": "torch.optim.AdamW", "_partial_": True}


def _finetune(**kwargs) -> FineTuneClassifier:
    return FineTuneClassifier(backbone=BACKBONE, class_names=["a", "b"], optimizer=ADAMW, **kwargs)


def _batchnorms(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def _state(module: TransferModule) -> list[tuple[bool, bool]]:
    """Per block group: (every parameter trainable, every BatchNorm layer in train mode)."""
    states = []
    for group in module.backbone.block_groups():
        trainable = {p.requires_grad for p in group.parameters()}
        bn_train = {bn.training for m in group.modules for bn in _batchnorms(m)}
        assert len(trainable) == 1 and len(bn_train) == 1, f"{group.name} is half frozen"
        states.append((trainable.pop(), bn_train.pop()))
    return states


def test_set_trainable_blocks_unfreezes_more_later_with_matching_batchnorm_modes() -> None:
    module = _finetune(trainable_blocks=0).train()
    assert module.block_group_names == ["block1", "block2", "block3"] and module.num_block_groups == 3
    # Frozen blocks run in eval mode while the module trains; the head trains.
    assert _state(module) == [(False, False)] * 3 and module.head.training
    assert module.num_trainable_blocks == 0

    module.set_trainable_blocks(1)  # e.g. a gradual-unfreezing callback at epoch N
    assert _state(module) == [(False, False), (False, False), (True, True)]
    module.set_trainable_blocks(2)
    assert _state(module) == [(False, False), (True, True), (True, True)]
    module.set_trainable_blocks("all")
    assert _state(module) == [(True, True)] * 3 and module.num_trainable_blocks == 3

    # In eval mode nothing trains statistics; train() restores the modes that match what is frozen.
    module.set_trainable_blocks(1)
    module.eval()
    assert all(not m.training for m in module.modules())
    module.set_trainable_blocks(2)
    assert all(not m.training for m in module.modules())
    module.train()
    assert _state(module) == [(False, False), (True, True), (True, True)]


def test_batchnorm_options_keep_statistics_fixed_where_asked() -> None:
    # frozen_blocks_eval=false: frozen blocks update their statistics (only requires_grad is off).
    module = _finetune(trainable_blocks=1, frozen_blocks_eval=False).train()
    assert _state(module) == [(False, True), (False, True), (True, True)]
    # freeze_bn_stats: every BatchNorm layer in eval mode, trainable blocks too; their scale still trains.
    module = _finetune(trainable_blocks="all", freeze_bn_stats=True).train()
    assert _state(module) == [(True, False)] * 3
    module.set_trainable_blocks(1)
    assert _state(module) == [(False, False), (False, False), (True, False)]


@pytest.mark.parametrize("bad", [-1, 4, "some", 1.5, True])
def test_invalid_trainable_blocks_is_a_user_error_naming_the_groups(bad) -> None:
    with pytest.raises(UserError, match=r"block1.*block2.*block3"):
        _finetune(trainable_blocks=bad)


def _rates(groups: list[dict]) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in groups}


def test_block_group_rates_are_a_fixed_function_of_the_group_index() -> None:
    module = _finetune(trainable_blocks=0, lr=1.0, backbone_lr_factor=0.1, layer_decay=0.5)
    expected = [0.025, 0.05, 0.1]  # lr * factor * decay ** (3 - 1 - index)
    assert [module.block_group_lr(i) for i in range(3)] == pytest.approx(expected)
    with pytest.raises(IndexError):
        module.block_group_lr(3)
    # The rates do not depend on what is trainable now (a group unfrozen later gets its final rate).
    for count in (1, 2, 3):
        module.set_trainable_blocks(count)
        assert [module.block_group_lr(i) for i in range(3)] == pytest.approx(expected)
        groups = module.block_group_param_groups(["block3"])
        assert _rates(groups) == pytest.approx({"backbone.block3": 0.1, "backbone.block3/no_decay": 0.1})
    with pytest.raises(UserError, match="block9"):
        module.block_group_param_groups(["block9"])


@pytest.mark.parametrize("count", [1, 2, 3])
def test_param_groups_match_the_earlier_rule_decaying_from_the_top_trainable_block(count: int) -> None:
    lr, factor, decay = 2e-3, 0.3, 0.7
    module = _finetune(trainable_blocks=count, lr=lr, backbone_lr_factor=factor, layer_decay=decay)
    rates = _rates(module.param_groups())
    # The rule before parameter groups were built from parts: the j-th trainable block (from the bottom
    # of the trainable ones) at lr * factor * decay ** (count - 1 - j); the head at lr.
    names = module.block_group_names[3 - count :]
    earlier = {"head": lr, "head/no_decay": lr}
    for j, name in enumerate(names):
        rate = lr * factor * decay ** (count - 1 - j)
        earlier |= {f"backbone.{name}": rate, f"backbone.{name}/no_decay": rate}
    assert rates == pytest.approx(earlier)


def test_param_groups_split_weight_decay_and_hold_each_trainable_parameter_once() -> None:
    module = _finetune(trainable_blocks=2, weight_decay=0.05)
    groups = module.param_groups()
    for group in groups:
        dims = {p.ndim for p in group["params"]}
        if group["name"].endswith("/no_decay"):
            assert dims == {1} and group["weight_decay"] == 0.0  # norms and biases
        else:
            assert 1 not in dims and group["weight_decay"] == 0.05
    held = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in module.parameters() if p.requires_grad]
    assert sorted(held) == sorted(trainable) and len(set(held)) == len(held)
    assert not {id(p) for p in module.backbone.block_groups()[0].parameters()} & set(held)


class ProjectedClassifier(ClassifierModule):
    """A strategy that adds a part: a projection between backbone and head, trained at 10x the head's rate."""

    def __init__(self, backbone: dict, class_names: list[str], optimizer: dict, lr: float = 0.01) -> None:
        super().__init__(backbone, optimizer, class_names=class_names, lr=lr)
        self.projection = nn.Sequential(nn.Linear(self.backbone.feature_dim, 8), nn.LayerNorm(8))
        self.head = nn.Linear(8, len(class_names))
        self.save_hyperparameters()
        self.set_trainable_blocks(1)

    def trainable_parts(self) -> dict[str, nn.Module]:
        return {**super().trainable_parts(), "projection": self.projection}

    def part_lr(self, name: str) -> float:
        return self.lr * 10 if name == "projection" else super().part_lr(name)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(super().embed(x))


def test_a_strategy_adds_parts_instead_of_overriding_param_groups() -> None:
    module = ProjectedClassifier(BACKBONE, ["a", "b"], ADAMW, lr=0.01)
    rates = _rates(module.param_groups())
    assert rates == pytest.approx(
        {"head": 0.01, "head/no_decay": 0.01, "projection": 0.1, "projection/no_decay": 0.1,
         "backbone.block3": 0.001, "backbone.block3/no_decay": 0.001}
    )  # fmt: skip
    module.projection.requires_grad_(False)  # a frozen part is left out
    assert "projection" not in _rates(module.param_groups())


def _images(n: int = 16, classes: int = 2) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % classes
    return DataLoader(TensorDataset(images, labels), batch_size=8)


def _trainer(tmp_path: Path, epochs: int = 1, callbacks: list | None = None) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=tmp_path, callbacks=callbacks or [],
    )  # fmt: skip


class UnfreezeTopAt(L.Callback):
    """Unfreezes the top block group at ``epoch`` and hands its parameters to the optimizer."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: TransferModule) -> None:
        if trainer.current_epoch == self.epoch:
            pl_module.set_trainable_blocks(1)
            for group in pl_module.block_group_param_groups(pl_module.block_group_names[-1:]):
                trainer.optimizers[0].add_param_group(group)


def test_unfreezing_during_fit_trains_the_new_block_and_its_statistics_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _finetune(trainable_blocks=0, scheduler=None)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    _trainer(tmp_path, epochs=2, callbacks=[UnfreezeTopAt(epoch=1)]).fit(module, _images(), _images())
    after = module.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    top = {k for k in before if k.startswith("backbone.body.block3.") and "num_batches" not in k}
    assert top <= changed  # weights and running statistics of the unfrozen block moved
    assert not {k for k in changed if k.startswith("backbone.") and not k.startswith("backbone.body.block3.")}
    assert {g["name"] for g in module.trainer.optimizers[0].param_groups} >= {"backbone.block3"}


class PrototypeModule(TransferModule):
    """A module without a fixed class set: classifies a query by its nearest class mean (few-shot style)."""

    def __init__(self, backbone: dict, optimizer: dict, lr: float = 0.01, dim: int = 8) -> None:
        super().__init__(backbone, optimizer, lr=lr)
        self.projection = nn.Linear(self.backbone.feature_dim, dim)
        self.save_hyperparameters()
        self.set_trainable_blocks(1)

    def trainable_parts(self) -> dict[str, nn.Module]:
        return {**super().trainable_parts(), "projection": self.projection}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.backbone(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        z = self(x)
        prototypes = torch.stack([z[y == c].mean(0) for c in y.unique()])
        loss = F.cross_entropy(-torch.cdist(z, prototypes), torch.searchsorted(y.unique(), y))
        self.log("train/loss", loss)
        return loss


def test_module_without_class_names_round_trips_through_its_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    module = PrototypeModule(BACKBONE, ADAMW, lr=0.02)
    assert module.class_names is None
    trainer = _trainer(tmp_path)
    trainer.fit(module, _images())
    path = tmp_path / "proto.ckpt"
    trainer.save_checkpoint(path)

    saved = torch.load(path, weights_only=True)  # plain containers only
    assert saved[CHECKPOINT_KEY]["module"] == f"{__name__}.PrototypeModule"
    assert "class_names" not in saved[CHECKPOINT_KEY] and saved[CHECKPOINT_KEY]["preprocessing"]
    caplog.clear()  # the module built above did start from random weights
    with caplog.at_level(logging.INFO, logger="transferlab"):
        loaded = load_module_from_checkpoint(path)
    # The backbone is built empty and filled from the checkpoint: no "random initialisation" notice.
    notices = [record.getMessage() for record in caplog.records]
    assert not any("random initialisation" in notice for notice in notices), notices
    assert any(f"with all its weights from {path}" in notice for notice in notices), notices
    assert type(loaded) is PrototypeModule and loaded.class_names is None and not loaded.training
    assert loaded.hparams.lr == 0.02
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(loaded(x), module.eval()(x))


def test_checkpoints_with_the_earlier_batchnorm_option_names_still_load(tmp_path: Path) -> None:
    module = _finetune(trainable_blocks=1, freeze_bn_stats=True)
    trainer = _trainer(tmp_path)
    trainer.fit(module, _images(), _images())
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    hparams["frozen_bn_eval"], hparams["freeze_batchnorm"] = (
        hparams.pop("frozen_blocks_eval"), hparams.pop("freeze_bn_stats"),
    )  # fmt: skip
    torch.save(checkpoint, path)
    loaded = load_module_from_checkpoint(path)
    assert loaded.freeze_bn_stats and loaded.frozen_blocks_eval


def test_config_nodes_are_refused_where_checkpoints_need_plain_values() -> None:
    with pytest.raises(TypeError, match="_convert_"):
        FineTuneClassifier(backbone=OmegaConf.create(BACKBONE), class_names=["a", "b"], optimizer=ADAMW)
