"""Sharded optimizer state over MPI for NumPy users (ZeRO stages 1 and 2).

Every rank holds all parameters; each owns the optimizer state of an exact, contiguous piece
of them and updates only that piece, then every piece is broadcast in place to every rank::

    from mpi4py import MPI
    import fastopt
    from fastopt.distributed import ZeroOptimizer

    opt = ZeroOptimizer([w, b], fastopt.AdamW, lr=1e-3, stage=2)   # comm=MPI.COMM_WORLD
    for batch in my_part_of_the_data:
        grads = backward(batch)              # this rank's own gradients, one per parameter
        opt.step(grads, max_grad_norm=1.0)   # w and b now hold the new values on every rank

Launch with ``mpiexec -n 4 python -m mpi4py train.py`` (``-m mpi4py`` ends every rank when one
raises, instead of leaving the others waiting). Install with ``pip install "fastopt[mpi]"``
(mpi4py and MPICH, from wheels), or point mpi4py at a cluster's own MPI.

How the state is split: the parameters of all groups, flattened in order (each array in its
memory order), form one range of elements; rank ``r`` owns about ``1/N`` of it, cut only at
array boundaries or at multiples of 32,768 elements inside an array: the chunks over which the
one-process optimizer sums the gradient norm. Each rank sums its own chunks and the partial
sums are exchanged, so the global norm, the clip coefficient and the decision to skip a step
with a non-finite gradient are the one-process ones, bit for bit, on every rank. A sharded step
equals a one-process step of the same class bit for bit (on the numba backend; parameters of
float32 or float64, states of float32 or bfloat16).

- ``stage=1``: every rank passes the same, already averaged gradients (say, after its own
  ``Allreduce``); each reads only its piece.
- ``stage=2``: every rank passes its own gradients; they are summed with one
  ``Reduce_scatter`` straight into each rank's piece, and the average (``1/N``, with
  ``average=True``) is applied inside the update kernel, with any loss scale and clip factor.
  Bit for bit, that is one process stepping on the sum of the ranks' gradients with
  ``loss_scale`` multiplied by ``N``.

Checkpoints (``save``/``load``, ``state_dict``/``load_state_dict``) are in the one-process
format of the optimizer class: saved on ``N`` ranks, they load on any number of ranks and into
an unsharded optimizer, and the reverse.

Every collective call (construction, ``step``, ``load``, ...) first checks, on every rank,
that all ranks agree (hyperparameters, parameter shapes, which gradients are None, the step's
arguments) and that none of them rejected its input: a mistake on one rank raises on all of
them (the rank at fault names its own error) instead of leaving the others waiting. A failure
after that point (out of memory while allocating state) leaves the ranks out of step: let the
exception end the job.

Threads: each rank sets Numba's thread count to its share of the machine's cores (the ranks
on one machine are counted with ``MPI.COMM_TYPE_SHARED``), unless ``NUMBA_NUM_THREADS`` is set
or ``numba.set_num_threads`` was called; see ``set_threads_per_rank``.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import math
import operator
import os
import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from . import _storage, _threads
from ._engine import StepResult
from ._layout import flat, zeros_as
from ._specs import SPECS
from .kernels.cpu.multi import CHUNK
from .optim import (Optimizer, _Prepared, decide_step, read_checkpoint, state_dtype_name,
                    step_arguments, write_checkpoint)

__all__ = ["ZeroOptimizer", "partition", "set_threads_per_rank", "CHUNK"]

# Broadcasts in flight at once (one per piece of a parameter).
_MAX_REQUESTS = 512


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"fastopt.distributed needs mpi4py and an MPI library: pip install "
                          f"'fastopt[mpi]' (mpi4py and MPICH wheels), or mpi4py built for "
                          f"your cluster's MPI ({e})") from None
    return MPI


def set_threads_per_rank(local_ranks: int | None = None) -> int | None:
    """Give this rank its share of the machine's cores for Numba's parallel kernels.

    ``local_ranks``: how many ranks run on this machine (None: read from the launcher's
    environment: torchrun's ``LOCAL_WORLD_SIZE``, Open MPI's ``OMPI_COMM_WORLD_LOCAL_SIZE``,
    MPICH's ``MPI_LOCALNRANKS``, Slurm's ``SLURM_NTASKS_PER_NODE``). Nothing changes when
    ``NUMBA_NUM_THREADS`` is set or ``numba.set_num_threads`` was called before. Returns the
    thread count set, or None. ``ZeroOptimizer`` calls it for you.
    """
    return _threads.configure(local_ranks)


def partition(sizes: Sequence[int], ranks: int) -> list[int]:
    """Where the ranks' pieces start: ``ranks + 1`` offsets into the concatenation of arrays
    of ``sizes`` elements, from 0 to the total, each as close to ``r * total / ranks`` as a
    cut may be (an array boundary, or a multiple of ``CHUNK`` inside an array)."""
    if ranks < 1:
        raise ValueError(f"Invalid ranks: {ranks} (expected at least 1)")
    starts = np.concatenate([[0], np.cumsum(np.asarray(sizes, np.int64))]).tolist()
    total = starts[-1]
    bounds = [0]
    for r in range(1, ranks):
        target = (r * total + ranks // 2) // ranks
        i = bisect.bisect_right(starts, target) - 1  # the array holding the target
        i = min(i, len(sizes) - 1)
        lo = starts[i] + (target - starts[i]) // CHUNK * CHUNK
        hi = min(lo + CHUNK, starts[i + 1])
        cut = lo if target - lo <= hi - target else hi
        bounds.append(max(cut, bounds[-1]))
    bounds.append(total)
    return bounds


def _segments(sizes: Sequence[int], bounds: list[int], rank: int) -> list[tuple[int, int, int]]:
    """Rank ``rank``'s pieces of the arrays: ``(array, first, stop)`` element ranges in each
    array's memory order. An empty array belongs to the last rank whose piece starts at or
    before its offset (it keeps a step count and empty states, as in one process)."""
    lo, hi = bounds[rank], bounds[rank + 1]
    last = len(bounds) - 2
    out = []
    start = 0
    for i, n in enumerate(sizes):
        if n == 0:
            owner = max(r for r in range(last + 1) if bounds[r] <= start)
            if owner == rank:
                out.append((i, 0, 0))
        elif start < hi and start + n > lo:
            out.append((i, max(lo, start) - start, min(hi, start + n) - start))
        start += n
    return out


def _digest(value: Any) -> str:
    return hashlib.sha1(repr(value).encode()).hexdigest()[:16]


def _hypers(groups: list[dict[str, Any]]) -> list[list[tuple[str, str]]]:
    return [sorted((k, repr(v)) for k, v in g.items() if k != "params") for g in groups]


class ZeroOptimizer:
    """One fastopt optimizer class with its state sharded over the ranks of an MPI
    communicator (ZeRO stage 1 or 2): see the module's documentation.

    Args:
        params: the parameters (NumPy arrays of float32 or float64, the same shapes in the
            same order on every rank) or parameter-group dicts, as for the class itself.
        optimizer_class: a fastopt optimizer class (``fastopt.AdamW``, ``fastopt.SGD``, ...).
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``).
        stage: 1 (pass all-reduced gradients) or 2 (pass this rank's own; fastopt sums them).
        average: with stage 2, divide the summed gradients by the rank count (as DDP does).
        **defaults: the class's own arguments (``lr=...``, ``weight_decay=...``,
            ``backend=...``, ``ema_decay=...``, ``state_dtype=...``).

    ``param_groups`` is the class's, for every rank's whole parameters: set ``lr`` there (or
    use fastopt.schedules) on every rank alike. ``local`` is this rank's own optimizer over its
    pieces (1-D views of the parameters), ``segments`` which pieces: ``(index, first, stop)``.
    ``timings`` holds the last step's seconds in each part: ``check`` (the checks and the
    ranks' agreement), ``reduce_scatter`` (stage 2), ``norm`` (the global gradient
    statistics, when clipping or skipping), ``update`` (the local kernels) and ``broadcast``.
    """

    def __init__(self, params: Iterable[Any], optimizer_class: type[Optimizer], *,
                 comm: Any = None, stage: int = 2, average: bool = True,
                 **defaults: Any) -> None:
        MPI = _mpi()
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank: int = self.comm.Get_rank()
        self.world_size: int = self.comm.Get_size()
        error: Exception | None = None
        digest: tuple[str, ...] = ()
        try:
            if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)
                    and optimizer_class is not Optimizer):
                raise TypeError(f"Invalid optimizer_class: {optimizer_class!r} (expected a "
                                f"fastopt optimizer class such as fastopt.AdamW; for torch "
                                f"use torch.distributed's ZeroRedundancyOptimizer or FSDP2 "
                                f"with fastopt.torch)")
            if type(stage) is not int or stage not in (1, 2):
                raise ValueError(f"Invalid stage: {stage!r} (expected 1 or 2)")
            if type(average) is not bool:
                raise TypeError(f"Invalid average: {average!r} (expected a bool)")
            # The whole optimizer, never stepped: it checks every argument and holds
            # param_groups (the parameters and hyperparameters), as one process would.
            self._whole = optimizer_class(params, **defaults)
            for k, p in enumerate(self._whole._params()):
                if p.dtype not in (np.float32, np.float64):
                    raise TypeError(f"Invalid params[{k}]: dtype {_storage.name(p.dtype)} "
                                    f"(fastopt.distributed shards float32 and float64 "
                                    f"parameters: MPI sums no 16-bit floats)")
            for k, g in enumerate(self._whole.param_groups):
                if state_dtype_name(g.get("state_dtype")) == "8bit":
                    raise ValueError(f"Invalid state_dtype in group {k}: '8bit' (not sharded "
                                     f"yet: its blocks and min_8bit_size follow whole "
                                     f"arrays; use float32 or bfloat16 states)")
            self.stage, self.average = stage, average
            self._class, self._defaults = optimizer_class, defaults
            params_now = self._whole._params()
            self._sizes = [p.size for p in params_now]
            self._dtypes = [p.dtype for p in params_now]
            self._bounds = partition(self._sizes, self.world_size)
            self.segments = _segments(self._sizes, self._bounds, self.rank)
            self._all_segments = [_segments(self._sizes, self._bounds, r)
                                  for r in range(self.world_size)]
            self.local = self._local_optimizer()
            digest = (_digest(optimizer_class.__qualname__), _digest((stage, average)),
                      _digest([(p.shape, p.dtype.str) for p in params_now]),
                      _digest(_hypers(self._whole.param_groups)))
        except Exception as e:
            error = e
        self._agree(error, digest, ("optimizer class", "stage/average", "parameter shapes",
                                    "hyperparameters"), "ZeroOptimizer()")
        shared = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            set_threads_per_rank(shared.Get_size())
        finally:
            shared.Free()
        self._pieces_list: list[tuple[int, np.ndarray]] = []
        self._pieces_key: list[np.ndarray] | None = None
        self._send: dict[str, np.ndarray] = {}
        self._recv: dict[str, np.ndarray] = {}
        self.timings: dict[str, float] = {}

    # -- the pieces -------------------------------------------------------------------------

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self._whole.param_groups

    @property
    def ema_swapped(self) -> bool:
        return self.local.ema_swapped

    def _group_of(self) -> list[int]:
        return [k for k, g in enumerate(self._whole.param_groups) for _ in g["params"]]

    def _local_optimizer(self) -> Optimizer:
        """This rank's optimizer: each group's pieces as 1-D views (a group with none gets an
        empty placeholder array, never stepped, so the groups stay one to one)."""
        params = self._whole._params()
        group_of = self._group_of()
        groups: list[dict[str, Any]] = [
            {**{k: v for k, v in g.items() if k != "params"}, "params": []}
            for g in self._whole.param_groups]
        # The local parameters, group by group: positions in self.segments, -1 for a
        # placeholder. Segments are in parameter order, so groups take them in turn.
        self._index: list[int] = []
        self._offsets: list[int] = []  # each segment's place in its dtype's stage-2 buffer
        filled: dict[str, int] = {}
        for k, g in enumerate(groups):
            for s, (i, a, b) in enumerate(self.segments):
                if group_of[i] == k:
                    g["params"].append(self._view(params[i], a, b))
                    self._index.append(s)
            if not g["params"]:
                g["params"].append(np.empty(0, self._whole.param_groups[k]["params"][0].dtype))
                self._index.append(-1)
        for i, a, b in self.segments:
            key = self._dtypes[i].str
            self._offsets.append(filled.get(key, 0))
            filled[key] = filled.get(key, 0) + b - a
        self._seen = params
        return self._class(groups, **self._defaults)

    @staticmethod
    def _view(p: np.ndarray, a: int, b: int) -> np.ndarray:
        v = flat(p)
        assert v is not None  # the class checked that parameters are dense
        return v[a:b]

    def _check_params(self) -> None:
        """The parameters in param_groups now: the same sizes and dtypes as at construction;
        the local views follow arrays that replaced others."""
        params = self._whole._params()
        if len(params) == len(self._seen) and all(map(operator.is_, params, self._seen)):
            return
        if [p.size for p in params] != self._sizes or [p.dtype for p in params] != self._dtypes:
            raise ValueError("Invalid param_groups: the parameters changed size or dtype since "
                             "the ZeroOptimizer was built (the state is split by their sizes: "
                             "build a new one)")
        k = 0
        for group in self.local.param_groups:
            for j in range(len(group["params"])):
                s = self._index[k]
                if s >= 0:
                    i, a, b = self.segments[s]
                    group["params"][j] = self._view(params[i], a, b)
                k += 1
        self._seen = params

    def _sync_hyperparameters(self) -> None:
        for mine, whole in zip(self.local.param_groups, self._whole.param_groups):
            mine.update({k: v for k, v in whole.items() if k != "params"})

    # -- agreement --------------------------------------------------------------------------

    def _agree(self, error: BaseException | None, digest: tuple[str, ...],
               names: tuple[str, ...], what: str) -> None:
        """Every rank reports whether its checks passed and what it saw; all raise if any
        failed or any disagrees (a collective: every rank must call it)."""
        message = None if error is None else f"{type(error).__name__}: {error}"
        reports = self.comm.allgather((message, digest))
        if error is not None:
            raise error
        for r, (m, _) in enumerate(reports):
            if m is not None:
                raise RuntimeError(f"{what} failed on rank {r}: {m}")
        for r, (_, d) in enumerate(reports):
            for name, mine, theirs in zip(names, digest, d):
                if mine != theirs:
                    raise ValueError(f"{what}: rank {r} has other {name} than rank "
                                     f"{self.rank} (every rank must make the same call)")

    # -- the step ---------------------------------------------------------------------------

    def step(self, grads: Sequence[Any], *, loss_scale: float | None = None,
             max_grad_norm: float | None = None,
             skip_nonfinite: bool | None = None) -> StepResult:
        """Update every parameter with a gradient, on every rank (a collective call).

        ``grads``: one array or None per parameter, as for the class; with stage 1 the same
        all-reduced gradients on every rank, with stage 2 each rank's own. The keywords and
        the result are the class's (see ``Optimizer.step``); the norm, clip coefficient and
        skip decision are global and the same on every rank.
        """
        clock = time.perf_counter
        started = clock()
        timings = self.timings = {}
        error: Exception | None = None
        digest: tuple[str, ...] = ()
        full: list[Any] = []
        prepared: _Prepared | None = None
        inv_scale, clip, skip = 1.0, None, False
        try:
            inv_scale, clip, skip = step_arguments(loss_scale, max_grad_norm, skip_nonfinite)
            if self.stage == 2 and self.average and self.world_size > 1:
                scale = 1.0 if loss_scale is None else float(loss_scale)
                inv_scale = 1.0 / (scale * self.world_size)
            self._check_params()
            self._sync_hyperparameters()
            whole = self._whole._prepare(grads)
            full = whole.grads
            prepared = self.local._prepare(self._local_grads(full))
            digest = (_digest((loss_scale, max_grad_norm, skip_nonfinite)),
                      _digest(_hypers(self._whole.param_groups)),
                      _digest([g is None for g in full]))
        except Exception as e:
            error = e
        self._agree(error, digest, ("step arguments", "hyperparameters",
                                    "gradients (which are None)"), "step()")
        assert prepared is not None
        timings["check"] = (now := clock()) - started
        if self.stage == 2 and self.world_size > 1:  # (one rank reads its gradients in place)
            self._reduce_scatter(full)
            timings["reduce_scatter"] = -now + (now := clock())
        result = StepResult()
        if skip or clip is not None:
            live = [prepared.grads[j] for j in prepared.stepped if self._index[j] >= 0]
            sumsq, bad, dtypes = self._global_stats(live)
            result = decide_step(sumsq, bad, inv_scale, clip, skip, dtypes,
                                 lambda: self._global_overflow(live, inv_scale))
            timings["norm"] = -now + (now := clock())
            if result.skipped:
                return result
        self.local._apply(prepared, inv_scale * result.clip_coef)
        timings["update"] = -now + (now := clock())
        self._broadcast_params()
        timings["broadcast"] = clock() - now
        return result

    def _local_grads(self, grads: list[Any]) -> list[Any]:
        """The local optimizer's gradients: views of this rank's pieces (stage 1), or of the
        buffer the reduce-scatter fills (stage 2)."""
        out: list[Any] = []
        for s in self._index:
            if s < 0:
                out.append(None)
                continue
            i, a, b = self.segments[s]
            if grads[i] is None:
                out.append(None)
            elif self.stage == 1 or self.world_size == 1:
                out.append(self._view(grads[i], a, b))
            else:
                o = self._offsets[s]
                out.append(self._recv_buffer(grads[i].dtype.str)[o:o + b - a])
        return out

    def _counts(self, key: str) -> list[int]:
        """How many elements of dtype ``key`` each rank's pieces hold."""
        return [sum(b - a for i, a, b in segs if self._dtypes[i].str == key)
                for segs in self._all_segments]

    def _recv_buffer(self, key: str) -> np.ndarray:
        buf = self._recv.get(key)
        if buf is None:
            buf = self._recv[key] = np.empty(self._counts(key)[self.rank], np.dtype(key))
        return buf

    def _reduce_scatter(self, grads: list[Any]) -> None:
        """Sum every rank's gradients into each rank's pieces: the gradients packed into one
        buffer a dtype (a copy: the price of one ``Reduce_scatter``, the bandwidth-optimal
        collective; one ``Ireduce`` a piece, straight from the gradients, measured 1.3x
        slower on 2 ranks of GPT-2-small shapes), then one ``Reduce_scatter`` a dtype."""
        MPI = _mpi()
        for key in sorted({d.str for d in self._dtypes}):
            counts = self._counts(key)
            send = self._send.get(key)
            if send is None:
                send = self._send[key] = np.empty(sum(counts), np.dtype(key))
            o = 0
            for i, g in enumerate(grads):
                if self._dtypes[i].str != key:
                    continue
                n = self._sizes[i]
                if g is None:
                    send[o:o + n] = 0  # None on every rank (checked): never stepped
                else:
                    src = flat(g)
                    assert src is not None
                    send[o:o + n] = src
                o += n
            self.comm.Reduce_scatter(send, self._recv_buffer(key), counts, op=MPI.SUM)

    def _global_stats(self, live: list[np.ndarray]) -> tuple[float, int, list[np.dtype[Any]]]:
        """The one-process sum of squares and non-finite count of all ranks' live gradients,
        from every rank's per-chunk partial sums (exchanged, then summed exactly)."""
        from ._numba_backend import grad_partials

        by_dtype: dict[str, list[np.ndarray]] = {}
        for g in live:
            by_dtype.setdefault(g.dtype.str, []).append(g)
        mine = {key: grad_partials(gs) for key, gs in by_dtype.items()}
        reports = self.comm.allgather(mine)
        totals, bad, keys = [], 0, set()
        for key in sorted({k for rep in reports for k in rep}):
            keys.add(key)
            partials = [rep[key][0] for rep in reports if key in rep]
            totals.append(math.fsum(np.concatenate(partials).tolist()))
            bad += sum(rep[key][1] for rep in reports if key in rep)
        dtypes = [np.dtype(k) for k in sorted(keys)]
        return math.fsum(totals), bad, dtypes

    def _global_overflow(self, live: list[np.ndarray], inv_scale: float) -> int:
        from .optim import _overflowing

        count: int = self.comm.allreduce(_overflowing(live, inv_scale))
        return count

    def _broadcast_params(self) -> None:
        """Every rank's updated pieces to every rank, in place: one nonblocking broadcast per
        piece, straight from and into the parameters (a datatype listing a rank's pieces
        would make one call a rank, but MPICH moves such a type 10x slower: measured)."""
        MPI = _mpi()
        pieces = self._pieces_to_broadcast()
        for first in range(0, len(pieces), _MAX_REQUESTS):
            requests = [self.comm.Ibcast(view, root=r)
                        for r, view in pieces[first:first + _MAX_REQUESTS]]
            MPI.Request.Waitall(requests)

    def _pieces_to_broadcast(self) -> list[tuple[int, np.ndarray]]:
        """(owner rank, 1-D view) of every non-empty piece, for the parameters seen by the
        last _check_params (kept until they change)."""
        params = self._seen
        if self._pieces_key is not params:
            self._pieces_list = [(r, self._view(params[i], a, b))
                                 for r, segs in enumerate(self._all_segments)
                                 for i, a, b in segs if b > a]
            self._pieces_key = params
        return self._pieces_list

    # -- the weight EMA and Schedule-Free's modes ---------------------------------------------

    def swap_ema(self) -> None:
        """Exchange the parameters with their weight EMA on every rank (a collective call)."""
        self._local_call("swap_ema")

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Within the block, the parameters hold their EMA (on every rank)."""
        self.swap_ema()
        try:
            yield
        finally:
            self.swap_ema()

    def train(self) -> None:
        """Schedule-Free classes: the training point in the parameters (a collective call)."""
        self._local_call("train")

    def eval(self) -> None:
        """Schedule-Free classes: the evaluation point in the parameters (a collective call)."""
        self._local_call("eval")

    def _local_call(self, name: str) -> None:
        error: Exception | None = None
        try:
            method = getattr(self.local, name, None)
            if method is None:
                raise AttributeError(f"{self._class.__name__} has no {name}()")
            self._check_params()
            method()
        except Exception as e:
            error = e
        self._agree(error, (), (), f"{name}()")
        self._broadcast_params()

    # -- checkpoints ----------------------------------------------------------------------------

    def _pieces(self) -> dict[int, dict[str, Any]]:
        """This rank's state, by whole-parameter index: step counts, scalar states and
        ``(first, stop, values)`` for each state array."""
        scalars = set(SPECS[self._class.algorithm].scalar_names)
        out: dict[int, dict[str, Any]] = {}
        for k, s in self.local.state.items():
            if self._index[k] < 0:
                continue
            i, a, b = self.segments[self._index[k]]
            piece: dict[str, Any] = {}
            for name, v in s.items():
                if name == "step" or name in scalars:
                    piece[name] = v.copy() if isinstance(v, np.ndarray) else v
                else:
                    piece[name] = (a, b, np.array(v))
            out[i] = piece
        return out

    def _assemble(self, reports: Iterable[dict[int, dict[str, Any]]]) -> dict[str, Any]:
        params = self._whole._params()
        state: dict[int, dict[str, Any]] = {}
        for pieces in reports:
            for i, piece in pieces.items():
                d = state.setdefault(i, {})
                for name, v in piece.items():
                    if isinstance(v, tuple):
                        a, b, values = v
                        if name not in d:
                            d[name] = zeros_as(params[i], values.dtype)
                        target = flat(d[name])
                        assert target is not None
                        target[a:b] = values
                    elif name not in d:
                        d[name] = v
        sd = self._whole.state_dict()
        sd["state"] = {i: state[i] for i in sorted(state)}
        sd["ema_swapped"] = self.local.ema_swapped
        return sd

    def state_dict(self) -> dict[str, Any]:
        """The whole optimizer's state, as the unsharded class's ``state_dict()``, on every
        rank (a collective call; every rank then holds all of it: to save, ``save``)."""
        return self._assemble(self.comm.allgather(self._pieces()))

    def save(self, path: str | os.PathLike[str], root: int = 0) -> None:
        """Write the whole state to ``path`` as the unsharded class's ``save`` would (a
        collective call; rank ``root`` gathers and writes, and an error there raises on every
        rank)."""
        reports = self.comm.gather(self._pieces(), root=root)
        error = None
        if self.rank == root:
            try:
                write_checkpoint(self._assemble(reports), path)
            except Exception as e:
                error = e
        message = self.comm.bcast(None if error is None else f"{type(error).__name__}: "
                                  f"{error}", root=root)
        if error is not None:
            raise error
        if message is not None:
            raise RuntimeError(f"save() failed on rank {root}: {message}")

    def load(self, path: str | os.PathLike[str]) -> None:
        """Load a checkpoint written by ``save`` (on any number of ranks) or by the unsharded
        class (a collective call; each rank reads only its parameters' state)."""
        error: Exception | None = None
        sd: dict[str, Any] | None = None
        try:
            sd = read_checkpoint(path, only={i for i, _, _ in self.segments})
        except Exception as e:
            error = e
        self._load(sd, error)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()`` (the whole, unsharded one, the same on every rank; a
        collective call). Checked first: an error changes nothing on any rank."""
        self._load(state_dict, None)

    def _load(self, sd: dict[str, Any] | None, error: Exception | None) -> None:
        digest: tuple[str, ...] = ()
        new: dict[int, dict[str, Any]] = {}
        groups: list[dict[str, Any]] = []
        swapped = False
        if error is None:
            try:
                groups, state = self._whole._check_state_dict(sd)
                assert sd is not None
                swapped = sd.get("ema_swapped", False)
                if type(swapped) is not bool:
                    raise ValueError(f"Invalid state_dict for {self._class.__name__}: "
                                     f"ema_swapped {swapped!r} (expected a bool)")
                scalars = set(SPECS[self._class.algorithm].scalar_names)
                for k in range(len(self._index)):
                    if self._index[k] < 0:
                        continue
                    i, a, b = self.segments[self._index[k]]
                    s = state.get(i)
                    if s is None:
                        continue
                    piece: dict[str, Any] = {}
                    for name, v in s.items():
                        if name == "step" or name in scalars:
                            piece[name] = v
                        else:
                            values = flat(v)
                            assert values is not None
                            piece[name] = values[a:b].copy()
                    new[k] = piece
                digest = (_digest(_hypers(groups)), _digest(swapped))
            except Exception as e:
                error = e
        self._agree(error, digest, ("hyperparameters", "ema_swapped"), "load")
        for mine, theirs in zip(self._whole.param_groups, groups):
            mine.update({k: v for k, v in theirs.items() if k != "params"})
        self._sync_hyperparameters()
        self.local.state = new
        self.local.ema_swapped = swapped
        self.local._plan = None

    def __repr__(self) -> str:
        return (f"ZeroOptimizer({self._class.__name__}, stage={self.stage}, rank {self.rank} "
                f"of {self.world_size}, elements {self._bounds[self.rank]}.."
                f"{self._bounds[self.rank + 1]} of {self._bounds[-1]})")
