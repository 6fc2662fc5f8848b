"""TensorBoard event files checksummed in C are byte for byte those of TensorBoard's pure-Python checksum."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import record_writer
from torch.utils.tensorboard import SummaryWriter

from transferlab.callbacks.tensorboard_png import PngSummaryWriter
from transferlab.utils.event_checksums import masked_crc32c, use_fast_event_checksums


@pytest.mark.parametrize("size", [0, 1, 3, 8, 13, 64, 1000, 100_003])
def test_checksum_equals_tensorboards_own(size: int) -> None:
    data = os.urandom(size)
    assert masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data)
    assert masked_crc32c(bytearray(data)) == pywrap_tensorflow.masked_crc32c(data)


def _records(data: bytes) -> list[tuple[bytes, int, bytes, int]]:
    """The TFRecord framing of an event file: (length bytes, their checksum, payload, its checksum)."""
    records, offset = [], 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        payload = data[offset + 12 : offset + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
        records.append((header, header_crc, payload, payload_crc))
        offset += 16 + length
    return records


def test_pictures_switch_tensorboard_to_the_checksum_in_c_with_the_same_checksums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record_writer, "masked_crc32c", pywrap_tensorflow.masked_crc32c)
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(3)]
    writer, png = SummaryWriter(tmp_path), PngSummaryWriter()
    for step, picture in enumerate(pictures):
        png.add(writer, "val/predictions", picture, step)
        writer.add_scalar("val/acc", step / 10, step)
    writer.close()
    assert record_writer.masked_crc32c is masked_crc32c

    (events,) = tmp_path.glob("events.out.tfevents.*")
    records = _records(events.read_bytes())
    assert len(records) == 7  # the file's version record, then a picture and a scalar per step
    assert max(len(payload) for _, _, payload, _ in records) > 50_000  # the pictures: large records
    for header, header_crc, payload, payload_crc in records:
        assert header_crc == pywrap_tensorflow.masked_crc32c(header)
        assert payload_crc == pywrap_tensorflow.masked_crc32c(payload)
    images = EventAccumulator(str(tmp_path), size_guidance={"images": 0}).Reload().Images("val/predictions")
    assert [(image.step, image.width, image.height) for image in images] == [
        (0, 160, 120),
        (1, 160, 120),
        (2, 160, 120),
    ]


def test_a_checksum_other_than_tensorboards_fallback_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def other(data: bytes) -> int:
        return 0

    monkeypatch.setattr(record_writer, "masked_crc32c", other)
    assert use_fast_event_checksums() is False
    assert record_writer.masked_crc32c is other
