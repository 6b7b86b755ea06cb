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
"""

import functools

from .. import formats as formats_mod
from .. import rules
from ..cpu.generic import PARAM_MODES, STORAGE, define, element_body
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
    assert set(fmt.values()) <= set(STORAGE) and len(fmt) == len(slots), formats
    cs = [f"c{k}" for k in range(n_scalars)]
    es = ["e0", "e1", "e2"] if ema else []
    srs = ["sr_key", "sr_offset"] if sr else []
    body = element_body(states, active, flags, cs, fmt, param_mode, sr, (), ema)
    source = "\n".join([
        f"def {rule}({', '.join(slots + cs + es + srs)}):",
        "    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):",
        *body,
    ]) + "\n"
    from numba import cuda
    import numpy as np

    namespace = {"_rule": compiled_rule(rule), "_ema": compiled_rule("ema"), "cuda": cuda,
                 "_random_bits": compiled_format("random_bits"), "_i64": np.int64,
                 **{f"_{f}_{d}": compiled_format(f"{f}_{d}") for f in STORAGE[1:]
                    for d in ("load", "store", "store_sr")}}
    return compile_kernel(define(source, rule, namespace))
