"""Config nodes as plain Python values."""

from __future__ import annotations

from typing import Any

from omegaconf import Container, OmegaConf


def to_container(value: Any) -> Any:
    """An OmegaConf node as plain dicts and lists (interpolations resolved); anything else unchanged.

    Module hyperparameters go into checkpoints, which hold plain containers only.
    """
    if isinstance(value, Container):
        return OmegaConf.to_container(value, resolve=True)
    return value


def require_plain(**values: Any) -> None:
    """Refuse OmegaConf nodes where plain values are needed (module hyperparameters, checkpoints).

    The model configs convert once when instantiated (``_convert_: all``); this catches a caller that
    passes a config node straight to a module.

    Raises:
        TypeError: a value is an OmegaConf node.
    """
    for name, value in values.items():
        if isinstance(value, Container):
            raise TypeError(
                f"{name} is an OmegaConf {type(value).__name__}; pass plain dicts and lists (instantiate "
                "the config with _convert_='all', or convert it with transferlab.utils.config.to_container)."
            )
