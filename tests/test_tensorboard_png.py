"""Pictures written by PngSummaryWriter read back from TensorBoard as add_image's do, encoded once each."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from transferlab.callbacks import tensorboard_png
from transferlab.callbacks.tensorboard_png import PngSummaryWriter, encode_png


def _images(folder: Path, tag: str) -> list:
    events = EventAccumulator(str(folder), size_guidance={"images": 0}).Reload()
    return events.Images(tag)


def _pixels(event, mode: str | None = None) -> np.ndarray:
    picture = Image.open(io.BytesIO(event.encoded_image_string))
    return np.asarray(picture.convert(mode) if mode else picture)


def test_pictures_read_back_as_add_image_writes_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    ours, theirs = SummaryWriter(tmp_path / "ours"), SummaryWriter(tmp_path / "theirs")
    png = PngSummaryWriter()
    png.add(ours, "colour", colour, 3)
    png.add(ours, "grey", grey, 3)
    theirs.add_image("colour", colour, 3, dataformats="HWC")
    theirs.add_image("grey", grey, 3, dataformats="HW")
    ours.close(), theirs.close()
    for tag, picture in (("colour", colour), ("grey", grey)):
        (mine,), (reference,) = _images(tmp_path / "ours", tag), _images(tmp_path / "theirs", tag)
        expected = (3, picture.shape[1], picture.shape[0])
        assert (mine.step, mine.width, mine.height) == expected
        assert (reference.step, reference.width, reference.height) == expected
        assert np.array_equal(_pixels(mine), picture)
        # add_image stores a grey picture as RGB, this as grey: the same picture in TensorBoard
        assert np.array_equal(_pixels(mine, "RGB"), _pixels(reference, "RGB"))


def test_a_picture_equal_to_the_last_of_its_tag_is_not_encoded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[int] = []
    monkeypatch.setattr(
        tensorboard_png, "encode_png", lambda picture: encoded.append(picture.sum()) or encode_png(picture)
    )
    first = np.zeros((8, 8, 3), np.uint8)
    second = first.copy()
    second[2, 2] = 255
    writer, png = SummaryWriter(tmp_path), PngSummaryWriter()
    png.add(writer, "m", first, 0)
    png.add(writer, "m", first.copy(), 1)  # equal: the bytes of step 0 again
    png.add(writer, "m", second, 2)
    png.add(writer, "other", second, 2)  # another tag has its own last picture
    writer.close()
    assert len(encoded) == 3
    steps = _images(tmp_path, "m")
    assert [event.step for event in steps] == [0, 1, 2]
    assert steps[0].encoded_image_string == steps[1].encoded_image_string != steps[2].encoded_image_string
    assert np.array_equal(_pixels(steps[2]), second)


def test_only_uint8_pictures_are_encoded() -> None:
    with pytest.raises(TypeError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))
