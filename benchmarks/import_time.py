"""Time ``import fastopt`` plus the first adam_step, with a cold and with a warm Numba cache.

    python benchmarks/import_time.py

Each figure is the median of fresh interpreter runs (subprocesses), measured inside the child
with time.perf_counter from before ``import fastopt`` to after the first 4096-element adam_step.
"""

import statistics
import subprocess
import sys
import tempfile

CHILD = """
import time
t0 = time.perf_counter()
import numpy as np
import fastopt
p = np.ones(4096, np.float32); g = np.full(4096, 0.1, np.float32)
fastopt.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), step=1)
print(time.perf_counter() - t0)
"""


def run(cache_dir: str) -> float:
    env = {"NUMBA_CACHE_DIR": cache_dir}
    import os
    env = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip())


def main(repeat: int = 5) -> None:
    cold, warm = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            cold.append(run(d))
            warm.append(run(d))
    print(f"import fastopt + first adam_step, cold cache (compiles): "
          f"median {statistics.median(cold):.2f} s over {repeat}")
    print(f"import fastopt + first adam_step, warm cache:            "
          f"median {statistics.median(warm):.2f} s over {repeat}")


if __name__ == "__main__":
    main()
