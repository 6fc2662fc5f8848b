"""SGD with Nesterov momentum, the optimizer of DANN (Ganin et al., 2016), with its settings as defaults."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def nesterov_sgd(
    params: Iterable[Any], momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 0.0
) -> torch.optim.SGD:
    """``torch.optim.SGD`` over parameter groups that each carry their own ``lr`` (and weight decay).

    A function rather than the class in the config, so that ``conf/model/optimizer/sgd.yaml`` states the
    defaults it uses (torch's own are no momentum and no Nesterov).
    """
    return torch.optim.SGD(params, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
