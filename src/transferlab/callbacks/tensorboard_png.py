"""Pictures added to TensorBoard as PNG straight from uint8 arrays, each distinct picture encoded once."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from transferlab.utils.event_checksums import use_fast_event_checksums

# zlib level 3: about half the encoding time of Pillow's default (6) for a few percent more bytes
PNG_COMPRESS_LEVEL = 3


def encode_png(picture: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """PNG bytes of an HWC uint8 picture with 1, 3 or 4 channels (or an HW grey one)."""
    if picture.dtype != np.uint8:
        raise TypeError(f"a picture to encode must be uint8, not {picture.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(picture.squeeze(-1) if picture.ndim == 3 and picture.shape[-1] == 1 else picture).save(
        buffer, format="PNG", compress_level=compress_level
    )
    return buffer.getvalue()


class PngSummaryWriter:
    """Adds HWC uint8 pictures to a TensorBoard ``SummaryWriter``, as its ``add_image`` does, only faster.

    ``add_image`` converts every picture to float and back and encodes it at Pillow's default level;
    this writes the uint8 pixels as they are, at :data:`PNG_COMPRESS_LEVEL`, and a picture equal to the
    last one of its tag (the same confusion matrix or predictions as the epoch before) is not encoded
    again. TensorBoard shows the same pictures either way. The event file's checksums of these large
    records are computed in C (:func:`~transferlab.utils.event_checksums.use_fast_event_checksums`), not by
    TensorBoard's pure-Python fallback, which would spend more time on them than a cached epoch costs.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[np.ndarray, bytes]] = {}

    def add(self, writer: SummaryWriter, tag: str, picture: np.ndarray, step: int) -> None:
        """Add ``picture`` (HWC uint8) under ``tag`` at ``step``."""
        use_fast_event_checksums()  # on each call: a callback unpickled in a spawned process ran no __init__
        if picture.ndim == 2:
            picture = picture[:, :, None]
        last = self._last.get(tag)
        if last is not None and (last[0] is picture or np.array_equal(last[0], picture)):
            png = last[1]
        else:
            png = encode_png(picture)
            self._last[tag] = (picture, png)
        height, width, channels = picture.shape
        image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
        # What add_image does with its Summary; SummaryWriter has no public call that takes one.
        writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
