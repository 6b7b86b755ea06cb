"""CUDA C++ sources of the CuPy backend, and how to name their template instantiations.

Plain Python: nothing here imports CuPy, so the sources can be compiled and inspected (tests
run nvcc on them) on machines without a GPU. One ``.cu`` file per algorithm, each including
``common.cuh``. Each algorithm's kernel is a template ``name<TP, TG, TS, TE, M, VEC, PMODE, SR,
flags..., EMA>``: the storage types of the parameter, the gradient, the states and the weight
EMA (float, double, or the 16-bit bf16 / f16 bit patterns), M the math type, VEC the elements
per vector load, PMODE and SR how a 16-bit parameter is stored (common.cuh ``Param``), then the
option flags. With 8-bit states TS is ``q8``: each state pointer is a descriptor (common.cuh
``Q8State``) and the kernel runs blockwise. The swaps and the roofline kernel take one storage type ``T`` (and M). The math of
every kernel is the rule of the same name in kernels/rules.py, written again in C++ (the one
deliberate second copy; the GPU tests hold it to the reference).
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

# A storage format (fastopt._storage.storage: "" the math dtype itself, "bf16", "f16") -> its C++
# type, given the math dtype.
def ctype(fmt, dtype):
    return {"bf16": "bf16", "f16": "f16"}.get(fmt) or TYPES[dtype][0]


# How a 16-bit parameter is stored (kernels/cpu/generic.py PARAM_MODES) -> the template's PMODE.
PMODES = {"": 0, "master": 1, "kahan": 2}

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


def name_expression(name, dtype, vec, flags, ema=False, storage=None, pmode=0, sr=False):
    """The instantiation to compile, e.g. ``adam<float, float, float, float, float, 4, 0, false,
    false, false, true, true, false>``.

    ``dtype``: the math dtype (float32 or float64); ``flags`` maps every flag of
    ``FLAGS[name]`` to a bool; ``vec`` is 1 or ``TYPES[dtype][2]``; ``ema``: with the fused
    weight EMA (the last flag of the algorithms' kernels, see EMA); ``storage``: the C++ types
    of (param, grad, states, EMA), by default all the dtype's; ``pmode`` (PMODES) and ``sr``:
    how a 16-bit parameter is stored. The swaps take the dtype only.
    """
    storage_t, math, _ = TYPES[dtype]
    values = "".join(f", {_bool(flags[f])}" for f in __getattr__("FLAGS").get(name, ()))
    if name not in __getattr__("EMA"):
        return f"{name}<{storage_t}, {math}, {vec}{values}>"
    types = ", ".join(storage or (storage_t,) * 4)
    return f"{name}<{types}, {math}, {vec}, {pmode}, {_bool(sr)}{values}, {_bool(ema)}>"


def roofline_expression(dtype, vec, n_state):
    return f"roofline<{TYPES[dtype][0]}, {vec}, {n_state}>"


def all_expressions(name, dtype):
    """Every instantiation the backend can request for one algorithm and dtype (all arrays of
    that dtype)."""
    out = []
    for vec in (1, TYPES[dtype][2]):
        names = __getattr__("FLAGS")[name]
        for ema in (False, True) if name in __getattr__("EMA") else (False,):
            for values in itertools.product((False, True), repeat=len(names)):
                out.append(name_expression(name, dtype, vec, dict(zip(names, values)), ema))
    return out


# Representative 16-bit configurations (param, grad, states, EMA types; PMODE; SR): every
# storage type in every role, each parameter store.
STORAGE_CASES = (
    (("bf16", "bf16", "bf16", "bf16"), 0, False),
    (("f16", "f16", "float", "f16"), 1, False),
    (("bf16", "bf16", "float", "float"), 2, False),
    (("bf16", "float", "bf16", "bf16"), 0, True),
    (("f16", "f16", "f16", "float"), 0, True),
)


# Representative 8-bit configurations (TS = q8: the states through their descriptors, one
# element per thread, blockwise; common.cuh): float32 arrays; a bf16 param with master weights;
# a bf16 param and f16 gradient with Kahan compensation and stochastic rounding.
Q8_CASES = (
    (("float", "float", "q8", "float"), 0, False),
    (("bf16", "bf16", "q8", "bf16"), 1, False),
    (("bf16", "f16", "q8", "float"), 2, True),
)


def q8_expressions(name):
    """Instantiations with 8-bit states for one algorithm: Q8_CASES with every flag off and
    every flag on, with the weight EMA (vector width 1: a q8 kernel reads one element per
    thread)."""
    names = __getattr__("FLAGS")[name]
    return [name_expression(name, "float32", 1, dict.fromkeys(names, on), True, storage,
                            pmode, sr)
            for storage, pmode, sr in Q8_CASES for on in (False, True)]


def storage_expressions(name):
    """Instantiations with 16-bit storage for one algorithm (float math): STORAGE_CASES, both
    vector widths, with every flag off and every flag on, with the weight EMA. The backend can
    request more (any storage type per role); these are the ones the nvcc test compiles."""
    out = []
    names = __getattr__("FLAGS")[name]
    for storage, pmode, sr in STORAGE_CASES:
        for vec in (1, TYPES["float32"][2]):
            for on in (False, True):
                out.append(name_expression(name, "float32", vec, dict.fromkeys(names, on), True,
                                           storage, pmode, sr))
    return out
