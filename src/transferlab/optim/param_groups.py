"""Optimizer parameter groups with explicit learning rates and no weight decay on norms and biases.

The strategies build their groups from named parts and block groups
(:meth:`transferlab.strategies.TransferModule.param_groups`). Every group carries its own ``lr``:
Lightning and torch schedulers scale each group's initial lr, so a discriminative or layer-wise rate
must be baked into the group, not stored as a side key.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def split_weight_decay(
    named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float, lr: float, name: str
) -> list[dict]:
    """Split trainable parameters into a decayed group and a no-decay group (norm weights and biases).

    Args:
        named_params: (name, parameter) pairs; frozen parameters are skipped.
        weight_decay: decay for multi-dimensional weights (conv kernels, linear weights).
        lr: learning rate of both groups.
        name: prefix of the groups' ``name`` keys (shown by the learning-rate monitor).

    Returns:
        Up to two groups; empty groups are left out.
    """
    decay, no_decay = [], []
    for _, param in named_params:
        if not param.requires_grad:
            continue
        # 1-D tensors are biases and normalisation scales: decaying them only hurts.
        (no_decay if param.ndim <= 1 else decay).append(param)
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": name})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}/no_decay"})
    return groups
