"""Running a Hydra task: config tree at start, one clear line for user errors, no traceback soup."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import rich.syntax
import rich.tree
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from rich.console import Console

from transferlab.errors import UserError
from transferlab.utils.processes import restore_default_start_method

EXIT_USER_ERROR = 2
DEFAULT_ORDER = ("data", "backbone", "model", "callbacks", "logger", "trainer", "paths")


@rank_zero_only
def print_config_tree(cfg: DictConfig, order: Sequence[str] = DEFAULT_ORDER) -> None:
    """Print the composed config as a tree, main groups first."""
    tree = rich.tree.Tree("config", style="dim", guide_style="dim")
    fields = [f for f in order if f in cfg] + [f for f in cfg if f not in order and f != "hydra"]
    for field in fields:
        branch = tree.add(str(field), style="bold")
        node = cfg[field]
        text = OmegaConf.to_yaml(node, resolve=False) if isinstance(node, DictConfig) else str(node)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    Console(stderr=False).print(tree)


def find_user_error(err: BaseException) -> UserError | None:
    """The UserError behind ``err``, also when Hydra's instantiate wrapped it."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def run_task(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``task(cfg)``; a user error becomes one red line on stderr and exit status 2.

    The task's process first gets the platform's multiprocessing start method (a parallel launcher's worker
    process may have another one, see :func:`~transferlab.utils.processes.restore_default_start_method`).
    """
    restore_default_start_method()
    try:
        return task(cfg)
    except MissingMandatoryValue as err:  # a ``???`` value of the config the command line did not set
        key = err.full_key or "a required value"
        message = f"{key} is required and not set: add {key}=... to the command (see --help)."
        Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except Exception as err:
        user_error = find_user_error(err)
        if user_error is None:
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {user_error}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
