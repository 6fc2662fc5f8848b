"""The commands a README shows, found by the convention tests/test_readme.py documents.

A command is a line of a fenced ```bash block, or in a markdown table row the first inline code span of a
cell, that starts with one of :data:`COMMAND_PREFIXES` (after optional ``NAME=value`` environment
assignments). A comment that ends with one of :data:`MARKERS`: the command needs something this machine
lacks. ``make`` commands are read through the Makefile: a target whose recipe is one entry point call
becomes that call.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

COMMAND_PREFIXES = ("transferlab-", "make ", "python ", "tensorboard --")
# trailing comment -> what the command needs that this machine lacks
MARKERS = {
    "# needs a GPU": "a GPU",
    "# needs a SLURM cluster": "a SLURM cluster",
    "# needs internet": "internet (weights not in the local caches)",
}
_ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S+$")
_CODE_SPAN = re.compile(r"`([^`]+)`")
_CELL_BORDER = re.compile(r"(?<!\\)\|")  # a pipe that is not escaped (GFM: even inside a code span)
_MAKE_VARIABLE = re.compile(r"\$\((\w+)\)")


@dataclass(frozen=True)
class ReadmeCommand:
    """One command of the README.

    Attributes:
        text: the command as written, without its trailing comment.
        line: its line number in the README (1-based).
        needs: what it needs that this machine lacks (from its marker), or None.
        env: leading ``NAME=value`` environment assignments.
        argv: the words after them.
    """

    text: str
    line: int
    needs: str | None
    env: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()

    @property
    def program(self) -> str:
        return self.argv[0]

    def __str__(self) -> str:
        return f"README.md line {self.line}: `{self.text}`"


def _split_comment(line: str) -> tuple[str, str]:
    """``(command, comment)``: the comment starts at the first `` #`` outside quotes."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index:].strip()
    return line.rstrip(), ""


def parse_command(text: str, line: int) -> ReadmeCommand | None:
    """The command ``text`` (with its comment), or None when it is not a command by the convention."""
    command, comment = _split_comment(text.strip())
    words = shlex.split(command) if command else []
    env = {}
    while words and _ENV_ASSIGNMENT.match(words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    if not words or not (" ".join(words) + " ").startswith(COMMAND_PREFIXES):
        return None
    needs = next((what for marker, what in MARKERS.items() if comment.endswith(marker)), None)
    return ReadmeCommand(command, line, needs, env, tuple(words))


def _table_row_commands(row: str, line: int) -> list[ReadmeCommand]:
    """The commands of a markdown table row: in each cell, the first code span that is one."""
    commands = []
    for cell in _CELL_BORDER.split(row):
        spans = _CODE_SPAN.findall(cell.replace("\\|", "|"))
        command = next((c for c in (parse_command(span, line) for span in spans) if c), None)
        if command:
            commands.append(command)
    return commands


def readme_commands(readme: Path) -> list[ReadmeCommand]:
    """Every command of ``readme``, in order (``\\`` continuation lines joined)."""
    commands: list[ReadmeCommand] = []
    in_block, is_bash, pending, start = False, False, "", 0
    for number, raw in enumerate(readme.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            in_block, is_bash = (False, False) if in_block else (True, stripped[3:].strip() == "bash")
            continue
        if in_block and is_bash:
            if not pending:
                start = number
            pending += raw.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            found = parse_command(pending, start)
            pending = ""
            if found:
                commands.append(found)
        elif not in_block and stripped.startswith("|"):
            commands += _table_row_commands(stripped, number)
    return commands


@dataclass(frozen=True)
class MakeTarget:
    """A Makefile target: its recipe lines and the variables it reads."""

    name: str
    recipe: tuple[str, ...]


def make_targets(makefile: Path) -> tuple[dict[str, MakeTarget], dict[str, str]]:
    """The targets of ``makefile`` with their recipes, and its ``NAME ?= value`` defaults."""
    targets: dict[str, MakeTarget] = {}
    defaults: dict[str, str] = {}
    current: str | None = None
    recipe: list[str] = []
    for raw in [*makefile.read_text().splitlines(), ""]:
        if raw.startswith("\t") and current:
            recipe.append(raw.strip())
            continue
        if current:
            targets[current] = MakeTarget(current, tuple(recipe))
            current, recipe = None, []
        default = re.match(r"^(\w+)\s*\?=\s*(.*)$", raw)
        if default:
            defaults[default.group(1)] = default.group(2).strip()
        rule = re.match(r"^([a-z][\w-]*)\s*:(?!=)", raw)
        if rule:
            current = rule.group(1)
    return targets, defaults


def make_invocation(command: ReadmeCommand, makefile: Path) -> tuple[str, list[str]]:
    """``(target, argv)`` of a ``make`` command: argv is the target's recipe when it is a single call of
    a console script of the environment (``"$(BIN)/NAME" ...``), with the command's variables filled in,
    else empty.

    Raises:
        KeyError: the Makefile has no such target.
    """
    words = list(command.argv[1:])
    variables = dict(word.split("=", 1) for word in words if "=" in word)
    (target,) = [word for word in words if "=" not in word] or ["help"]
    targets, defaults = make_targets(makefile)
    recipe = targets[target].recipe
    if len(recipe) != 1 or not recipe[0].startswith('"$(BIN)/'):
        return target, []
    values = {**defaults, **variables}
    line = _MAKE_VARIABLE.sub(
        lambda m: "BIN" if m.group(1) == "BIN" else values.get(m.group(1), ""), recipe[0]
    )
    argv = shlex.split(line)
    argv[0] = argv[0].removeprefix("BIN/")
    return target, argv


def sweep_combinations(overrides: list[str]) -> list[list[str]]:
    """The jobs of a ``-m`` grid: one override list per combination of comma-separated values.

    Only plain comma lists are expanded (``a=1,2``); the README uses no other sweep syntax.
    """
    choices = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and "," in value and not value.startswith(("[", "{", "'", '"')):
            choices.append([f"{key}={v}" for v in value.split(",")])
        else:
            choices.append([override])
    return [list(combo) for combo in itertools.product(*choices)]
