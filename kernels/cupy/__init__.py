"""CUDA C++ sources of the CuPy backend, and how to name their template instantiations.

Plain Python: nothing here imports CuPy, so the sources can be compiled and inspected (tests
run nvcc on them) on machines without a GPU. One ``.cu`` file per algorithm, each including
``common.cuh``. Each kernel is a template ``name<T, M, VEC, flags...>``: T the storage type,
M the math type, VEC the elements per vector load. The math of every kernel is the rule of the
same name in kernels/rules.py, written again in C++ (the one deliberate second copy; the GPU
tests hold it to the reference).
"""

import functools
import hashlib
import itertools
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))



def __getattr__(name):
    # FLAGS: {rule: template flag names in template-parameter order}, from the specs (each
    # spec's compile-time flags in its rule's order); computed on use, so this stays plain.
    if name == "FLAGS":
        from ..._specs import KERNEL_SPECS

        return {s.rule: s.flag_names for s in KERNEL_SPECS}
    # EMA: the kernels of the algorithms, each with a last template flag EMA and the weight
    # EMA's arguments last (common.cuh ema_update); the swaps have neither.
    if name == "EMA":
        from ..._specs import SPECS

        return frozenset(s.rule for s in SPECS.values())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# numpy dtype name -> (storage type, math type, elements per 16-byte vector load)
TYPES = {
    "float32": ("float", "float", 4),
    "float64": ("double", "double", 2),
}

# NVRTC options: C++17 for the generic lambda of the grid-stride loop. No fast-math flags.
OPTIONS = ("--std=c++17",)

_INCLUDE = re.compile(r'^#include "([^"]+)"$', re.MULTILINE)


@functools.cache
def source(name):
    """The source of ``name.cu`` with its local includes pasted in (for NVRTC, which then
    needs no include path, and for CuPy's cache, which keys on the code it is given)."""

    def read(filename):
        with open(os.path.join(HERE, filename)) as f:
            text = f.read()
        return _INCLUDE.sub(lambda m: read(m.group(1)).replace("#pragma once\n", ""), text)

    return read(f"{name}.cu")


def digest():
    """A digest of every source file (cache keys)."""
    h = hashlib.sha256()
    for filename in sorted(os.listdir(HERE)):
        if filename.endswith((".cu", ".cuh")):
            with open(os.path.join(HERE, filename), "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def _bool(x):
    return "true" if x else "false"


def name_expression(name, dtype, vec, flags, ema=False):
    """The instantiation to compile, e.g. ``adam<float, float, 4, false, false, true, true,
    false>``.

    ``flags`` maps every flag of ``FLAGS[name]`` to a bool; ``vec`` is 1 or ``TYPES[dtype][2]``;
    ``ema``: with the fused weight EMA (the last flag of the algorithms' kernels, see EMA).
    """
    storage, math, _ = TYPES[dtype]
    values = "".join(f", {_bool(flags[f])}" for f in __getattr__("FLAGS")[name])
    if name in __getattr__("EMA"):
        values += f", {_bool(ema)}"
    return f"{name}<{storage}, {math}, {vec}{values}>"


def roofline_expression(dtype, vec, n_state):
    return f"roofline<{TYPES[dtype][0]}, {vec}, {n_state}>"


def all_expressions(name, dtype):
    """Every instantiation the backend can request for one algorithm and dtype."""
    out = []
    for vec in (1, TYPES[dtype][2]):
        names = __getattr__("FLAGS")[name]
        for ema in (False, True) if name in __getattr__("EMA") else (False,):
            for values in itertools.product((False, True), repeat=len(names)):
                out.append(name_expression(name, dtype, vec, dict(zip(names, values)), ema))
    return out
