"""The gradient reversal layer of DANN: identity forward, gradient times ``-lambda`` backward."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        # view_as: a new tensor node, so autograd calls backward below (returning x itself would not).
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output.neg() * ctx.coefficient, None


def reverse_gradient(x: torch.Tensor, coefficient: float) -> torch.Tensor:
    """``x`` unchanged; in the backward pass the gradient is multiplied by ``-coefficient``."""
    return _ReverseGradient.apply(x, float(coefficient))


class GradientReversal(nn.Module):
    """Module form of :func:`reverse_gradient`; the training loop sets ``coefficient`` (lambda) each step.

    The features below it are trained to *increase* the loss of whatever sits above it (the domain
    classifier), while that classifier itself is trained normally.

    Args:
        coefficient: the initial lambda.
    """

    def __init__(self, coefficient: float = 1.0) -> None:
        super().__init__()
        self.coefficient = float(coefficient)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.coefficient)

    def extra_repr(self) -> str:
        return f"coefficient={self.coefficient:g}"
