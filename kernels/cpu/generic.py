"""The Numba CPU kernel of any algorithm, generated from its rule and its spec's shape.

One generator serves every algorithm: given the rule's name (``rules.<rule>`` and
``rules.<rule>_scalars``), the state names, which states are active and the compile-time flag
values, it writes the kernel's Python source, compiles it with Numba and caches it on disk. The
kernel is::

    kernel(param, grad, *states, [ema], [step], *scalar_states, [ema_weight, ema_rest,
           ema_first], *scalar_args)

over 1-D contiguous arrays of one float dtype, in place: every state slot is passed (an inactive
one may be any array of the dtype, it is not touched), the weight EMA's array in the kernels
built with ``ema`` (``rules.ema`` after the rule, on the parameter it wrote), ``step`` when the
scalars function takes it, then its scalar states' values (NAdam's mu_product, see
_specs.Scalar), the EMA's three scalars, then the scalars function's hyperparameter arguments in
its order. The scalars are computed
once per call in float64, cast to the arrays' dtype, and the loop calls the rule on each element
with the flags as constants, so a configuration's kernel carries only its own branches.

Raw kernels validate one thing only, first, before writing: that no two of the arrays they
use overlap in memory (inactive state slots are not used). They return -1, or ``64 * i + j``
for the first overlapping pair ``i < j`` of the used arrays (param, grad, the active states in
order, the EMA), having written nothing. They can be called from the caller's own
``@numba.njit`` code.
"""

import functools
import hashlib

import numba
import numpy as np

from .. import formats, rules
from .. import q8 as q8_mod
from ._common import KERNEL_OPTIONS, compile_keyed, kernel_factory, loop_for
from ._common import rule as compile_rule


def define(source, name, namespace):
    """Run generated ``source`` in ``namespace`` and return the function ``name``.

    The code object is given this file's name, which Numba's on-disk cache needs to locate
    (generated kernels are keyed by their configuration and source digest, see compile_keyed).
    """
    namespace.setdefault("__name__", __name__)
    exec(compile(source, __file__, "exec"), namespace)
    return namespace[name]


def overlap(a, b):
    """Whether the memory ranges of the 1-D contiguous arrays ``a`` and ``b`` overlap (what
    ``numpy.may_share_memory`` tells, in compiled code)."""
    lo_a = a.ctypes.data
    lo_b = b.ctypes.data
    return lo_b < lo_a + a.size * a.itemsize and lo_a < lo_b + b.size * b.itemsize


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _literal(x):
    return "True" if x else "False"


# Storage formats of an array slot: "" (the math dtype itself: float32 or float64), a 16-bit
# format held as uint16 bit patterns, converted by kernels.formats around the rule, or (states
# only) an 8-bit blockwise format of kernels.q8: "q8" + "d" (dynamic map) or "f" (fp8) + "s"
# (signed) or "u" (non-negative).
STORAGE = ("", "bf16", "f16")
Q8 = {"q8ds": "dynamic_signed", "q8du": "dynamic_unsigned", "q8fs": "fp8_signed",
      "q8fu": "fp8_unsigned"}


def _load(fmt, expr):
    return f"_{fmt}_load({expr})" if fmt else expr


def _store(fmt, expr):
    return f"_{fmt}_store({expr})" if fmt else expr


# How a 16-bit parameter is kept (``param_mode``): "" (the parameter itself), "master" (a
# float32 master copy in the ``master`` slot holds the value; the parameter is only written,
# rounded from it) or "kahan" (the value is param + ``comp``, a compensation array of the
# parameter's format holding what rounding the parameter lost).
PARAM_MODES = ("", "master", "kahan")


def kernel_source(rule, states, active, flags, scalar_call, n_scalars, ema=False, grad=True,
                  formats=None, param_mode="", sr=False):
    """The Python source of one configuration's kernel (see the module docstring).

    ``formats``: the storage format of each array slot (param, grad, every state slot, the
    EMA, then the master or compensation array), from STORAGE and Q8; None: all in the math
    dtype. With a 16-bit or 8-bit slot the math is float32. An 8-bit state slot ``s`` takes
    two arguments, its codes ``s`` (uint8) and ``s_absmax`` (float32, one per block of
    q8.BLOCK elements), and makes the kernel blockwise (see _blockwise). ``param_mode``: see
    PARAM_MODES. ``sr``: the 16-bit parameter is stored with stochastic rounding
    (formats.random_bits of the arguments ``sr_key`` and ``sr_offset + i``).
    """
    assert param_mode in PARAM_MODES, param_mode
    head = [name for kind, name in scalar_call if kind in ("step", "scalar")]
    hypers = [name for kind, name in scalar_call if kind == "hyper"]
    ema_scalars = ["ema_weight", "ema_rest", "ema_first"] if ema else []
    extra = {"": [], "master": ["master"], "kahan": ["comp"]}[param_mode]
    slots = ["param", "grad", *states, *(["ema"] if ema else []), *extra]
    fmt = dict(zip(slots, formats or ("",) * len(slots)))
    assert set(fmt.values()) <= {*STORAGE, *Q8} and len(fmt) == len(slots), formats
    q8 = [s for s, on in zip(states, active) if on and fmt[s] in Q8]
    assert all(fmt[s] not in Q8 for s in slots if s not in states), formats
    array_args = [a for s in slots for a in ([s, f"{s}_absmax"] if s in q8 else [s])]
    args = [*array_args, *head, *ema_scalars, *(["sr_key", "sr_offset"] if sr else []),
            *hypers]
    assert not (param_mode or sr) or fmt["param"], "a param mode needs a 16-bit param"
    flag_values = dict(flags)
    call = ", ".join(_literal(flag_values[name]) if kind == "flag" else name
                     for kind, name in scalar_call)
    cs = [f"c{k}" for k in range(n_scalars)]
    # The arrays the overlap check covers (``grad=False``: the slot holds a stand-in).
    used = ["param", *(["grad"] if grad else []),
            *[a for s, on in zip(states, active) if on
              for a in ([s, f"{s}_absmax"] if s in q8 else [s])],
            *(["ema"] if ema else []), *extra]
    body = element_body(states, active, flags, cs, fmt, param_mode, sr, q8, ema)
    worker: list[str] = []
    if q8:
        # The blocks of one task in a function of their own, called from the (parallel)
        # loop over tasks: measured, the element loops written inside a prange body do not
        # vectorise (3x slower).
        scalars = [*cs, *[f"e{k}" for k in range(len(ema_scalars))],
                   *(["sr_key", "sr_offset"] if sr else [])]
        worker = [f"def _blocks({', '.join([*array_args, *scalars, 'c'])}):",
                  *_blockwise(body, q8, fmt, {s: k + 1 for k, s in enumerate(states)}),
                  "", ""]
        loop = [f"    nb = (param.size + {q8_mod.BLOCK - 1}) // {q8_mod.BLOCK}",
                f"    for c in loop((nb + {BLOCKS_PER_TASK - 1}) // {BLOCKS_PER_TASK}):",
                f"        _blocks({', '.join([*array_args, *scalars, 'c'])})"]
    else:
        loop = ["    for i in loop(param.size):", *body]
    lines = [
        *worker,
        f"def {rule}({', '.join(args)}):",
        *[f"    if _overlap({a}, {b}):\n        return {64 * i + j}"
          for i, a in enumerate(used) for j, b in enumerate(used) if i < j],
        f"    s = _scalars({call})",
        "    t = _f32" if any(fmt.values()) else "    t = param.dtype.type",
        *[f"    {c} = t(s[{k}])" for k, c in enumerate(cs)],
        *[f"    e{k} = t({name})" for k, name in enumerate(ema_scalars)],
        *loop,
        "    return -1",
    ]
    return "\n".join(lines) + "\n"


def element_body(states, active, flags, cs, fmt, param_mode, sr, q8=(), ema=False):
    """The lines (indented 8) that update element ``i``: load the parameter's value (``p``,
    from the parameter, the master or parameter + compensation), call ``_rule`` with the
    scalars ``cs`` and the flags, store the parameter (rounded, stochastically with ``sr``),
    the master or compensation, each non-8-bit active state (``fmt``: each slot's format) and
    the weight EMA (scalars ``e0, e1, e2``). An 8-bit state ``s`` is read from and its new
    value left in ``q_<s>[j]`` (see _blockwise). Shared by the CPU and the CUDA kernels."""
    values = ", ".join(f"q_{s}[j]" if s in q8 else _load(fmt[s], f"{s}[i]") if on else "p"
                       for s, on in zip(states, active))
    pf = fmt["param"]
    # The parameter's value the rule starts from, and the stores of the new value r[0].
    if param_mode == "master":
        start = "master[i]"
    elif param_mode == "kahan":
        start = f"_{pf}_load(param[i]) + _{pf}_load(comp[i])"
    else:
        start = _load(pf, "param[i]")
    rounded = (f"_{pf}_store_sr(r[0], _random_bits(sr_key, sr_offset + _i64(i)))" if sr
               else _store(pf, "r[0]"))
    stores = ([f"        q = {rounded}", "        param[i] = q"]
              + (["        master[i] = r[0]"] if param_mode == "master" else [])
              + ([f"        comp[i] = _{pf}_store(r[0] - _{pf}_load(q))"]
                 if param_mode == "kahan" else []))
    # The param's value for the EMA: as stored when the param is 16-bit, unless a master or
    # compensation array keeps the full value.
    stored = f"_{pf}_load(q)" if pf and not param_mode else "r[0]"
    body = [
        f"        p = {start}",
        f"        r = _rule(p, {_load(fmt['grad'], 'grad[i]')}, {values + ', ' if values else ''}"
        f"{', '.join(cs + [_literal(v) for _, v in flags])})",
        *stores,
        *[f"        {s}[i] = {_store(fmt[s], f'r[{k + 1}]')}"
          for k, (s, on) in enumerate(zip(states, active)) if on and s not in q8],
        *([f"        ema[i] = {_store(fmt['ema'], _ema_call(fmt['ema'], stored))}"] if ema else []),
    ]
    return body


# The blocks of one parallel task of a kernel with 8-bit states (its buffers are allocated
# once per task).
BLOCKS_PER_TASK = 64


def _blockwise(body, q8, fmt, result_index):
    """The body of ``_blocks``, the worker of a kernel with 8-bit states: task ``c``'s
    BLOCKS_PER_TASK blocks of q8.BLOCK elements, each in three passes over its elements
    while the block stays in cache:
    decode every 8-bit state into a float32 buffer (``q_<state>``), run the element ``body``
    on the buffers (the rule's new state values go back into them, their magnitudes' maximum
    is taken on the float32 bit patterns: an integer maximum, exact and vectorisable), then
    store the block's new absmax and encode the buffers. The rule sees the fresh, unquantized
    moments, as the non-blockwise kernel does."""
    B = q8_mod.BLOCK
    # Unsigned indices: with a signed one that LLVM cannot prove non-negative (the task
    # number is an argument) every access keeps NumPy's negative-index wraparound, and the
    # element loops do not vectorise (measured: 5x slower). (uint64 with int64 is float64 in
    # Numba: every operand is cast.)
    out = ["    n = _u64(param.size)",
           f"    nb = (n + _u64({B - 1})) // _u64({B})",
           "    c = _u64(c)",
           *[f"    q_{s} = np.empty({B}, _f32)" for s in q8],
           f"    for bb in range(min(_u64({BLOCKS_PER_TASK}), nb - c * _u64({BLOCKS_PER_TASK}))):",
           f"        b = c * _u64({BLOCKS_PER_TASK}) + bb",
           f"        lo = b * _u64({B})",
           f"        w = min(_u64({B}), n - lo)"]
    for s in q8:
        f = fmt[s]
        out += [f"        d_{s} = _f32({s}_absmax[b] / _{f}_K)",
                f"        m_{s} = _u32(0)"]
    out += ["        for j in range(w):", "            i = lo + j"]
    out += [f"            q_{s}[j] = _{fmt[s]}_load({s}[i]) * d_{s}" for s in q8]
    out += ["    " + line for line in body]
    for s in q8:
        r = f"r[{result_index[s]}]"
        out += [f"            q_{s}[j] = {r}",
                f"            a_{s} = _u32(_f32({r}).view(_u32) & _u32(0x7FFFFFFF))",
                f"            m_{s} = a_{s} if a_{s} > m_{s} else m_{s}"]
    for s in q8:
        f = fmt[s]
        value = "x" if f.endswith("s") else f"x, q_{s}[j]"
        out += [f"        x_{s} = _u32(m_{s}).view(_f32)",
                f"        {s}_absmax[b] = x_{s}",
                f"        k_{s} = _f32(_{f}_K / x_{s}) if x_{s} > _f32(0) else _f32(0)",
                "        for j in range(w):",
                f"            x = q_{s}[j] * k_{s}",
                f"            {s}[lo + j] = _{f}_store({value})"]
    return out


def _ema_call(fmt, stored):
    return f"_ema({_load(fmt, 'ema[i]')}, {stored}, e0, e1, e2)"


@functools.cache
def compiled_rule(name):
    """``rules.<name>`` compiled for inlining into CPU kernels (once per process)."""
    return compile_rule(getattr(rules, name))


@functools.cache
def compiled_format(name):
    """``formats.<name>`` compiled for inlining (once per process)."""
    return compile_rule(getattr(formats, name))


@functools.cache
def compiled_q8(name):
    """``q8.<name>`` compiled for inlining (once per process)."""
    return compile_rule(getattr(q8_mod, name))


@functools.cache
def _overlap():
    return compile_rule(overlap)


@kernel_factory
def kernel(rule, states, active, flags, scalar_call, parallel, ema=False, grad=True,
           formats=None, param_mode="", sr=False):
    """The compiled kernel of one configuration (``ema``: with the fused weight EMA;
    ``grad=False``: the gradient slot is not read, and not in the overlap check).

    ``rule`` names ``rules.<rule>``; ``states`` the state slots in order, ``active`` which of
    them the flags activate; ``flags`` is the tuple of (flag name, value) in the rule's order;
    ``scalar_call`` says what each argument of ``rules.<rule>_scalars`` is, in its order:
    ("step", "step"), ("hyper", name) (a kernel argument) or ("flag", name) (a constant).
    """
    scalars_fn = getattr(rules, f"{rule}_scalars")
    probe = [1 if kind == "step" else False if kind == "flag" else 0.5
             for kind, _ in scalar_call]
    n_scalars = len(scalars_fn(*probe))
    source = kernel_source(rule, states, active, flags, scalar_call, n_scalars, ema, grad,
                           formats, param_mode, sr)
    namespace = {
        "_rule": compiled_rule(rule),
        "_ema": compiled_rule("ema"),
        "_overlap": _overlap(),
        "_f32": np.float32,
        **{f"_{f}_{d}": compiled_format(f"{f}_{d}") for f in STORAGE[1:]
           for d in ("load", "store", "store_sr")},
        "_random_bits": compiled_format("random_bits"),
        "_u32": np.uint32,
        "_u64": np.uint64,
        "_i64": np.int64,
        "np": np,
        **{f"_{f}_{d}": compiled_q8(f"{name}_{d}") for f, name in Q8.items()
           for d in ("load", "store")},
        **{f"_{f}_K": q8_mod.K_DYNAMIC if f[2] == "d" else q8_mod.K_FP8 for f in Q8},
        "_scalars": compiled_rule(f"{rule}_scalars"),
        "loop": loop_for(parallel),
    }
    if "def _blocks(" in source:  # compiled before the kernel that calls it
        namespace["_blocks"] = None
        worker = define(source, "_blocks", namespace)
        worker.__qualname__ = worker.__name__ = f"_blocks_{digest(source)}"
        namespace["_blocks"] = numba.njit(**KERNEL_OPTIONS)(worker)
        fn = namespace[rule]
    else:
        fn = define(source, rule, namespace)
    return compile_keyed(fn, parallel, f"kernel|{rule}|{digest(source)}")
