"""CPU throughput of every algorithm against its same-traffic roofline and torch.optim.

    pytest benchmarks/test_cpu_throughput.py --benchmark-json=benchmarks/results/cpu.json
    python benchmarks/summarize.py benchmarks/results/cpu.json

Each test times the fastopt call with pytest-benchmark (compile excluded by warm-up) and, in the
same test, the roofline kernel and torch.optim interleaved with fastopt; the ratios of those
medians go to extra_info: gbps, roofline_fraction, speedup_vs_torch.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastopt._bench import ALGORITHMS, Case, interleaved_medians

SIZES = [2**12, 2**16, 2**20, 2**22, 2**24]


def measure(benchmark, algorithm: str, size: int, dtype=np.float32) -> None:
    case = Case.make(algorithm, size, dtype)
    fns = {"fastopt": case.fastopt(), "roofline": case.roofline()}
    torch_fn = case.torch()
    if torch_fn is not None:
        fns["torch"] = torch_fn
    per_round = max(3, min(40, 2**22 // size))
    med = interleaved_medians(fns, per_round=per_round)
    benchmark.group = f"{algorithm}-{size}"
    benchmark.extra_info.update(
        algorithm=algorithm, size=size, dtype=np.dtype(dtype).name, bytes=case.nbytes,
        seconds=med["fastopt"], gbps=case.nbytes / med["fastopt"] / 1e9,
        roofline_seconds=med["roofline"], roofline_fraction=med["roofline"] / med["fastopt"],
    )
    if "torch" in med:
        benchmark.extra_info.update(torch_seconds=med["torch"],
                                    speedup_vs_torch=med["torch"] / med["fastopt"])
    benchmark.pedantic(fns["fastopt"], rounds=max(5, per_round * 3), warmup_rounds=1)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_throughput(benchmark, algorithm, size):
    """At 2**12 this is also the end-to-end latency of a small call, validation included."""
    measure(benchmark, algorithm, size)

