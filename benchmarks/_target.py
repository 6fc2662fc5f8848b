"""The exit status every benchmark gives when it measured fine but its figure missed the target.

It differs from the statuses of a failure, so that a caller (tests/test_readme_benchmarks.py, a CI job) can
tell "measured, below target" from "did not measure": 1 is an uncaught exception or a failed sub-run
(``sys.exit("message")``), 2 is a rejected argument (argparse), 3 is bench_gpu_amp.py's "no CUDA GPU here".
"""

from __future__ import annotations

import sys
from typing import NoReturn

BELOW_TARGET = 4


def below_target(message: str) -> NoReturn:
    """Print ``message`` (the figure against its target) to stderr; exit with :data:`BELOW_TARGET`."""
    print(message, file=sys.stderr)
    sys.exit(BELOW_TARGET)
