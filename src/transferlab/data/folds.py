"""Stratified k-fold cross-validation: deterministic folds over a pool of samples, and their record."""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transferlab.data.records import relative_samples, write_record
from transferlab.errors import UserError

Sample = tuple[str, int]
"""An image path and its class index."""

FOLDS_FILE_VERSION = 1


def check_fold_args(num_folds: int | None, fold: int) -> None:
    """Check ``data.num_folds`` and ``data.fold``.

    Args:
        num_folds: number of folds K, or None for no cross-validation.
        fold: index of the fold used for validation, in ``[0, K)``.

    Raises:
        UserError: K is not a whole number of at least 2, or ``fold`` is outside ``[0, K)``.
    """
    if num_folds is None:
        return
    if isinstance(num_folds, bool) or not isinstance(num_folds, int) or num_folds < 2:
        raise UserError(
            f"data.num_folds must be a whole number of at least 2 (or null for no cross-validation), got "
            f"{num_folds!r}."
        )
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < num_folds:
        raise UserError(
            f"data.fold={fold!r} is out of range for data.num_folds={num_folds}: use 0 to {num_folds - 1} "
            f"(all folds: -m data.fold=$(seq -s, 0 {num_folds - 1}))."
        )


def stratified_folds(
    samples: Sequence[Sample], num_folds: int, seed: int, *, class_names: Sequence[str] | None = None
) -> list[list[Sample]]:
    """Deal samples into ``num_folds`` folds, class by class, so every fold keeps the class shares.

    Per class, the paths are sorted, shuffled with ``seed`` and dealt round robin; each class starts at the
    fold after where the previous class stopped, so fold sizes differ by at most one. The folds depend
    only on the set of samples and the seed, not on their order.

    Args:
        samples: ``(path, class_index)`` pairs.
        num_folds: number of folds, at least 2.
        seed: seed of the shuffle.
        class_names: names by class index, for error messages.

    Returns:
        ``num_folds`` lists of samples, each sorted by path; together they are ``samples``, disjoint.

    Raises:
        UserError: ``num_folds`` is invalid, or a class has fewer than ``num_folds`` samples (a fold
            would have none of it to validate on).
    """
    check_fold_args(num_folds, 0)
    by_class: dict[int, list[str]] = defaultdict(list)
    for path, label in samples:
        by_class[label].append(path)
    rng = random.Random(seed)
    folds: list[list[Sample]] = [[] for _ in range(num_folds)]
    start = 0
    for label in sorted(by_class):
        paths = sorted(by_class[label])  # sort first: the input order must not change the folds
        if len(paths) < num_folds:
            name = class_names[label] if class_names is not None and 0 <= label < len(class_names) else label
            raise UserError(
                f"Class '{name}' has {len(paths)} image{'s' if len(paths) != 1 else ''} to cross-validate "
                f"on, fewer than data.num_folds={num_folds}: some folds would not validate on it. Add images "
                f"to that class or lower data.num_folds to at most {len(paths)}."
            )
        rng.shuffle(paths)
        for i, path in enumerate(paths):
            folds[(start + i) % num_folds].append((path, label))
        start = (start + len(paths)) % num_folds
    for fold in folds:
        fold.sort()
    return folds


def fold_split(folds: Sequence[Sequence[Sample]], fold: int) -> tuple[list[Sample], list[Sample]]:
    """Training and validation samples for one fold: fold ``fold`` validates, the others train.

    Args:
        folds: the folds, from :func:`stratified_folds`.
        fold: index of the validation fold.

    Returns:
        ``(train, val)``, each sorted by path.
    """
    check_fold_args(len(folds), fold)
    train = sorted(sample for i, part in enumerate(folds) if i != fold for sample in part)
    return train, sorted(folds[fold])


def write_folds(
    folds: Sequence[Sequence[Sample]],
    path: str | os.PathLike[str],
    *,
    fold: int,
    seed: int,
    root: str | os.PathLike[str],
    class_names: Sequence[str],
    test: Sequence[Sample] = (),
) -> Path:
    """Write the fold assignment as JSON, with image paths relative to ``root``, atomically.

    The file looks like ``{"version": 1, "root": "/abs/root", "class_names": [...], "num_folds": 5,
    "fold": 0, "seed": 0, "folds": [[["cat/001.jpg", 2], ...], ...], "test": [...]}``.

    Args:
        folds: the folds.
        path: the JSON file to write (parent folders are created).
        fold: the fold this run validates on.
        seed: the seed the folds were dealt with.
        root: the folder the image paths are made relative to.
        class_names: names by class index.
        test: the test samples, held out of every fold.

    Returns:
        The path written.
    """
    document = {
        "version": FOLDS_FILE_VERSION,
        "root": str(Path(root).absolute()),
        "class_names": list(class_names),
        "num_folds": len(folds),
        "fold": fold,
        "seed": seed,
        "folds": [relative_samples(part, root) for part in folds],
        "test": relative_samples(test, root),
    }
    return write_record(document, path)


def read_folds(path: str | os.PathLike[str]) -> tuple[list[list[Sample]], dict[str, Any]]:
    """Read a file written by :func:`write_folds`.

    Returns:
        The folds (paths joined to the recorded root) and the whole document.

    Raises:
        UserError: the file is missing or is not a folds file.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        root = Path(document["root"])
        folds = [[(str(root / rel), int(label)) for rel, label in part] for part in document["folds"]]
        return folds, document
    except FileNotFoundError:
        raise UserError(f"Folds file not found: {path}. Check the path.") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path} is not a transferlab folds file ({err!r}); it may be damaged.") from None
