"""Classification heads placed on top of a backbone's pooled features."""

from __future__ import annotations

from torch import nn

from transferlab.errors import UserError


def build_head(
    in_features: int, num_classes: int, hidden_dim: int | None = None, dropout: float = 0.0
) -> nn.Module:
    """A linear head, or a one-hidden-layer MLP when ``hidden_dim`` is a positive width.

    Args:
        in_features: the backbone's feature dimension.
        num_classes: number of output classes.
        hidden_dim: width of the hidden layer (``None`` or 0 = linear head).
        dropout: dropout before the last linear layer.
    """
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"model.head_dropout={dropout} must be in [0, 1).")
    if not hidden_dim:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    if hidden_dim < 0:
        raise UserError(f"model.head_hidden_dim={hidden_dim} must be a width > 0, or 0/null (linear head).")
    return nn.Sequential(
        nn.Linear(in_features, hidden_dim),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, num_classes),
    )
