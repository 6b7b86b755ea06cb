"""Multi-tensor CPU kernels: one launch updates every tensor of a parameter group.

The tensors are passed as a table of addresses, one row per tensor and one column per array
(param, grad, then the algorithm's state arrays), and the work as a table of chunks: chunk ``c``
covers elements ``[lo[c], hi[c])`` of tensor ``tensor[c]``. A parallel kernel runs the chunks
across threads; inside a chunk it calls the serial single-tensor kernel of the algorithm (the
same compiled loop ``fastopt.adam_step`` runs), on array views built from the addresses. So the
element math is the single-tensor kernel's, bit for bit, whatever the chunking.

Chunk boundaries depend only on the tensors' sizes (``chunk_table``), never on the thread count,
which keeps the gradient-norm reduction below deterministic.

The caller keeps every array alive during the call and guarantees that the addresses, sizes and
dtype are right: nothing here validates.
"""

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from ._common import compile_keyed, compile_kernel, kernel_factory, loop_for
from .generic import define

# A chunk is at most this many elements: small enough to spread a few large tensors over all
# threads, large enough that the per-chunk overhead (a call, a few scalars) is negligible.
CHUNK = 1 << 15


@intrinsic
def _pointer(typingctx, address, dtype):
    """The int ``address`` as a typed data pointer (``dtype`` is a NumPy scalar type)."""
    ptr = types.CPointer(dtype.dtype)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr))

    return ptr(types.intp, dtype), codegen


def chunk_table(sizes):
    """The (tensor, lo, hi) int64 arrays splitting tensors of ``sizes`` into chunks."""
    sizes = np.asarray(sizes, dtype=np.int64)
    counts = (sizes + CHUNK - 1) // CHUNK
    tensor = np.repeat(np.arange(sizes.size, dtype=np.int64), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    lo = (np.arange(tensor.size, dtype=np.int64) - first) * CHUNK
    hi = np.minimum(lo + CHUNK, sizes[tensor])
    return tensor, lo, hi


def _helpers(single, view, n_arrays, takes_step, n_scalars):
    """Inlined helpers for ``n_arrays`` arrays: ``call(a, step, sv, k, h)`` calls the
    single-tensor kernel on the tuple of views ``a`` (then the step when it takes one, then
    tensor ``k``'s ``n_scalars`` scalar states ``sv[k, :]``, then the hyperparameters ``h``),
    ``views(ad, k, o, n)`` builds that tuple for tensor ``k`` from the address table, and
    ``swap_grad(a, g)`` replaces its gradient."""
    idx = range(n_arrays)
    step = "step, " if takes_step else ""
    scalars = "".join(f"sv[k, {j}], " for j in range(n_scalars))
    source = (
        "def call(a, step, sv, k, h):\n"
        f"    single({', '.join(f'a[{j}]' for j in idx)}, {step}{scalars}*h)\n"
        "def views(ad, k, o, n):\n"
        f"    return ({', '.join(f'view(ad, k, {j}, o, n)' for j in idx)},)\n"
        "def swap_grad(a, g):\n"
        f"    return ({', '.join('g' if j == 1 else f'a[{j}]' for j in idx)},)\n")
    namespace = {"single": single, "view": view}
    define(source, "call", namespace)
    return tuple(numba.njit(inline="always")(namespace[name])
                 for name in ("call", "views", "swap_grad"))


@kernel_factory
def multi_kernel(single, single_key, n_arrays, takes_step, n_scalars, dtype, parallel):
    """Return ``kernel(addresses, tensor, lo, hi, steps, scalars, hyper, scale)``.

    ``single`` is the serial single-tensor kernel of one configuration (for example
    ``adam_kernel(..., parallel=False)``) and ``single_key`` a string naming its configuration
    (the on-disk cache key; see _common.compile_keyed), ``n_arrays`` the number of arrays it takes (param,
    grad, states; unused state slots may repeat the param's address), ``takes_step`` whether its
    arrays are followed by the step. ``addresses`` is an int64 ``(n_tensors, n_arrays)`` table,
    ``steps`` an int64 array (each tensor's step), ``scalars`` a float64 ``(n_tensors,
    n_scalars)`` table (each tensor's scalar states, see _specs.Scalar), ``hyper`` the tuple of the kernel's remaining
    float arguments. When ``scale != 1`` each gradient element is multiplied by ``scale`` (in
    ``dtype``) before the update, through a chunk-sized scratch buffer: the caller's gradient is
    never written.
    """
    loop = loop_for(parallel)
    scalar = np.dtype(dtype).type
    itemsize = np.dtype(dtype).itemsize

    def view(addresses, k, j, offset, n):
        return numba.carray(_pointer(addresses[k, j] + offset, scalar), n)

    view = numba.njit(inline="always")(view)
    call, views, swap_grad = _helpers(single, view, n_arrays, takes_step, n_scalars)

    def multi(addresses, tensor, lo, hi, steps, scalars, hyper, scale):
        s = scalar(scale)
        for c in loop(tensor.size):
            k = tensor[c]
            n = hi[c] - lo[c]
            a = views(addresses, k, lo[c] * itemsize, n)
            if scale != 1.0:
                g = np.empty(n, scalar)
                src = a[1]
                for i in range(n):
                    g[i] = src[i] * s
                call(swap_grad(a, g), steps[k], scalars, k, hyper)
            else:
                call(a, steps[k], scalars, k, hyper)

    key = f"multi|{single_key}|{n_arrays}|{takes_step}|{n_scalars}|{np.dtype(dtype).name}"
    return compile_keyed(multi, parallel, key)


@kernel_factory
def grad_stats_kernel(dtype, parallel):
    """Return ``kernel(addresses, tensor, lo, hi, sumsq, nonfinite)``: per-chunk statistics.

    ``addresses`` is the int64 array of the gradients' addresses, one per tensor. For chunk ``c`` it stores the float64
    sum of squares in ``sumsq[c]`` and the count of non-finite elements in ``nonfinite[c]``.
    Within a chunk the sum runs over eight fixed interleaved partial sums, so the result does
    not depend on threads: add ``sumsq`` up in order for a deterministic total.
    """
    loop = loop_for(parallel)
    scalar = np.dtype(dtype).type
    itemsize = np.dtype(dtype).itemsize

    def grad_stats(addresses, tensor, lo, hi, sumsq, nonfinite):
        for c in loop(tensor.size):
            n = hi[c] - lo[c]
            x = numba.carray(_pointer(addresses[tensor[c]] + lo[c] * itemsize, scalar), n)
            acc = np.zeros(8, np.float64)
            bad = 0
            m = n - n % 8
            for i in range(0, m, 8):
                for j in range(8):
                    v = np.float64(x[i + j])
                    acc[j] += v * v
                    bad += not np.isfinite(v)
            for i in range(m, n):
                v = np.float64(x[i])
                acc[i - m] += v * v
                bad += not np.isfinite(v)
            total = 0.0
            for j in range(8):
                total += acc[j]
            sumsq[c] = total
            nonfinite[c] = bad

    return compile_kernel(grad_stats, parallel)


@kernel_factory
def add_to_scalars_kernel(dtype):
    """Return ``kernel(addresses, value)``: add ``value`` to the scalar of ``dtype`` at each
    address (torch's per-parameter step tensors, updated in one call instead of one each)."""
    scalar = np.dtype(dtype).type

    def add_to_scalars(addresses, value):
        for k in range(addresses.size):
            x = numba.carray(_pointer(addresses[k], scalar), 1)
            x[0] += scalar(value)

    return compile_kernel(add_to_scalars, False)


@kernel_factory
def read_scalars_kernel(dtype):
    """Return ``kernel(addresses, out)``: ``out[k]`` = the scalar of ``dtype`` at
    ``addresses[k]``, as float64."""
    scalar = np.dtype(dtype).type

    def read_scalars(addresses, out):
        for k in range(addresses.size):
            out[k] = np.float64(numba.carray(_pointer(addresses[k], scalar), 1)[0])

    return compile_kernel(read_scalars, False)
