"""DANN's parts on their own: the gradient reversal layer, both schedules, the network and its loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from tests.conftest import compose_config
from transferlab.optim.dann_schedule import (
    annealed_lr_factor,
    dann_annealing,
    reversal_coefficient,
    training_progress,
)
from transferlab.strategies import DANNClassifier, SourceOnlyClassifier
from transferlab.strategies.a_distance import proxy_a_distance
from transferlab.strategies.gradient_reversal import GradientReversal, reverse_gradient
from transferlab.utils.config import to_container as plain

CLASSES = ["a", "b", "c"]


@pytest.mark.parametrize("coefficient", [0.0, 0.3, 1.0, 2.5])
def test_reversal_layer_is_identity_forward_and_minus_lambda_times_the_gradient_backward(
    coefficient: float,
) -> None:
    x = torch.randn(5, 4, dtype=torch.double, requires_grad=True)
    upstream = torch.randn(5, 4, dtype=torch.double)
    out = GradientReversal(coefficient)(x)
    assert torch.equal(out, x) and out is not x
    (grad,) = torch.autograd.grad(out, x, upstream)
    assert torch.equal(grad, -coefficient * upstream)
    # Through a real function: d/dx sum(w * GRL(x)^2) = -lambda * 2 w x
    w = torch.randn(5, 4, dtype=torch.double)
    (grad,) = torch.autograd.grad((w * reverse_gradient(x, coefficient) ** 2).sum(), x)
    assert torch.allclose(grad, -coefficient * 2 * w * x)


@pytest.mark.parametrize(
    ("progress", "expected"),
    [(0.0, 0.0), (0.5, 2 / (1 + math.exp(-5)) - 1), (1.0, 2 / (1 + math.exp(-10)) - 1)],
)
def test_reversal_coefficient_matches_the_formula(progress: float, expected: float) -> None:
    assert reversal_coefficient(progress, gamma=10.0) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("progress", "expected"), [(0.0, 1.0), (0.5, 1 / 6**0.75), (1.0, 1 / 11**0.75)])
def test_learning_rate_annealing_matches_the_formula(progress: float, expected: float) -> None:
    assert annealed_lr_factor(progress, alpha=10.0, beta=0.75) == pytest.approx(expected, abs=1e-12)
    # and as the scheduler the dann config builds, at p = step / total_steps, for every group
    groups = [
        {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.01},
        {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.001},
    ]
    optimizer = torch.optim.SGD(groups, lr=0.01)
    scheduler = dann_annealing(optimizer, total_steps=100)
    for _ in range(int(progress * 100)):
        optimizer.step()
        scheduler.step()
    rates = [group["lr"] for group in optimizer.param_groups]
    assert rates == pytest.approx([0.01 * expected, 0.001 * expected], rel=1e-9)


def test_training_progress_is_clipped_and_safe_for_zero_steps() -> None:
    assert training_progress(5, 10) == 0.5
    assert training_progress(20, 10) == 1.0
    assert training_progress(0, 0) == 0.0


def test_dann_scheduler_config_builds_from_the_step_count(tmp_path: Path) -> None:
    cfg = compose_config("train", ["model=dann", "backbone=small_cnn"], tmp_path)
    assert cfg.model.scheduler._target_.endswith("dann_annealing")
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = instantiate(cfg.model.scheduler)(optimizer, total_steps=4)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(annealed_lr_factor(0.5))


def _model(name: str, tmp_path: Path, *overrides: str) -> DANNClassifier:
    cfg = compose_config("train", [f"model={name}", "backbone=small_cnn", *overrides], tmp_path)
    return instantiate(cfg.model, backbone=plain(cfg.backbone), class_names=CLASSES, class_counts=[4, 4, 4])


def test_config_defaults_equal_the_python_defaults(tmp_path: Path) -> None:
    import inspect

    for name, cls in (("dann", DANNClassifier), ("source_only", SourceOnlyClassifier)):
        cfg = compose_config("train", [f"model={name}"], tmp_path / name)
        defaults = inspect.signature(cls.__init__).parameters
        for key, value in plain(cfg.model).items():
            if key in defaults and key not in ("optimizer", "scheduler"):
                expected = defaults[key].default
                expected = list(expected) if isinstance(expected, tuple) else expected
                assert value == expected, (name, key)


def test_dann_network_shape_and_parameter_groups(tmp_path: Path) -> None:
    model = _model("dann", tmp_path)
    assert [type(m) for m in model.head.bottleneck] == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert model.head.bottleneck[0].out_features == 256
    hidden = [m.out_features for m in model.domain_classifier if isinstance(m, nn.Linear)]
    assert hidden == [1024, 1024, 2]
    dropouts = [m.p for m in model.domain_classifier if isinstance(m, nn.Dropout)]
    assert dropouts == [0.5, 0.5]
    rates = {group["name"]: group["lr"] for group in model.param_groups()}
    assert rates["head"] == rates["bottleneck"] == rates["domain_classifier"] == 0.01
    backbone_rates = [v for k, v in rates.items() if k.startswith("backbone.")]
    assert backbone_rates and all(r == pytest.approx(0.001) for r in backbone_rates)  # backbone at 0.1x
    # every trainable parameter is in exactly one group
    grouped = [id(p) for group in model.param_groups() for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    assert len(grouped) == len(set(grouped))
    # forward (predict, export) is the label path: head(backbone(x))
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model.head.classifier(model.features(x)))


def test_source_only_has_the_same_label_network_and_no_domain_classifier(tmp_path: Path) -> None:
    dann, source_only = _model("dann", tmp_path / "d"), _model("source_only", tmp_path / "s")
    label_keys = {k for k in dann.state_dict() if not k.startswith(("domain_classifier", "scores"))}
    assert {k for k in source_only.state_dict() if not k.startswith("scores")} == label_keys
    assert not hasattr(source_only, "domain_classifier")
    assert {g["name"] for g in source_only.param_groups()} >= {"head", "bottleneck"}


def _step(model: DANNClassifier, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    model._total_steps = 10
    model.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    return model.training_step(batch, 0)


def test_one_concatenated_forward_pass_and_integer_domain_labels(tmp_path: Path, monkeypatch) -> None:
    model = _model("dann", tmp_path).train()
    calls: list[int] = []
    model.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    seen: dict[str, torch.Tensor] = {}
    original = torch.nn.functional.cross_entropy

    def spy(logits: torch.Tensor, labels: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        seen["labels" if logits.shape[1] == 2 else "class_labels"] = labels
        return original(logits, labels, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", spy)
    source, target = torch.randn(4, 3, 32, 32), torch.randn(6, 3, 32, 32)
    loss = _step(model, (source, torch.tensor([0, 1, 2, 0]), target))
    assert calls == [10]  # both domains in one pass through the backbone (and its BatchNorm layers)
    assert seen["labels"].dtype == torch.long
    assert seen["labels"].tolist() == [0] * 4 + [1] * 6
    loss.backward()
    assert all(p.grad is not None for p in model.domain_classifier.parameters())


def test_reversed_domain_gradient_reaches_the_features_scaled_by_lambda(tmp_path: Path, monkeypatch) -> None:
    model = _model("dann", tmp_path, "model.domain_dropout=0.0").train()
    model.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    model._total_steps = 10
    source, labels, target = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]), torch.randn(4, 3, 32, 32)
    grads = {}
    for step in (0, 5, 10):
        # global_step comes from the trainer: p = step / 10
        monkeypatch.setattr(DANNClassifier, "global_step", property(lambda self, s=step: s))
        model.zero_grad()
        model.training_step((source, labels, target), 0).backward()
        assert model.reversal.coefficient == pytest.approx(reversal_coefficient(step / 10))
        grads[step] = model.head.bottleneck[0].weight.grad.clone()
    # The label loss's gradient is the same each time; the domain part enters scaled by -lambda, so the
    # change from p=0 (lambda=0) grows with lambda.
    change_half = (grads[5] - grads[0]).norm().item() / reversal_coefficient(0.5)
    change_full = (grads[10] - grads[0]).norm().item() / reversal_coefficient(1.0)
    assert change_half > 0
    assert change_half == pytest.approx(change_full, rel=1e-4)


def test_proxy_a_distance_is_near_two_for_separable_and_near_zero_for_identical_domains() -> None:
    generator = torch.Generator().manual_seed(0)
    same_a = torch.randn(200, 8, generator=generator)
    same_b = torch.randn(200, 8, generator=generator)
    far = torch.randn(200, 8, generator=generator) + 5.0
    assert proxy_a_distance(same_a, far) == pytest.approx(2.0, abs=0.05)
    assert proxy_a_distance(same_a, same_b) < 0.4
    assert proxy_a_distance(same_a[:3], far) is None
    with torch.inference_mode():  # as Lightning's test loop calls it
        assert proxy_a_distance(same_a, far) == pytest.approx(2.0, abs=0.05)
