"""fastopt.distributed on 1-4 MPI ranks: every sub-case of one world size in one launch of
tests/mpi_worker.py (see there), each launch with a timeout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi_worker.py")
TIMEOUT = 300


def _mpiexec() -> str:
    """mpiexec beside this Python (the mpich wheel installs it there), else on PATH. Missing
    MPI skips the tests, except in CI, whose install must provide it."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        found = None
    else:
        found = os.path.join(sysconfig.get_path("scripts"), "mpiexec")
        if not os.path.exists(found):
            found = shutil.which("mpiexec")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("mpi4py and mpiexec are missing: CI installs them (.[mpi])")
        pytest.skip("needs mpi4py and an MPI library: pip install 'fastopt[mpi]'")
    return found


def _launch(n: int, folder: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    return subprocess.run([_mpiexec(), "-n", str(n), sys.executable, "-m", "mpi4py", WORKER,
                           folder, *args], capture_output=True, text=True, timeout=TIMEOUT,
                          env=env)


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_sharded_steps_checkpoints_and_errors(ranks: int, tmp_path: pytest.TempPathFactory
                                              ) -> None:
    """Bit-identical to one process for every algorithm and option set (float32, float64,
    stages 1 and 2, arrays smaller than the rank count, empty ones, empty pieces); arrays cut
    on the chunk grid: global norm, clip coefficient and skip decision the same on every rank,
    state memory exactly the rank's piece; checkpoints saved on M ranks loaded on N and the
    reverse (M <= N), and in one process; mistakes on one rank raise on all."""
    done = _launch(ranks, str(tmp_path))
    assert done.returncode == 0, done.stderr[-4000:]
    with open(tmp_path / f"report-{ranks}.json") as f:
        report = json.load(f)
    assert not report["failures"], "\n".join(report["failures"][:10])
    assert min(report["checks"]) > 500, report["checks"]  # every part ran its checks
    # Each rank took its share of the cores (this machine's; ranks beyond the cores get 1).
    cores = len(os.sched_getaffinity(0))
    expected = max(1, cores // ranks) if ranks > 1 else report["threads"][0]
    assert report["threads"] == [expected] * ranks


def test_a_rank_that_raises_ends_the_job(tmp_path: pytest.TempPathFactory) -> None:
    """Rank 1 raises while rank 0 waits in step(): the job ends with an error, no hang."""
    done = _launch(2, str(tmp_path), "crash")
    assert done.returncode != 0
    assert "rank 1 fails on purpose" in done.stderr


def test_readme_example_runs_on_two_ranks(tmp_path: pytest.TempPathFactory) -> None:
    """The README's MPI example, as written, on 2 ranks: its checkpoint loads in one process
    with the step count and the whole model's state."""
    import re

    import numpy as np

    import fastopt

    readme = os.path.join(os.path.dirname(WORKER), os.pardir, "README.md")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", open(readme).read(), flags=re.S)
              if "fastopt.distributed" in b]
    assert len(blocks) == 1
    script = tmp_path / "readme_mpi.py"
    script.write_text(blocks[0])
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    done = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", str(script)],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    w1, b1 = np.zeros((64, 128), np.float32), np.zeros(128, np.float32)
    opt = fastopt.AdamW([w1, b1], lr=1e-3)
    opt.load(str(tmp_path / "ckpt.npz"))
    assert opt.state_dict()["state"][0]["step"] == 3
    state = opt.state_dict()["state"]
    assert state[0]["exp_avg"].size == 64 * 128 and state[1]["exp_avg"].size == 128
    assert np.all(state[0]["exp_avg"] != 0) and np.all(state[1]["exp_avg"] != 0)


def test_partition_cuts_on_the_chunk_grid() -> None:
    from fastopt.distributed import CHUNK, _segments, partition

    sizes = [100_003, 7, 0, 40_000, 1, 3 * CHUNK + 5]
    starts = [0]
    for n in sizes:
        starts.append(starts[-1] + n)
    total = starts[-1]
    for ranks in range(1, 9):
        bounds = partition(sizes, ranks)
        assert bounds[0] == 0 and bounds[-1] == total and bounds == sorted(bounds)
        for r, cut in enumerate(bounds[1:-1], 1):
            i = max(k for k in range(len(sizes)) if starts[k] <= cut)
            assert cut == starts[i] or (cut - starts[i]) % CHUNK == 0, (ranks, cut)
            assert abs(cut - r * total / ranks) <= CHUNK  # as even as the grid allows
        # The pieces cover every element once, and every empty array has one owner.
        covered = [0] * len(sizes)
        owners = [0] * len(sizes)
        for r in range(ranks):
            for i, a, b in _segments(sizes, bounds, r):
                covered[i] += b - a
                owners[i] += sizes[i] == 0
        assert covered == sizes
        assert owners == [int(n == 0) for n in sizes]
    assert partition([], 3) == [0, 0, 0, 0]
    assert partition([5], 4) == [0, 0, 5, 5, 5]  # an array is cut only on the grid


def test_threads_per_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank takes its share of the cores; a thread count the user chose stands."""
    import numba

    from fastopt import _threads

    before = numba.get_num_threads()
    try:
        monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
        assert _threads.configure(2) is None
        monkeypatch.delenv("NUMBA_NUM_THREADS")
        monkeypatch.setattr(_threads, "cores", lambda: 8)
        monkeypatch.setattr(os, "cpu_count", lambda: 8)
        monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 8)
        monkeypatch.setattr(numba, "get_num_threads", lambda: 8)
        chosen: list[int] = []
        monkeypatch.setattr(numba, "set_num_threads", chosen.append)
        assert _threads.configure(3) == 2 and chosen == [2]
        monkeypatch.setenv("MPI_LOCALNRANKS", "4")
        assert _threads.configure() == 2 and chosen == [2, 2]
        assert _threads.configure(1) is None  # alone on the machine: all cores
        monkeypatch.setattr(numba, "get_num_threads", lambda: 5)  # the user's own choice
        assert _threads.configure(4) is None
    finally:
        monkeypatch.undo()
        numba.set_num_threads(before)
        _threads._chosen = None
