"""Issue 13, point 4: a mistyped data folder is an error, not the demo.

`transferlab-train data.root=DIR` (the README's way to train on your images) keeps the default data config,
which names the Animal-MNIST demo; the demo is written only to its own folder, never to DIR.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FAST_OVERRIDES, run_cli
from transferlab.data import ANIMAL_MNIST_CLASSES, ImageFolderDataModule
from transferlab.errors import UserError

SMALL = {"train": 2, "val": 1, "test": 1}


def test_mistyped_root_on_the_command_line_exits_with_one_line(tmp_path: Path) -> None:
    typo = tmp_path / "my_photoss"
    overrides = [o for o in FAST_OVERRIDES if not o.startswith("data=")]  # the default data config
    result = run_cli(
        "transferlab.train",
        *overrides,
        "data.demo_per_class={train:2,val:1,test:1}",
        f"data.root={typo}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    stderr = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and stderr.count("error:") == 1
    assert f"Data root not found: {typo}. Set data.root to the folder holding your images" in stderr
    assert f"demo is written only to {tmp_path / 'data' / 'animal_mnist'}" in stderr
    assert not typo.exists() and not (tmp_path / "data").exists()  # no demo written anywhere


def test_demo_goes_only_to_its_own_folder(tmp_path: Path) -> None:
    home = tmp_path / "data" / "animal_mnist"
    elsewhere = ImageFolderDataModule(
        str(tmp_path / "empty"), demo="animal_mnist", demo_per_class=SMALL, demo_root=str(home)
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"Data root is empty: .*empty\. Set data\.root"):
        elsewhere.prepare_data()
    assert list((tmp_path / "empty").iterdir()) == []
    at_home = ImageFolderDataModule(
        str(tmp_path / "data" / ".." / "data" / "animal_mnist"),
        demo="animal_mnist",
        demo_per_class=SMALL,
        demo_root=str(home),
    )
    at_home.prepare_data()
    assert at_home.class_names == list(ANIMAL_MNIST_CLASSES)
    # A folder of your own images next to the demo config is used as it is.
    mine = ImageFolderDataModule(str(home / "train"), demo="animal_mnist", demo_root=str(home))
    mine.prepare_data()
    assert mine.class_names == list(ANIMAL_MNIST_CLASSES)
