"""A short example run: fit a least-squares problem with fastopt.adam_step on every CPU backend.

    python examples/quickstart.py
"""

import time

import numpy as np

import fastopt


def fit(backend: str, steps: int = 200, n: int = 1 << 16) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    target = rng.standard_normal(n).astype(np.float32)
    param = np.zeros(n, np.float32)
    exp_avg, exp_avg_sq = np.zeros_like(param), np.zeros_like(param)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        grad = param - target  # gradient of 0.5 * ||param - target||^2
        fastopt.adam_step(param, grad, exp_avg, exp_avg_sq, step=step, lr=0.05,
                          backend=backend)
    elapsed = time.perf_counter() - start
    return float(np.sqrt(np.mean((param - target) ** 2))), elapsed


def main() -> None:
    print(f"Adam, {1 << 16} float32 parameters, 200 steps, least squares")
    for backend in ("numba", "numpy"):
        fit(backend, steps=2)  # compile / warm up
        rmse, elapsed = fit(backend)
        print(f"  {backend:<6} final RMS error {rmse:.2e}   {elapsed * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
