"""Proxy A-distance (Ben-David et al., 2007): how well a linear classifier tells two domains apart."""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_PER_DOMAIN = 4
"""Fewest feature vectors per domain worth measuring (half train the classifier, half test it)."""


def proxy_a_distance(
    source: torch.Tensor, target: torch.Tensor, *, seed: int = 0, steps: int = 200, weight_decay: float = 1e-3
) -> float | None:
    """``2 (1 - 2 err)`` of a linear domain classifier on held-out features, in [0, 2].

    The same number of vectors is taken from each domain (a random subset of the larger one), so chance
    is an error of 0.5. Half of each domain trains a logistic regression (full-batch L-BFGS on
    standardised features, L2 penalty ``weight_decay``), the other half measures its error ``err``. 0 means
    the domains are indistinguishable to a linear classifier, 2 that they are perfectly separable; an error
    above chance counts as chance.

    Args:
        source: ``(n, d)`` features of source images (not used in training the model).
        target: ``(m, d)`` features of target images.
        seed: seed of the subsets and halves (the result depends on the inputs and the seed only).
        steps: L-BFGS iterations.
        weight_decay: L2 penalty of the classifier's weights.

    Returns:
        The proxy A-distance, or None when a domain has fewer than :data:`MIN_PER_DOMAIN` vectors.
    """
    count = min(len(source), len(target))
    if count < MIN_PER_DOMAIN:
        return None
    # Lightning tests under inference mode; this classifier needs autograd on fresh tensors.
    with torch.inference_mode(False), torch.enable_grad():
        return _a_distance(source.clone(), target.clone(), count, seed, steps, weight_decay)


def _a_distance(
    source: torch.Tensor, target: torch.Tensor, count: int, seed: int, steps: int, weight_decay: float
) -> float:
    generator = torch.Generator().manual_seed(seed)
    source = source.detach().double().cpu()[torch.randperm(len(source), generator=generator)[:count]]
    target = target.detach().double().cpu()[torch.randperm(len(target), generator=generator)[:count]]
    half = count // 2
    train_x = torch.cat([source[:half], target[:half]])
    train_y = torch.cat([torch.zeros(half), torch.ones(half)]).double()
    test_x = torch.cat([source[half:], target[half:]])
    test_y = torch.cat([torch.zeros(count - half), torch.ones(count - half)]).double()
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std

    weight = torch.zeros(train_x.shape[1], dtype=torch.double, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.double, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(train_x @ weight + bias, train_y)
        loss = loss + weight_decay * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        error = ((test_x @ weight + bias > 0).double() != test_y).double().mean().item()
    return 2.0 * (1.0 - 2.0 * min(error, 0.5))
