"""``fastopt check``: every available backend against the NumPy reference.

What a user runs after upgrading Numba, CUDA or a driver: every algorithm and option set, both
dtypes, odd sizes, many steps; a table of the worst error relative to the tolerance; a non-zero
exit status on any failure.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import numpy as np

from . import _backends
from ._specs import SPECS
from ._bench import ALGORITHMS, OPTION_SETS, active_states

# The tolerance of every backend against the reference, per dtype: (rtol, atol). A backend may
# differ by rounding (a multiply by a host-side reciprocal instead of a division, say).
TOLERANCE = {
    np.dtype(np.float32): (2e-5, 1e-6),
    np.dtype(np.float64): (1e-12, 1e-14),
}
SIZES = (1, 7, 1023, 2**16 + 3)
STEPS = 20


@dataclass
class CheckResult:
    backend: str
    algorithm: str
    options: str
    dtype: str
    size: int
    steps: int
    error_ratio: float  # max |actual - expected| / (atol + rtol |expected|); <= 1 passes
    nan_mismatch: bool
    passed: bool


def _options_label(options: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items()) or "defaults"


def check_case(backend: str, algorithm: str, options: dict[str, Any], dtype: Any, size: int,
               steps: int = STEPS, seed: int = 0) -> CheckResult:
    fn, state_names = ALGORITHMS[algorithm]
    spec = SPECS[algorithm]
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    active = active_states(algorithm, options)
    param = rng.standard_normal(size).astype(dtype)
    dev = _backends.load(backend) if backend in _backends.GPU_BACKENDS else None
    runs: list[tuple[Any, list[Any]]] = []
    for _ in range(2):
        states = [spec.initial_array(s, param) if s in active else None
                  for s in state_names]
        runs.append((param.copy(), states))
    # Scalar states (NAdam's mu_product, ...), one set per run, in the parameters' dtype.
    scalars = [spec.initial_scalars(options, dtype) for _ in range(2)]
    # The backend under test works on device copies where it is a GPU backend.
    arrays = [runs[0][0], *runs[0][1]]
    if dev is not None:
        arrays = [None if a is None else dev.to_device(a) for a in arrays]
    for t in range(1, steps + 1):
        g = rng.standard_normal(size).astype(dtype)
        fn(arrays[0], g if dev is None else dev.to_device(g), *arrays[1:], step=t,
           backend=backend, **scalars[0], **options)
        # The reference (fastopt.reference.<algorithm>) behind the same checks.
        fn(runs[1][0], g, *runs[1][1], step=t, backend="numpy", **scalars[1], **options)
    if dev is not None:
        host = [None if a is None else dev.to_host(a) for a in arrays]
        runs[0] = (host[0], host[1:])
    rtol, atol = TOLERANCE[dtype]
    ratio, nan_mismatch = 0.0, False
    for a, e in zip([runs[0][0], *runs[0][1]], [runs[1][0], *runs[1][1]]):
        if a is None or e is None:
            continue
        nan_mismatch |= bool(np.any(np.isnan(a) != np.isnan(e)))
        with np.errstate(invalid="ignore"):
            err = np.abs(a.astype(np.float64) - e) / (atol + rtol * np.abs(e.astype(np.float64)))
        err = err[~np.isnan(err)]
        if err.size:
            ratio = max(ratio, float(err.max()))
    return CheckResult(backend, algorithm, _options_label(options), dtype.name, size, steps,
                       ratio, nan_mismatch, ratio <= 1.0 and not nan_mismatch)


def run_check(backends: list[str], algorithms: list[str], dtypes: list[str],
              sizes: tuple[int, ...], steps: int, out: TextIO | None = None) -> list[CheckResult]:
    out = sys.stdout if out is None else out
    results = []
    cases = [(b, a, o, d, n) for b in backends for a in algorithms for o in OPTION_SETS[a]
             for d in dtypes for n in sizes]
    header = (f"{'#':>5}  {'backend':<8} {'algorithm':<9} {'dtype':<8} {'size':>7}  "
              f"{'err/tol':>8}  result  options")
    print(header, file=out)
    for i, (b, a, o, d, n) in enumerate(cases, start=1):
        r = check_case(b, a, o, d, n, steps)
        results.append(r)
        verdict = "ok" if r.passed else ("FAIL nan" if r.nan_mismatch else "FAIL")
        print(f"{i:>5}  {b:<8} {a:<9} {d:<8} {n:>7}  {r.error_ratio:8.3f}  {verdict:<6}  "
              f"{r.options}", file=out, flush=True)
    return results


def results_json(results: list[CheckResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
