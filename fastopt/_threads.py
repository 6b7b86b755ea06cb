"""Numba's thread count when several processes (ranks) share one machine.

Numba starts as many threads as the machine has cores and ignores ``OMP_NUM_THREADS``: with
``k`` ranks on a machine, every rank's kernels then run ``cores`` threads on ``cores / k`` cores'
worth of CPU, and a small shard's step becomes many times slower (measured 6-18x with 2-4 ranks
on 2 cores, ../shared/notes/distributed.md). So a rank takes its share of the cores, unless the
user chose a thread count (``NUMBA_NUM_THREADS``, or ``numba.set_num_threads`` before fastopt).
"""

from __future__ import annotations

import os

# Where launchers put the number of ranks on this machine (the first one set wins).
LOCAL_SIZE_VARIABLES = (
    "LOCAL_WORLD_SIZE",             # torchrun, torch.distributed.run
    "OMPI_COMM_WORLD_LOCAL_SIZE",   # Open MPI's mpiexec
    "MPI_LOCALNRANKS",              # MPICH's and Intel MPI's Hydra mpiexec
    "SLURM_NTASKS_PER_NODE",        # srun --ntasks-per-node
)

_chosen: int | None = None


def local_ranks_from_environment() -> int | None:
    """The number of ranks on this machine as the launcher told it, or None."""
    for name in LOCAL_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def cores() -> int:
    """The cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def threads_for(local_ranks: int) -> int:
    """The thread count of one of ``local_ranks`` ranks sharing this machine's cores. A rank
    already bound to a subset of the cores (a launcher's binding) uses all of its own."""
    mine = cores()
    if mine < (os.cpu_count() or mine):
        return mine
    return max(1, mine // max(1, local_ranks))


def configure(local_ranks: int | None = None) -> int | None:
    """Set Numba's thread count for one of ``local_ranks`` ranks on this machine (None: from
    the launcher's environment variables). Returns the count set, or None when nothing was
    changed: the user chose one, or this process is alone on its machine."""
    global _chosen
    import numba

    if "NUMBA_NUM_THREADS" in os.environ:
        return None
    if numba.get_num_threads() not in (numba.config.NUMBA_NUM_THREADS, _chosen):
        return None  # numba.set_num_threads was called by someone else: theirs stands
    n = local_ranks if local_ranks is not None else local_ranks_from_environment()
    if n is None or n <= 1:
        return None
    threads: int = min(threads_for(n), int(numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    _chosen = threads
    return threads
