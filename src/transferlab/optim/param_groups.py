"""Optimizer parameter groups with explicit learning rates.

Every group carries its own ``lr``: Lightning and torch schedulers scale each group's initial lr, so a
discriminative or layer-wise rate must be baked into the group, not stored as a side key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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


def build_param_groups(
    head: nn.Module,
    backbone_blocks: Sequence[tuple[str, nn.Module | Sequence[nn.Module]]],
    lr: float,
    backbone_lr_factor: float = 0.1,
    layer_decay: float = 1.0,
    weight_decay: float = 0.0,
) -> list[dict]:
    """Groups for a head plus backbone blocks ordered from input to output.

    The head trains at ``lr``. The last backbone block trains at ``lr * backbone_lr_factor`` and each
    block below it at ``layer_decay`` times the rate of the block above (decay per block, not per tensor).
    Frozen parameters are left out, so call this after freezing.

    Args:
        head: the new classifier.
        backbone_blocks: (name, module or modules) pairs ordered from input to output.
        lr: head learning rate.
        backbone_lr_factor: backbone rate relative to the head (discriminative learning rate).
        layer_decay: per-block multiplier going down from the top block (1.0 = same rate everywhere).
        weight_decay: decay for weights; norms and biases get none.
    """
    groups = split_weight_decay(head.named_parameters(), weight_decay, lr, "head")
    top = len(backbone_blocks) - 1
    for index, (block_name, modules) in enumerate(backbone_blocks):
        block_lr = lr * backbone_lr_factor * layer_decay ** (top - index)
        module_list = [modules] if isinstance(modules, nn.Module) else list(modules)
        named = ((n, p) for m in module_list for n, p in m.named_parameters())
        groups += split_weight_decay(named, weight_decay, block_lr, f"backbone.{block_name}")
    return groups
