"""The Numba-CUDA kernel of any algorithm, generated from its rule (as kernels.cpu.generic).

``kernel(rule, active, flags, n_scalars, ema)[blocks, threads](param, grad, *states, [ema],
*scalars, [ema_weight, ema_rest, ema_first])``: a grid-stride loop calling the rule on each
element, with every state slot passed (an inactive one may be any array of the dtype; it is not
touched) and the scalars of ``rules.<rule>_scalars`` computed on the host and cast to the
arrays' dtype; built with ``ema``, it then applies ``rules.ema`` to the EMA array.
"""

import functools

from .. import rules
from ..cpu.generic import define
from ._common import compile_kernel, kernel_factory, rule as compile_rule


@functools.cache
def compiled_rule(name):
    return compile_rule(getattr(rules, name))


def _literal(x):
    return "True" if x else "False"


@kernel_factory
def kernel(rule, active, flags, n_scalars, ema=False):
    """The kernel of one configuration: ``active`` per state slot, ``flags`` the (name, value)
    pairs in the rule's order, ``n_scalars`` how many scalars follow the arrays, ``ema``
    whether the weight EMA is fused in."""
    states = [f"s{j}" for j in range(len(active))]
    cs = [f"c{k}" for k in range(n_scalars)]
    es = ["ema_weight", "ema_rest", "ema_first"] if ema else []
    arrays = ["param", "grad", *states, *(["ema"] if ema else [])]
    values = "".join(f"{s}[i], " if on else "param[i], " for s, on in zip(states, active))
    source = "\n".join([
        f"def {rule}({', '.join(arrays + cs + es)}):",
        "    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):",
        f"        r = _rule(param[i], grad[i], {values}"
        f"{', '.join(cs + [_literal(v) for _, v in flags])})",
        "        param[i] = r[0]",
        *[f"        {s}[i] = r[{j + 1}]" for j, (s, on) in enumerate(zip(states, active)) if on],
        *(["        ema[i] = _ema(ema[i], r[0], ema_weight, ema_rest, ema_first)"] if ema else []),
    ]) + "\n"
    from numba import cuda

    fn = define(source, rule, {"_rule": compiled_rule(rule), "_ema": compiled_rule("ema"),
                               "cuda": cuda})
    return compile_kernel(fn)
