"""Child processes step in parallel with correct results, whatever their start method: fork
(multiprocessing's default on Linux, torch DataLoader workers), forkserver and spawn, after the
parent has run parallel kernels."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

import fastopt

N = 1 << 17  # above the parallel threshold: the parallel kernels in the parent


def _arrays(seed):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(N).astype(np.float32)
    g = rng.standard_normal(N).astype(np.float32)
    return p, g


def _work(seed):
    """A functional step and an optimizer-class step (one multi-tensor launch)."""
    p, g = _arrays(seed)
    m, v = np.zeros_like(p), np.zeros_like(p)
    fastopt.adam_step(p, g, m, v, step=1, lr=0.01)
    ws = [p.copy(), p[:1000].copy()]
    opt = fastopt.SGD(ws, lr=0.1, momentum=0.9)
    opt.step([g, g[:1000].copy()], max_grad_norm=1.0)
    return p, ws[0], ws[1]


def _child(seed, queue):
    queue.put([a.tobytes() for a in _work(seed)])


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_children_step_in_parallel_with_correct_results(method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"{method} is not available here")
    expected = [a.tobytes() for a in _work(7)]  # also starts the parent's thread pool
    ctx = mp.get_context(method)
    queue = ctx.Queue()
    children = [ctx.Process(target=_child, args=(7, queue)) for _ in range(2)]
    for c in children:
        c.start()
    results = [queue.get(timeout=120) for _ in children]
    for c in children:
        c.join(timeout=60)
        assert c.exitcode == 0, f"a {method} child died with exit code {c.exitcode}"
    assert all(r == expected for r in results)


_CACHE_SCRIPT = r"""
import sys
import numpy as np
import fastopt

def run(wd):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(n).astype(np.float32) for n in (300, 7)]
    opt = fastopt.Adam(params, lr=0.01, weight_decay=wd)
    for _ in range(3):
        opt.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
    return np.concatenate([p.ravel() for p in params])

for arg in sys.argv[1:]:
    wd = float(arg)
    rng = np.random.default_rng(0)
    got = run(wd)
    ref = [rng.standard_normal(n).astype(np.float32) for n in (300, 7)]
    opt = fastopt.Adam(ref, lr=0.01, weight_decay=wd, backend="numpy")
    for _ in range(3):
        opt.step([rng.standard_normal(p.shape).astype(np.float32) for p in ref])
    np.testing.assert_allclose(got, np.concatenate([p.ravel() for p in ref]), rtol=1e-5,
                               atol=1e-7)
print("ok")
"""


def test_kernels_of_two_configurations_cached_by_two_processes_stay_apart(tmp_path):
    """Two processes each compile one configuration of a generated kernel (Numba numbers
    compiled functions per process, so both get the same internal name) into one disk cache;
    a third loads both and must run each one's own code. (Before the names were made unique
    per configuration, the second multi-tensor kernel ran the first one's element loop.)"""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    script = tmp_path / "cached.py"
    script.write_text(_CACHE_SCRIPT)
    for args in (["0.0"], ["0.1"], ["0.0", "0.1"], ["0.1", "0.0"]):
        out = subprocess.run([sys.executable, str(script), *args], env=env, timeout=600,
                             capture_output=True, text=True)
        assert out.returncode == 0 and "ok" in out.stdout, (args, out.stderr[-2000:])
