"""What the two files a training epoch writes cost the training loop, ours against the plain way.

Every epoch a run writes TensorBoard pictures (a predictions grid and a confusion matrix, about 100 kB
of PNG) and rewrites ``last.ckpt`` (14 MB for EfficientNet-Lite0). Two rows, each side by side in
alternating rounds (median):

- **event-file checksum of a 100 kB picture record**: transferlab's CRC-32C in C
  (``transferlab.utils.event_checksums``) against TensorBoard's pure-Python fallback, which
  ``torch.utils.tensorboard`` uses when TensorFlow is not installed. Both give the same checksum (checked).
- **replacing a 14 MB file**: the time the writer waits in transferlab's atomic write (the old file set
  aside and freed on a background thread, ``transferlab.utils.replaced_files``) against a plain
  ``os.replace`` onto the old file, which frees its blocks inside the rename. The new file is written
  before the clock starts on both sides.

    python benchmarks/bench_epoch_writes.py               # about 30 s on 2 cores
    python benchmarks/bench_epoch_writes.py --rounds 3 --checkpoint-mb 4
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

from transferlab.utils.atomic import replace_file
from transferlab.utils.event_checksums import masked_crc32c


def time_checksums(record: bytes, rounds: int) -> tuple[float, float]:
    """Median seconds per checksum of ``record``: TensorBoard's Python one, then ours."""
    if masked_crc32c(record) != pywrap_tensorflow.masked_crc32c(record):
        sys.exit("the two checksums differ")
    python, ours = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        pywrap_tensorflow.masked_crc32c(record)
        python.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(100):
            masked_crc32c(record)
        ours.append((time.perf_counter() - start) / 100)
    return statistics.median(python), statistics.median(ours)


def time_replacements(folder: Path, size: int, rounds: int) -> tuple[float, float]:
    """Median seconds the writer waits to replace a ``size``-byte file: plain rename, then ours."""
    target, fresh = folder / "last.ckpt", folder / "new.tmp"
    payload = os.urandom(size)
    for path in (target, fresh):
        path.write_bytes(payload)
    plain, ours = [], []
    for round_index in range(rounds):
        for name in ("plain", "ours") if round_index % 2 == 0 else ("ours", "plain"):
            fresh.write_bytes(payload)
            os.sync()  # both sides start with their blocks written out, as after a checkpoint's write
            start = time.perf_counter()
            if name == "plain":
                os.replace(fresh, target)
                plain.append(time.perf_counter() - start)
            else:
                replace_file(fresh, target)
                ours.append(time.perf_counter() - start)
                # Not counted: the background thread's part. Polled, not waited for through
                # wait_for_released_files, which stops the thread: in training it stays up.
                while len(list(folder.iterdir())) > 1:
                    time.sleep(0.001)
    return statistics.median(plain), statistics.median(ours)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds per row")
    parser.add_argument("--record-kb", type=int, default=100, help="size of the picture record")
    parser.add_argument("--checkpoint-mb", type=float, default=14.0, help="size of the replaced file")
    args = parser.parse_args()

    python, c = time_checksums(os.urandom(args.record_kb * 1000), args.rounds)
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as folder:
        plain, ours = time_replacements(Path(folder), int(args.checkpoint_mb * 1e6), args.rounds)

    command = "python benchmarks/bench_epoch_writes.py " + shlex.join(sys.argv[1:])
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores"
    print(f"\n{dt.date.today()}, {machine}, Python {platform.python_version()}; `{command.strip()}`\n")
    print("| what | ours | plain | ratio |")
    print("|---|---|---|---|")
    print(
        f"| event-file checksum of a {args.record_kb} kB picture record | {c * 1e6:.1f} us (C) "
        f"| {python * 1e3:.1f} ms (TensorBoard's Python) | **{python / c:.0f}x** |"
    )
    print(
        f"| replacing a {args.checkpoint_mb:g} MB checkpoint, the writer's wait | {ours * 1e3:.2f} ms "
        f"(old file freed on a thread) | {plain * 1e3:.2f} ms (freed in the rename) "
        f"| **{plain / ours:.0f}x** |"
    )


if __name__ == "__main__":
    main()
