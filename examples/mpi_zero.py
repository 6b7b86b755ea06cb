"""Data-parallel training of a small NumPy MLP with its AdamW state sharded over MPI ranks.

    pip install "fastopt[mpi]"
    mpiexec -n 2 python -m mpi4py examples/mpi_zero.py

Every rank holds the whole model and its own slice of each batch; ZeroOptimizer (stage 2) sums
the ranks' gradients into the piece of the parameters each rank owns, averages and clips them
inside AdamW's update, and broadcasts the updated pieces back: each rank keeps 1/N of the
optimizer state. ``-m mpi4py`` ends every rank if one raises.
"""

import sys
import time

import numpy as np
from mpi4py import MPI

import fastopt
from fastopt.distributed import ZeroOptimizer

comm = MPI.COMM_WORLD
rank, size = comm.rank, comm.size


def main(steps: int = 60, batch: int = 512, width: int = 256) -> None:
    rng = np.random.default_rng(0)  # the same initial weights on every rank
    w1 = (rng.standard_normal((32, width)) / np.sqrt(32)).astype(np.float32)
    b1 = np.zeros(width, np.float32)
    w2 = (rng.standard_normal((width, 1)) / np.sqrt(width)).astype(np.float32)
    b2 = np.zeros(1, np.float32)
    params = [w1, b1, w2, b2]
    opt = ZeroOptimizer(params, fastopt.AdamW, lr=3e-3, weight_decay=1e-4, stage=2)
    data = np.random.default_rng(1)  # the same batches everywhere; each rank takes its slice
    truth = data.standard_normal((32, 1)).astype(np.float32)
    mine = slice(rank * batch // size, (rank + 1) * batch // size)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x = data.standard_normal((batch, 32)).astype(np.float32)
        y = np.sin(x @ truth)
        x, y = x[mine], y[mine]
        h = np.maximum(x @ w1 + b1, 0)  # forward: ReLU MLP, mean squared error
        err = h @ w2 + b2 - y
        loss = comm.allreduce(float((err ** 2).sum())) / batch
        d = 2 * err / (batch / size)  # backward (this rank's mean; stage 2 averages ranks)
        grads = [x.T @ (d @ w2.T * (h > 0)), (d @ w2.T * (h > 0)).sum(0), h.T @ d, d.sum(0)]
        result = opt.step([g.astype(np.float32) for g in grads], max_grad_norm=1.0)
        if rank == 0 and (step % 10 == 0 or step == 1):
            print(f"step {step:3d}  loss {loss:.4f}  grad norm {result.grad_norm:.3f}")
    elapsed = time.perf_counter() - start
    same = comm.allgather(np.concatenate([p.ravel() for p in params]).tobytes())
    held = sum(v.nbytes for s in opt.local.state.values() for v in s.values()
               if isinstance(v, np.ndarray))
    held_all = comm.gather(held, root=0)
    if rank == 0:
        print(f"{size} ranks, {steps} steps in {elapsed:.2f} s; optimizer state per rank "
              f"(bytes): {held_all}; parameters identical on every rank: "
              f"{all(s == same[0] for s in same)}")
        if not all(s == same[0] for s in same):
            sys.exit(1)


if __name__ == "__main__":
    main()
