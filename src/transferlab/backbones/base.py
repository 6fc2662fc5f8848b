"""The backbone contract shared by every family: features, preprocessing and parameter groups."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from transferlab.preprocessing import Preprocessing


@dataclass
class BlockGroup:
    """A slice of a backbone, e.g. the stem or one stage, used for freezing and per-group learning rates.

    Attributes:
        name: readable label, e.g. ``"stem"``, ``"blocks.3"``, ``"head_conv"``.
        modules: the modules of this group. Switching them to ``eval()`` freezes their BatchNorm statistics.
    """

    name: str
    modules: list[nn.Module]

    def parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter of the group's modules, each once."""
        seen: set[int] = set()
        for module in self.modules:
            for param in module.parameters():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield param


class ParameterSet(nn.Module):
    """Holds parameters that sit directly on a module whose children belong to other groups.

    Example: a ViT's ``cls_token`` lives on the model itself, next to blocks that form their own groups. The
    holder shares the same ``nn.Parameter`` objects and is never registered inside the backbone, so it
    neither duplicates state nor appears in ``state_dict()``.
    """

    def __init__(self, named: Sequence[tuple[str, nn.Parameter]]) -> None:
        super().__init__()
        for name, param in named:
            # Module attribute names cannot contain dots.
            self.register_parameter(name.replace(".", "__"), param)


class Backbone(nn.Module):
    """Feature extractor: images ``(B, 3, H, W)`` normalised as ``preprocessing`` says -> ``(B, D)``.

    ``D`` is ``feature_dim``.

    Attributes:
        name: registry name the backbone was built from.
        feature_dim: width of the pooled features returned by :meth:`forward`.
        preprocessing: what the input images must look like.
        imagenet_head: the pretrained classifier (``feature_dim -> 1000``) when the weights came with one,
            else None. It is not part of :meth:`forward` and not a registered submodule (so it is neither in
            ``parameters()`` nor in ``state_dict()``), but it follows ``.to()`` / ``.half()`` of the backbone.
    """

    def __init__(
        self,
        name: str,
        body: nn.Module,
        feature_dim: int,
        preprocessing: Preprocessing,
        groups: Sequence[tuple[str, Sequence[str]]],
        imagenet_head: nn.Module | None = None,
    ) -> None:
        """Wrap a feature module.

        Args:
            name: registry name.
            body: module mapping images to pooled features of width ``feature_dim``.
            feature_dim: output width of ``body``.
            preprocessing: input the body expects.
            groups: ``(group name, paths)`` ordered from input to output. A path names a submodule of
                ``body`` (``"layer1"``, ``"blocks.3"``) or, for parameters held directly by a module whose
                children are grouped elsewhere, a parameter (``"cls_token"``).
            imagenet_head: pretrained classifier on top of the features, if any.

        Raises:
            ValueError: the groups do not hold every parameter of ``body`` exactly once (a bug in the family
                builder, not a user error).
        """
        super().__init__()
        self.name = name
        self.body = body
        self.feature_dim = int(feature_dim)
        self.preprocessing = preprocessing
        self._groups = tuple((group, tuple(paths)) for group, paths in groups)
        # Stored outside nn.Module's registries on purpose: see the class docstring.
        self.__dict__["_imagenet_head"] = imagenet_head
        _check_groups_cover(self.block_groups(), list(self.body.parameters()))

    @property
    def imagenet_head(self) -> nn.Module | None:
        """The pretrained classifier on top of the features, or None (read-only)."""
        return self.__dict__["_imagenet_head"]

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``(B, feature_dim)`` of normalised images ``(B, 3, H, W)``."""
        return self.body(x)

    def block_groups(self) -> list[BlockGroup]:
        """Groups ordered from input to output; together they hold every parameter exactly once."""
        return [BlockGroup(group, self._resolve(paths)) for group, paths in self._groups]

    def _resolve(self, paths: Sequence[str]) -> list[nn.Module]:
        modules: list[nn.Module] = []
        loose: list[tuple[str, nn.Parameter]] = []
        for path in paths:
            try:
                modules.append(self.body.get_submodule(path))
            except AttributeError:
                loose.append((path, self.body.get_parameter(path)))
        if loose:
            modules.append(ParameterSet(loose))
        return modules

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Backbone:
        # nn.Module.to/cuda/half/float all go through _apply; move the unregistered head along.
        super()._apply(fn, recurse)
        head = self.__dict__.get("_imagenet_head")
        if head is not None:
            head._apply(fn, recurse)
        return self

    def extra_repr(self) -> str:
        return f"name={self.name!r}, feature_dim={self.feature_dim}"


def _check_groups_cover(groups: list[BlockGroup], params: list[nn.Parameter]) -> None:
    owner: dict[int, str] = {}
    for group in groups:
        for param in group.parameters():
            if id(param) in owner:
                raise ValueError(f"Parameter in both block groups {owner[id(param)]!r} and {group.name!r}.")
            owner[id(param)] = group.name
    ungrouped = sum(1 for p in params if id(p) not in owner)
    foreign = len(owner) - (len(params) - ungrouped)
    if ungrouped or foreign:
        raise ValueError(
            f"Block groups {[g.name for g in groups]} leave {ungrouped} parameter(s) out and hold "
            f"{foreign} parameter(s) that are not the backbone's."
        )
