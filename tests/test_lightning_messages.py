"""Lightning's advertisement is kept out of the output; its other messages are not."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import lightning as L
import pytest
from omegaconf import DictConfig, OmegaConf

from transferlab.utils.instantiate import instantiate_trainer
from transferlab.utils.lightning_messages import LIGHTNING_RANK_ZERO_LOGGER


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(record.getMessage())


@pytest.fixture
def lightning_messages() -> Iterator[_Messages]:
    """What Lightning's rank-zero logger emits during the test, starting without our filter."""
    logger = logging.getLogger(LIGHTNING_RANK_ZERO_LOGGER)
    filters, level = list(logger.filters), logger.level
    logger.filters.clear()  # an earlier test of this process may have installed it
    logger.setLevel(logging.INFO)
    handler = _Messages()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.filters[:] = filters
        logger.setLevel(level)


def _trainer_config() -> DictConfig:
    return OmegaConf.create({"_target_": "lightning.Trainer", "accelerator": "cpu", "logger": False})


def test_a_plain_trainer_advertises(lightning_messages: _Messages) -> None:
    # The control: the message this project filters is still what Lightning prints.
    L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    assert any("litlogger" in text for text in lightning_messages.texts)


def test_our_trainer_drops_only_the_advertisement(lightning_messages: _Messages) -> None:
    trainer = instantiate_trainer(_trainer_config(), enable_checkpointing=False)
    assert isinstance(trainer, L.Trainer) and not trainer.checkpoint_callbacks  # kwargs reach the trainer
    assert any(text.startswith("GPU available") for text in lightning_messages.texts)
    assert not any("litlogger" in text for text in lightning_messages.texts)
    instantiate_trainer(_trainer_config())  # a second trainer installs no second filter
    assert len(logging.getLogger(LIGHTNING_RANK_ZERO_LOGGER).filters) == 1
