"""The ``fastopt`` command line."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Sequence


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def info() -> str:
    """A report of this installation: versions, backends, threading, CPU."""
    import numba
    import numpy as np

    import fastopt
    from fastopt import _numba_backend  # sets the threading layer as fastopt runs it

    from .kernels.cpu import roofline_kernel

    # Start the thread pool so the threading layer it picked can be reported.
    x = np.zeros(1, np.float32)
    roofline_kernel(0, True)(x, x.copy(), ())
    lines = [
        f"fastopt {fastopt.__version__}",
        f"python {platform.python_version()} ({sys.executable})",
        f"numpy {np.__version__}",
        f"numba {numba.__version__}",
        f"threading layer: {numba.threading_layer()}",
        f"threads: {numba.get_num_threads()} (NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS})",
        f"parallel kernels from {_numba_backend.PARALLEL_MIN_SIZE} elements",
        f"cpu: {_cpu_name()} ({os.cpu_count()} logical cores)",
        f"numba cache dir: {numba.config.CACHE_DIR or '(next to the sources)'}",
        "backends:",
    ]
    for name, reason in fastopt.available_backends().items():
        lines.append(f"  {name:<11} {'available' if reason is None else 'unavailable: ' + reason}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastopt", description="Fused optimizer update kernels: tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print versions, backends, threading layer and CPU")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
