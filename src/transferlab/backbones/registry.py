"""Name -> builder registry. Each family module registers its entries with :func:`register_backbone`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from transferlab.backbones.base import Backbone
from transferlab.errors import UserError
from transferlab.preprocessing import Preprocessing


class BuildFn(Protocol):
    """Builds the backbone with pretrained weights (``pretrained=True``) or random ones."""

    def __call__(self, *, pretrained: bool, preprocessing: Preprocessing, **options: Any) -> Backbone: ...


PreprocessingFn = Callable[..., Preprocessing]


@dataclass(frozen=True)
class BackboneEntry:
    """One registered backbone.

    Attributes:
        name: registry name.
        build: builder; receives ``pretrained``, the final ``preprocessing`` and the entry's options.
        preprocessing: cheap function of the same options returning the default :class:`Preprocessing`
            (no model is built, no weights are read).
    """

    name: str
    build: BuildFn
    preprocessing: PreprocessingFn

    def option_names(self) -> list[str]:
        """Keyword options the entry accepts (those of its preprocessing function)."""
        return list(inspect.signature(self.preprocessing).parameters)

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise UserError for options the entry does not know."""
        unknown = sorted(set(options) - set(self.option_names()))
        if unknown:
            accepted = ", ".join(self.option_names()) or "none"
            raise UserError(f"Backbone {self.name!r} has no option(s) {unknown}; it accepts: {accepted}.")


_REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(name: str, *, preprocessing: PreprocessingFn) -> Callable[[BuildFn], BuildFn]:
    """Register the decorated builder under ``name``.

    Args:
        name: registry name users select.
        preprocessing: function of the entry's options returning its default :class:`Preprocessing`.
    """

    def decorate(build: BuildFn) -> BuildFn:
        if name in _REGISTRY:
            raise ValueError(f"Backbone {name!r} is registered twice.")
        _REGISTRY[name] = BackboneEntry(name=name, build=build, preprocessing=preprocessing)
        return build

    return decorate


def available_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> BackboneEntry:
    """The entry registered as ``name``.

    Raises:
        UserError: no such backbone; the message lists the available ones.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UserError(
            f"Unknown backbone {name!r}. Available backbones: {', '.join(available_backbones())}."
        ) from None
