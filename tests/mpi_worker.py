"""Every sub-case of one world size, run by tests/test_distributed_mpi.py under
``mpiexec -n N python -m mpi4py tests/mpi_worker.py FOLDER [CASE]``.

Each rank runs the sharded optimizer and, on its own copies, the same class in one process, and
compares them bit for bit; rank 0 writes FOLDER/report-N.json with every rank's failures (an
exception ends the whole job: ``-m mpi4py`` aborts every rank). CASE ``crash`` makes rank 1
raise while rank 0 waits in a collective call: the job must end, not hang.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

import numba
import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from algorithms import cases  # noqa: E402

from fastopt import optim  # noqa: E402
from fastopt.distributed import ZeroOptimizer  # noqa: E402

comm = MPI.COMM_WORLD
RANK, N = comm.rank, comm.size
FOLDER = sys.argv[1]
failures: list[str] = []
CLASSES = {getattr(c, "algorithm", None): c for c in vars(optim).values()
           if isinstance(c, type) and issubclass(c, optim.Optimizer)
           and not c.__name__.startswith("_") and c is not optim.Optimizer}
# Sizes that divide neither the rank counts nor the chunk size; smaller than the rank count;
# empty; a 0-d array. SMALL stays under the parallel threshold (serial kernels: the sweep
# compiles one small kernel per option set); CHUNKED cuts arrays inside, on the chunk grid.
SMALL = [(5,), (3, 7), (0,), (1,), (2, 65), ()]
CHUNKED = [(100_003,), (7, 3), (0,), (40_000,), ()]


checks = {"count": 0}


def check(ok: bool, what: str) -> None:
    checks["count"] += 1
    if not ok:
        failures.append(f"rank {RANK}/{N}: {what}")


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def same_state(sd: dict[str, Any], ref: dict[str, Any]) -> str | None:
    if sorted(sd["state"]) != sorted(ref["state"]):
        return f"state indices {sorted(sd['state'])} vs {sorted(ref['state'])}"
    for i, s in ref["state"].items():
        mine = sd["state"][i]
        if sorted(mine) != sorted(s):
            return f"state[{i}] keys {sorted(mine)} vs {sorted(s)}"
        for k, v in s.items():
            if isinstance(v, np.ndarray):
                if not same(np.asarray(mine[k]), v):
                    return f"state[{i}][{k!r}] differs"
            elif mine[k] != v:
                return f"state[{i}][{k!r}] {mine[k]!r} vs {v!r}"
    if sd["param_groups"] != ref["param_groups"]:
        return "param_groups differ"
    return None


def arrays(shapes: list[tuple[int, ...]], dtype: Any, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s), dtype) for s in shapes]


def local_grads(shapes: list[tuple[int, ...]], dtype: Any, seed: int,
                rank: int) -> list[np.ndarray]:
    """Rank ``rank``'s stage-2 gradients: small integers, so any sum order is exact."""
    rng = np.random.default_rng([seed, rank])
    return [np.asarray(np.asarray(rng.integers(-8, 9, s), dtype) * dtype(0.25), dtype)
            for s in shapes]


def run(cls: type, kwargs: dict[str, Any], dtype: Any, shapes: list[tuple[int, ...]],
        stage: int, steps: int, clip: float | None, name: str,
        comm_: Any = comm) -> tuple[ZeroOptimizer, list[np.ndarray], optim.Optimizer,
                                    list[np.ndarray]]:
    """Run ``steps`` sharded steps against the same class in one process."""
    init = arrays(shapes, dtype, 1)
    params = [a.copy() for a in init]
    opt = ZeroOptimizer(params, cls, comm=comm_, stage=stage, **kwargs)
    ref = [a.copy() for a in init]
    one = cls(ref, **kwargs)
    n = comm_.size
    for t in range(steps):
        if stage == 1:
            g = arrays(shapes, dtype, 100 + t)
            r = opt.step(g, max_grad_norm=clip)
            r1 = one.step(g, max_grad_norm=clip)
        else:
            mine = local_grads(shapes, dtype, t, comm_.rank)
            total = [sum(parts) for parts in zip(*[local_grads(shapes, dtype, t, k)
                                                   for k in range(n)])]
            total = [np.asarray(x, dtype) for x in total]
            r = opt.step(mine, max_grad_norm=clip)
            r1 = one.step(total, max_grad_norm=clip,
                          loss_scale=n if n > 1 else None, skip_nonfinite=False)
        if clip is not None:
            check(r == r1, f"{name} step {t}: {r} vs one process {r1}")
        bad = [k for k, (a, b) in enumerate(zip(params, ref)) if not same(a, b)]
        check(not bad, f"{name} step {t}: params {bad} differ from one process")
    return opt, params, one, ref


def sweep() -> None:
    """Every algorithm and option set, float32 and float64, stages 1 and 2, small arrays."""
    k = 0
    for algo, options in cases():
        cls = CLASSES[algo.name]
        kwargs = algo.spec.torch_options(options)
        for dtype in (np.float32, np.float64):
            stage = 1 + k % 2
            k += 1
            name = f"{algo.name} {options} {np.dtype(dtype).name} stage {stage}"
            try:
                opt, _, one, _ = run(cls, kwargs, dtype, SMALL, stage, 3,
                                     1.0 if k % 3 == 0 else None, name)
                why = same_state(opt.state_dict(), one.state_dict())
                check(why is None, f"{name}: {why}")
            except Exception:
                failures.append(f"rank {RANK}/{N}: {name}: {traceback.format_exc()}")


def warm() -> None:
    """Rank 0 compiles every kernel of the sweep into Numba's cache while the others sleep
    (not spin in a barrier: four ranks share two cores), then they load it."""
    marker = os.path.join(FOLDER, f"warm-{N}")
    if RANK == 0:
        for algo, options in cases():
            for dtype in (np.float32, np.float64):
                ps = arrays(SMALL, dtype, 1)
                CLASSES[algo.name](ps, **algo.spec.torch_options(options)).step(
                    [p.copy() for p in ps])
        open(marker, "w").close()
    else:
        while not os.path.exists(marker):
            time.sleep(0.05)
    comm.Barrier()


def chunked() -> None:
    """Arrays cut inside on the chunk grid: bit-identical steps, norms and clip coefficients
    on every rank, state memory exactly the piece, a NaN in one rank's piece."""
    for dtype in (np.float32, np.float64):
        for stage in (1, 2):
            name = f"chunked AdamW {np.dtype(dtype).name} stage {stage}"
            opt, params, one, ref = run(optim.AdamW, {"lr": 1e-2}, dtype, CHUNKED, stage, 3,
                                        1.0, name)
            # State memory: two arrays of exactly this rank's piece; the sum is one process's.
            lo, hi = opt._bounds[RANK], opt._bounds[RANK + 1]
            held = sum(v.size for s in opt.local.state.values() for v in s.values()
                       if isinstance(v, np.ndarray))
            check(held == 2 * (hi - lo), f"{name}: rank holds {held} state elements "
                                         f"(expected {2 * (hi - lo)})")
            total = comm.allreduce(held)
            whole = sum(v.size for s in one.state.values() for v in s.values()
                        if isinstance(v, np.ndarray))
            check(total == whole, f"{name}: {total} state elements in all (expected {whole})")
            why = same_state(opt.state_dict(), one.state_dict())
            check(why is None, f"{name}: {why}")
            # The global norm and clip coefficient: the same on every rank.
            g = arrays(CHUNKED, dtype, 7)
            if stage == 2:
                g = [x if RANK == 0 else np.zeros_like(x) for x in g]
            r = opt.step(g, max_grad_norm=0.5)
            results = comm.allgather((r.grad_norm, r.clip_coef, r.skipped))
            check(len(set(results)) == 1, f"{name}: ranks' results differ: {results}")
            # A NaN in the last rank's piece: every rank skips and writes nothing.
            before = [p.copy() for p in params]
            state_before = opt.state_dict()
            g = arrays(CHUNKED, dtype, 8)
            g[3][-5] = np.nan  # the 40,000-element array: the last piece
            if stage == 2:
                g = [x if RANK == N - 1 else np.zeros_like(x) for x in g]
            r = opt.step(g, skip_nonfinite=True)
            results = comm.allgather((r.skipped, r.nonfinite))
            check(results == [(True, 1)] * N, f"{name}: NaN step results {results}")
            check(all(same(a, b) for a, b in zip(params, before)),
                  f"{name}: a skipped step changed the parameters")
            why = same_state(opt.state_dict(), state_before)
            check(why is None, f"{name}: a skipped step changed the state: {why}")


def groups() -> None:
    """Two parameter groups (their own lr), float32 and float64 mixed, a group with no piece
    on some ranks; an lr changed between steps (as a schedule does) on every rank."""
    shapes32, shapes64 = [(70_001,), (3,)], [(5, 7), (0,), (33_000,)]
    for stage in (1, 2):
        made = [arrays(shapes32, np.float32, 3), arrays(shapes64, np.float64, 4)]
        params = [[a.copy() for a in g] for g in made]
        ref = [[a.copy() for a in g] for g in made]

        def spec(ps: list[list[np.ndarray]]) -> list[dict[str, Any]]:
            return [{"params": ps[0], "lr": 1e-2},
                    {"params": ps[1], "lr": 1e-3, "weight_decay": 0.0}]

        opt = ZeroOptimizer(spec(params), optim.AdamW, stage=stage, weight_decay=0.05)
        one = optim.AdamW(spec(ref), weight_decay=0.05)
        for t in range(3):
            if stage == 1:
                g = arrays(shapes32, np.float32, 50 + t) + arrays(shapes64, np.float64, 60 + t)
                r, r1 = opt.step(g, max_grad_norm=2.0), one.step(g, max_grad_norm=2.0)
            else:
                per = [local_grads(shapes32, np.float32, t, k)
                       + local_grads(shapes64, np.float64, t, k) for k in range(N)]
                total = [np.asarray(sum(parts), parts[0].dtype) for parts in zip(*per)]
                r = opt.step(per[RANK], max_grad_norm=2.0)
                r1 = one.step(total, max_grad_norm=2.0, loss_scale=N if N > 1 else None,
                              skip_nonfinite=False)
            check(r == r1, f"groups stage {stage} step {t}: {r} vs {r1}")
            flat_p = [a for g in params for a in g]
            flat_r = [a for g in ref for a in g]
            bad = [k for k, (a, b) in enumerate(zip(flat_p, flat_r)) if not same(a, b)]
            check(not bad, f"groups stage {stage} step {t}: params {bad} differ")
            opt.param_groups[1]["lr"] *= 0.5
            one.param_groups[1]["lr"] *= 0.5
        why = same_state(opt.state_dict(), one.state_dict())
        check(why is None, f"groups stage {stage}: {why}")


def checkpoints() -> None:
    """Saved on M ranks (M <= N), loaded on N; saved on N, loaded on M and in one process;
    then more steps, bit-identical to an uninterrupted run."""
    kwargs = {"lr": 1e-2, "weight_decay": 0.1}
    shapes = CHUNKED
    grads = [arrays(shapes, np.float32, 200 + t) for t in range(4)]
    init = arrays(shapes, np.float32, 1)
    ref = [a.copy() for a in init]
    one = optim.AdamW(ref, **kwargs)
    after2 = None
    for t, g in enumerate(grads):
        one.step(g, max_grad_norm=1.0)
        if t == 1:
            after2 = [a.copy() for a in ref]
    assert after2 is not None

    def train(comm_: Any, load: str | None, save: str | None, steps: range) -> None:
        params = [a.copy() for a in (init if load is None else after2)]
        opt = ZeroOptimizer(params, optim.AdamW, comm=comm_, stage=1, **kwargs)
        if load is not None:
            opt.load(load)
        for t in steps:
            opt.step(grads[t], max_grad_norm=1.0)
        if save is not None:
            opt.save(save)
        if steps.stop == 4:
            bad = [k for k, (a, b) in enumerate(zip(params, ref)) if not same(a, b)]
            check(not bad, f"checkpoint from {load} on {comm_.size} ranks: params {bad} "
                           f"differ from an uninterrupted run")

    for m in range(1, N + 1):
        sub = comm.Split(0 if RANK < m else MPI.UNDEFINED, RANK)
        path = os.path.join(FOLDER, f"ckpt-{N}-from-{m}.npz")
        if sub != MPI.COMM_NULL:
            train(sub, None, path, range(2))
        comm.Barrier()
        train(comm, path, None, range(2, 4))              # saved on m, loaded on N
        if sub != MPI.COMM_NULL:
            sub.Free()
    path = os.path.join(FOLDER, f"ckpt-{N}-on-{N}.npz")
    train(comm, None, path, range(2))
    for m in range(1, N):
        sub = comm.Split(0 if RANK < m else MPI.UNDEFINED, RANK)
        if sub != MPI.COMM_NULL:
            train(sub, path, None, range(2, 4))           # saved on N, loaded on m
            sub.Free()
        comm.Barrier()
    # ... and into one process, and one process's checkpoint into N ranks.
    params = [a.copy() for a in after2]
    single = optim.AdamW(params, **kwargs)
    single.load(path)
    for t in (2, 3):
        single.step(grads[t], max_grad_norm=1.0)
    check(all(same(a, b) for a, b in zip(params, ref)),
          "a checkpoint of N ranks loaded in one process: params differ")
    solo = os.path.join(FOLDER, f"ckpt-{N}-single.npz")
    if RANK == 0:
        params = [a.copy() for a in init]
        single = optim.AdamW(params, **kwargs)
        for t in (0, 1):
            single.step(grads[t], max_grad_norm=1.0)
        single.save(solo)
    comm.Barrier()
    train(comm, solo, None, range(2, 4))
    # state_dict / load_state_dict: the whole dict on every rank.
    params = [a.copy() for a in after2]
    opt = ZeroOptimizer(params, optim.AdamW, stage=1, **kwargs)
    opt.load_state_dict(optim.read_checkpoint(solo))
    for t in (2, 3):
        opt.step(grads[t], max_grad_norm=1.0)
    check(all(same(a, b) for a, b in zip(params, ref)), "load_state_dict: params differ")
    why = same_state(opt.state_dict(), one.state_dict())
    check(why is None, f"state_dict after load_state_dict: {why}")


def expect_error(fn: Any, kind: type, text: str, what: str) -> None:
    try:
        fn()
    except kind as e:
        check(text in str(e), f"{what}: message {str(e)!r} lacks {text!r}")
    except Exception as e:
        check(False, f"{what}: {type(e).__name__}: {e} (expected {kind.__name__})")
    else:
        check(False, f"{what}: no error")


def robustness() -> None:
    """Mistakes on one rank raise on every rank (no deadlock) and change nothing."""
    ps = arrays(SMALL, np.float32, 1)
    if N > 1:
        expect_error(lambda: ZeroOptimizer(ps, optim.Adam, lr=1e-3 * (1 + (RANK == N - 1))),
                     ValueError, "hyperparameters", "different lr at construction")
    opt = ZeroOptimizer(ps, optim.Adam, lr=1e-3)
    ref = [a.copy() for a in arrays(SMALL, np.float32, 1)]
    one = optim.Adam(ref, lr=1e-3)
    g = arrays(SMALL, np.float32, 5)
    if N > 1:
        opt.param_groups[0]["lr"] = 2e-3 if RANK == N - 1 else 1e-3
        expect_error(lambda: opt.step(g), ValueError, "hyperparameters", "lr set on one rank")
        opt.param_groups[0]["lr"] = 1e-3
        expect_error(lambda: opt.step([None if (RANK == 0 and k == 1) else x
                                       for k, x in enumerate(g)]),
                     ValueError, "which are None", "None gradients on one rank")
    wrong = [x if not (RANK == 0 and k == 1) else np.zeros((2, 2), np.float32)
             for k, x in enumerate(g)]
    expect_error(lambda: opt.step(wrong), ValueError if RANK == 0 else RuntimeError,
                 "shape" if RANK == 0 else "failed on rank 0", "a bad gradient on rank 0")
    expect_error(lambda: opt.step(g, max_grad_norm=-1.0 if RANK == N - 1 else None),
                 ValueError if RANK == N - 1 else RuntimeError, "max_grad_norm",
                 "a bad argument on the last rank")
    check(all(same(a, b) for a, b in zip(ps, ref)), "rejected steps changed the parameters")
    check(not opt.local.state, "rejected steps created state")
    opt.step(g, loss_scale=4.0)  # stage 2: the sum of N equal gradients, averaged
    one.step([np.asarray(x * np.float32(N), np.float32) for x in g], loss_scale=4.0 * N)
    check(all(same(a, b) for a, b in zip(ps, ref)), "a step after rejected ones differs")
    expect_error(lambda: opt.load(os.path.join(FOLDER, "missing.npz")), FileNotFoundError,
                 "missing.npz", "a missing checkpoint")
    expect_error(lambda: ZeroOptimizer(ps, optim.Adam, stage=3), ValueError, "stage",
                 "stage 3")


def main() -> None:
    case = sys.argv[2] if len(sys.argv) > 2 else "all"
    if case == "crash":
        ps = arrays(SMALL, np.float32, 1)
        opt = ZeroOptimizer(ps, optim.SGD, lr=0.1)
        if RANK == 1:
            raise RuntimeError("rank 1 fails on purpose")
        opt.step(ps)  # rank 0 waits for rank 1 here, forever unless the job ends
        return
    started = time.perf_counter()
    timings = {}
    for part in (warm, sweep, chunked, groups, checkpoints, robustness):
        t = time.perf_counter()
        try:
            part()
        except Exception:
            failures.append(f"rank {RANK}/{N}: {part.__name__}: {traceback.format_exc()}")
        timings[part.__name__] = round(time.perf_counter() - t, 2)
    everyone = comm.gather(failures, root=0)
    threads = comm.gather(numba.get_num_threads(), root=0)
    counts = comm.gather(checks["count"], root=0)
    if RANK == 0:
        report = {"failures": [f for fs in everyone for f in fs], "threads": threads,
                  "checks": counts,
                  "seconds": round(time.perf_counter() - started, 2), "parts": timings}
        with open(os.path.join(FOLDER, f"report-{N}.json"), "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
