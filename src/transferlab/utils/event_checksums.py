"""TensorBoard event files checksummed in C instead of in Python.

Every record of an event file carries a CRC-32C of its bytes. Without TensorFlow installed, TensorBoard's
writer (which ``torch.utils.tensorboard`` and Lightning's ``TensorBoardLogger`` use) computes it in pure
Python, one byte at a time: about 30 ms per 100 kB, holding the interpreter lock on the writer's thread.
A training run that adds a predictions grid and a confusion matrix each epoch writes about 100 kB of
pictures per epoch, and on cached features an epoch costs only a few times that. The same checksum from
``google-crc32c`` (C, with the CPU's CRC instruction where there is one) takes microseconds; the files
are byte for byte the same.
"""

from __future__ import annotations

import google_crc32c
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import record_writer

_MASK_DELTA = 0xA282EAD8  # the TFRecord format's masking of a CRC (tensorflow/core/lib/hash/crc32c.h)


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C of ``data`` that TFRecord files (TensorBoard event files) store per record."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def use_fast_event_checksums() -> bool:
    """Make TensorBoard's event writer in this process checksum its records with :func:`masked_crc32c`.

    Replaces only TensorBoard's pure-Python fallback; a writer that already uses another checksum (a
    later TensorBoard, TensorFlow's) is left alone. Safe to call more than once.

    Returns:
        Whether the writer now uses :func:`masked_crc32c`.
    """
    if record_writer.masked_crc32c is pywrap_tensorflow.masked_crc32c:
        record_writer.masked_crc32c = masked_crc32c
    return record_writer.masked_crc32c is masked_crc32c
