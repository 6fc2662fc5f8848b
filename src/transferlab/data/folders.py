"""Scanning image-folder trees: ``root/<class>/*`` or ``root/{train,val,test}/<class>/*``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from transferlab.data.images import IMAGE_EXTENSIONS, is_image_file
from transferlab.errors import UserError

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Split folder names of a pre-split tree, and the keys of every split mapping."""

_LAYOUT_HELP = (
    "one folder of images per class, root/<class>/, or root/train/<class>/, root/val/<class>/ and "
    "root/test/<class>/"
)


@dataclass(frozen=True)
class FolderLayout:
    """How a data root is organised; found by :func:`find_layout` from directory listings only.

    Attributes:
        root: the data root, absolute.
        presplit: True for ``root/{train,val,test}/<class>/``, False for ``root/<class>/``.
        class_names: sorted class folder names (the same in every split).
    """

    root: Path
    presplit: bool
    class_names: tuple[str, ...]

    def split_dirs(self) -> dict[str, Path]:
        """The folder holding the class folders, per split (``{"all": root}`` when not pre-split)."""
        if self.presplit:
            return {split: self.root / split for split in SPLITS}
        return {"all": self.root}


def list_classes(split_dir: str | os.PathLike[str]) -> list[str]:
    """Names of the class folders in ``split_dir``, sorted; hidden folders are ignored.

    Args:
        split_dir: a folder whose subfolders are classes.

    Raises:
        UserError: ``split_dir`` is not a folder.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise UserError(f"Not a folder: {split_dir.absolute()}. Expected {_LAYOUT_HELP}.")
    return sorted(entry.name for entry in os.scandir(split_dir) if _is_visible_dir(entry))


def list_samples(
    split_dir: str | os.PathLike[str], class_names: list[str] | tuple[str, ...]
) -> list[tuple[str, int]]:
    """Image files under ``split_dir/<class>/`` (subfolders included), labelled by class index.

    Hidden files and folders and files that are not images (by extension) are skipped.

    Args:
        split_dir: a folder holding one subfolder per class.
        class_names: the classes, in label order; ``class_names[i]`` gets label ``i``.

    Returns:
        ``(path, class_index)`` pairs sorted by path; paths are ``split_dir`` joined with the file's
        relative path.

    Raises:
        UserError: a class folder is missing or holds no image files.
    """
    split_dir = Path(split_dir)
    samples: list[tuple[str, int]] = []
    for index, name in enumerate(class_names):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            raise UserError(
                f"Class folder missing: {class_dir.absolute()}. Every split needs a folder for each class "
                f"({', '.join(class_names)}); create it with images of '{name}'."
            )
        files = _image_files(class_dir)
        if not files:
            raise UserError(
                f"Class folder {class_dir.absolute()} has no image files (looked for "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}). Add images of '{name}' or remove the folder."
            )
        samples.extend((path, index) for path in files)
    samples.sort()
    return samples


def find_layout(root: str | os.PathLike[str]) -> FolderLayout:
    """Work out how ``root`` is organised and check its class folders agree.

    Only lists directories (no per-file walk), so it is cheap enough to call before ``setup()``.

    Args:
        root: the data root.

    Returns:
        The layout and class names.

    Raises:
        UserError: ``root`` is missing; holds neither split nor class folders; holds some but not all of
            ``train/``, ``val/``, ``test/``; its splits have different class folders; or it has fewer
            than two classes.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "not found"
        raise UserError(
            f"Data root {what}: {root}. Set data.root to a folder with {_LAYOUT_HELP} "
            "(relative paths start from the current directory), or set data.demo=animal_mnist to "
            "write the demo data there."
        )
    present = [split for split in SPLITS if (root / split).is_dir()]
    if present:
        missing = [split for split in SPLITS if split not in present]
        if missing:
            to_create = " and ".join(str(root / s) for s in missing)
            raise UserError(
                f"Data root {root} has {', '.join(s + '/' for s in present)} but no "
                f"{', '.join(s + '/' for s in missing)}. Create {to_create} "
                "with the same class folders, or put all images in root/<class>/ folders (without "
                "train/val/test) so transferlab splits them itself."
            )
        per_split = {split: list_classes(root / split) for split in SPLITS}
        _check_same_classes(root, per_split)
        class_names = per_split["train"]
        where = root / "train"
    else:
        class_names = list_classes(root)
        where = root
        if not class_names:
            raise UserError(
                f"Data root {root} has neither train/, val/, test/ folders nor class folders. Expected "
                f"{_LAYOUT_HELP}."
            )
    if len(class_names) < 2:
        raise UserError(
            f"Found {len(class_names)} class folder in {where} ({', '.join(class_names)}); classification "
            "needs at least 2. Add one folder of images per class."
        )
    return FolderLayout(root=root, presplit=bool(present), class_names=tuple(class_names))


def _check_same_classes(root: Path, per_split: dict[str, list[str]]) -> None:
    every = set().union(*per_split.values())
    problems = [
        f"{split}/ lacks {', '.join(sorted(every - set(names)))}"
        for split, names in per_split.items()
        if every - set(names)
    ]
    if problems:
        raise UserError(
            f"The splits in {root} have different class folders: {'; '.join(problems)}. Give train/, val/ "
            "and test/ the same class folders (add the missing ones with images, or remove the extra ones)."
        )


def _image_files(class_dir: Path) -> list[str]:
    found = []
    # followlinks: class folders are often symlinks into a larger dataset kept elsewhere.
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(os.path.join(dirpath, name) for name in filenames if is_image_file(name))
    return found


def _is_visible_dir(entry: os.DirEntry[str]) -> bool:
    return not entry.name.startswith(".") and entry.is_dir()
