"""The Numba-CUDA kernel of any algorithm, generated from its rule (as kernels.cpu.generic).

``kernel(rule, active, flags, n_scalars, ema, formats, param_mode, sr)[blocks, threads](param,
grad, *states, [ema], [master or comp], *scalars, [e0, e1, e2], [sr_key, sr_offset])``: a
grid-stride loop whose body is the CPU kernels' (kernels.cpu.generic.element_body): the rule on
each element, with every state slot passed (an inactive one may be any array; it is not
touched), the scalars of ``rules.<rule>_scalars`` computed on the host and cast to the math
type, and, built with ``ema``, ``rules.ema`` applied to the EMA array with its three scalars.
``formats``: the storage format of each slot (param, grad, each state, the EMA, the master or
compensation array; kernels.cpu.generic.STORAGE), None for all of the math dtype: 16-bit slots
are uint16 arrays of bit patterns, converted by kernels.formats; ``param_mode`` and ``sr`` as on
the CPU (master weights or compensation; stochastic rounding of the 16-bit parameter).

An 8-bit state slot (format "q8..." of kernels.cpu.generic.Q8) takes two arguments, its codes
and its absmax, and makes the kernel blockwise: one CUDA block of q8.BLOCK threads per block of
the state (grid-striding over them), a thread per element, as bitsandbytes' kernels: each
thread decodes its element with the block's old absmax and runs the rule; the block's new
absmax is the maximum of the new values' magnitudes, taken on their float32 bit patterns in
shared memory (exact, order-free: the CPU kernel's value); then each thread encodes its value.
Launch it with q8.BLOCK threads per block.
"""

import functools

import numpy as np

from .. import formats as formats_mod
from .. import q8 as q8_mod
from .. import rules
from ..cpu.generic import PARAM_MODES, Q8, STORAGE, define, element_body
from ._common import compile_kernel, kernel_factory, rule as compile_rule


@functools.cache
def compiled_rule(name):
    return compile_rule(getattr(rules, name))


@functools.cache
def compiled_format(name):
    return compile_rule(getattr(formats_mod, name))


@kernel_factory
def kernel(rule, active, flags, n_scalars, ema=False, formats=None, param_mode="", sr=False):
    """The kernel of one configuration: ``active`` per state slot, ``flags`` the (name, value)
    pairs in the rule's order, ``n_scalars`` how many scalars follow the arrays, ``ema``
    whether the weight EMA is fused in; ``formats``, ``param_mode``, ``sr``: see the module
    docstring."""
    assert param_mode in PARAM_MODES, param_mode
    states = [f"s{j}" for j in range(len(active))]
    extra = {"": [], "master": ["master"], "kahan": ["comp"]}[param_mode]
    slots = ["param", "grad", *states, *(["ema"] if ema else []), *extra]
    fmt = dict(zip(slots, formats or ("",) * len(slots)))
    assert set(fmt.values()) <= {*STORAGE, *Q8} and len(fmt) == len(slots), formats
    q8 = [s for s, on in zip(states, active) if on and fmt[s] in Q8]
    cs = [f"c{k}" for k in range(n_scalars)]
    es = ["e0", "e1", "e2"] if ema else []
    srs = ["sr_key", "sr_offset"] if sr else []
    body = element_body(states, active, flags, cs, fmt, param_mode, sr, q8, ema)
    arrays = [a for s in slots for a in ([s, f"{s}_absmax"] if s in q8 else [s])]
    head = f"def {rule}({', '.join(arrays + cs + es + srs)}):"
    if q8:
        lines = [head, *_blockwise(body, q8, fmt, {s: k + 1 for k, s in enumerate(states)})]
    else:
        lines = [head, "    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):", *body]
    source = "\n".join(lines) + "\n"
    from numba import cuda

    namespace = {"_rule": compiled_rule(rule), "_ema": compiled_rule("ema"), "cuda": cuda,
                 "_random_bits": compiled_format("random_bits"), "_i64": np.int64,
                 "_u32": np.uint32, "_f32": np.float32,
                 **{f"_{f}_{d}": compiled_format(f"{f}_{d}") for f in STORAGE[1:]
                    for d in ("load", "store", "store_sr")},
                 **{f"_{f}_{d}": compiled_q8(f"{name}_{d}") for f, name in Q8.items()
                    for d in ("load", "store")},
                 **{f"_{f}_K": q8_mod.K_DYNAMIC if f[2] == "d" else q8_mod.K_FP8 for f in Q8}}
    return compile_kernel(define(source, rule, namespace))


def _blockwise(body, q8, fmt, result_index):
    """The body of a kernel with 8-bit states (see the module docstring): the element
    ``body`` (kernels.cpu.generic.element_body) runs on thread ``t``'s element ``i`` of block
    ``b``, reading each 8-bit state ``s`` from ``q_s[0]`` (decoded) and leaving its new value
    there, as on the CPU (j = 0)."""
    B = q8_mod.BLOCK
    out = [*[f"    m_{s} = cuda.shared.array({B}, _u32)" for s in q8],
           *[f"    q_{s} = cuda.local.array(1, _f32)" for s in q8],
           "    t = cuda.threadIdx.x",
           "    n = param.size",
           "    j = 0",
           f"    for b in range(cuda.blockIdx.x, (n + {B - 1}) // {B}, cuda.gridDim.x):",
           f"        i = b * {B} + t"]
    for s in q8:
        out += [f"        d_{s} = _f32({s}_absmax[b] / _{fmt[s]}_K)",
                f"        a_{s} = _u32(0)"]
    out += ["        if i < n:"]
    out += [f"            q_{s}[0] = _{fmt[s]}_load({s}[i]) * d_{s}" for s in q8]
    out += ["    " + line for line in body]
    for s in q8:
        r = f"r[{result_index[s]}]"
        out += [f"            q_{s}[0] = {r}",
                f"            a_{s} = _u32(_f32({r}).view(_u32) & _u32(0x7FFFFFFF))"]
    out += [f"        m_{s}[t] = a_{s}" for s in q8]
    out += ["        cuda.syncthreads()",
            f"        h = {B // 2}",
            "        while h > 0:",
            "            if t < h:"]
    for s in q8:
        out += [f"                m_{s}[t] = m_{s}[t] if m_{s}[t] > m_{s}[t + h] else "
                f"m_{s}[t + h]"]
    out += ["            cuda.syncthreads()",
            "            h //= 2"]
    for s in q8:
        f = fmt[s]
        value = "x" if f.endswith("s") else f"x, q_{s}[0]"
        out += [f"        x_{s} = _u32(m_{s}[0]).view(_f32)",
                f"        k_{s} = _f32(_{f}_K / x_{s}) if x_{s} > _f32(0) else _f32(0)",
                "        if i < n:",
                f"            x = q_{s}[0] * k_{s}",
                f"            {s}[i] = _{f}_store({value})",
                "        if t == 0:",
                f"            {s}_absmax[b] = x_{s}"]
    # Every thread has read the maxima before the next block's overwrite them.
    out += ["        cuda.syncthreads()"]
    return out


@functools.cache
def compiled_q8(name):
    return compile_rule(getattr(q8_mod, name))
