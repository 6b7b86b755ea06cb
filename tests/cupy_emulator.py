"""A stand-in for CuPy that runs the CuPy backend's CUDA C++ kernels on the CPU.

CI has no GPU, yet the CuPy backend's kernels are the one second copy of the optimizer math.
This module lets the real ``fastopt._cupy_backend`` run unchanged: ``fake_cupy()`` is a module
with the few names the backend uses (``ndarray``, ``RawModule``, ``cuda.Device``, ...).
``RawModule`` compiles the exact source text the backend hands to NVRTC with the host C++
compiler, after a prelude that defines ``__global__``, ``blockIdx`` and friends, and a launch
runs every (block, thread) of the grid in turn. So the kernels' math, their grid-stride loop,
the vector/scalar split and the backend's argument lists are all exercised against the
reference. Not exercised: anything specific to the GPU (NVRTC itself, memory model, FMA
contraction), which the nvcc test and ``pytest -m gpu`` cover.

Each launch also checks that the arguments have the C++ types of the kernel's signature (read
from the source): pointers for arrays, ``numpy.int64`` for ``n``, the math type for scalars.
CuPy packs a Python float as a double, so a scalar of the wrong type would be garbage on a GPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from types import ModuleType, SimpleNamespace

import numpy as np

from fastopt.kernels import cupy as sources

CXX = os.environ.get("CXX", "g++")
# C++20 for std::barrier (blockwise kernels); -O1, no -ffast-math, no FMA instructions unless
# the machine's default has them.
CXXFLAGS = ("-std=c++20", "-pthread", "-O1", "-fPIC", "-shared", "-ffp-contract=off")

PRELUDE = """
#include <math.h>
#include <cmath>
#include <barrier>
#include <thread>
#include <vector>
struct fastopt_dim3 { unsigned x, y, z; };
static thread_local fastopt_dim3 blockIdx, threadIdx;
static fastopt_dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
// A blockwise (q8) kernel runs each block's threads as host threads, one block at a time:
// __shared__ variables are then one static object, __syncthreads a barrier of the block.
#define __shared__ static
static std::barrier<>* fastopt_barrier = nullptr;
static inline void __syncthreads() { fastopt_barrier->arrive_and_wait(); }
#include <cstring>
static inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
// An array argument: converts to a pointer of whatever type the kernel's parameter has.
struct fastopt_ptr {
    void* p;
    template <typename T> operator T*() const { return static_cast<T*>(p); }
};
"""

_CTYPES = {"float": np.float32, "double": np.float64}


def _signature(code: str, name: str) -> tuple[list[str], list[str]]:
    """The template parameter names and the parameter declarations of kernel ``name``."""
    m = re.search(r"template <([^<>]*)>\s*__global__ void " + name + r"\((.*?)\)\s*\{", code,
                  re.S)
    assert m, f"kernel {name} not found"
    template = [" ".join(p.split()).split(" ")[-1] for p in m.group(1).split(",")]
    return template, [" ".join(p.split()) for p in m.group(2).split(",")]


def _parse(expression: str) -> tuple[str, list[str]]:
    name, args = expression.split("<", 1)
    return name, [a.strip() for a in args.rstrip(">").split(",")]


def _kind(declaration: str) -> str:
    """array, int64 (n, sr_offset), uint32 (sr_key) or scalar (of the math type)."""
    if "*" in declaration:
        return "array"
    if declaration.startswith("long long "):
        return "int64"
    if declaration.startswith("unsigned "):
        return "uint32"
    return "scalar"


_INTS = {"int64": np.int64, "uint32": np.uint32}


class _Library:
    """Instantiations of one kernel, built as one shared library: every one of a dtype with
    all arrays of that dtype, or one with 16-bit storage (their combinations are many)."""

    def __init__(self, code: str, name: str, expressions: list[str], build_dir: str) -> None:
        template, params = _signature(code, name)
        self.math_index = template.index("M") if "M" in template else template.index("T")
        self.kinds = [_kind(p) for p in params]
        wrappers = []
        for k, e in enumerate(expressions):
            call = []
            counts = {"array": 0, "scalar": 0, "int": 0}
            for kind in self.kinds:
                if kind == "array":
                    call.append(f"fastopt_ptr{{a[{counts['array']}]}}")
                    counts["array"] += 1
                elif kind == "scalar":
                    math = _parse(e)[1][self.math_index]
                    call.append(f"({math})s[{counts['scalar']}]")
                    counts["scalar"] += 1
                else:
                    ctype = "long long" if kind == "int64" else "unsigned"
                    call.append(f"({ctype})ints[{counts['int']}]")
                    counts["int"] += 1
            head = (f'extern "C" void fastopt_run_{k}(void** a, const double* s, '
                    f"const long long* ints, unsigned blocks, unsigned threads) {{\n"
                    f"  gridDim.x = blocks; blockDim.x = threads;\n")
            run = f"{e}({', '.join(call)});"
            if "q8" in _parse(e)[1]:  # blockwise: a block's threads at once, with a barrier
                wrappers.append(
                    head + "  for (unsigned b = 0; b < blocks; ++b) {\n"
                    "    std::barrier<> bar(threads); fastopt_barrier = &bar;\n"
                    "    std::vector<std::thread> ts;\n"
                    "    for (unsigned t = 0; t < threads; ++t) ts.emplace_back([&, b, t] {\n"
                    f"      blockIdx.x = b; threadIdx.x = t; {run}\n    }});\n"
                    "    for (auto& x : ts) x.join();\n  }\n}")
            else:
                wrappers.append(
                    head + "  for (unsigned b = 0; b < blocks; ++b) for (unsigned t = 0; "
                    f"t < threads; ++t) {{\n    blockIdx.x = b; threadIdx.x = t;\n    {run}\n"
                    "  }\n}")
        unit = PRELUDE + code + "\n" + "\n".join(wrappers) + "\n"
        key = hashlib.sha256(unit.encode()).hexdigest()[:16]
        lib = os.path.join(build_dir, f"{name}-{key}.so")
        if not os.path.exists(lib):
            src = os.path.join(build_dir, f"{name}-{key}.cpp")
            with open(src, "w") as f:
                f.write(unit)
            done = subprocess.run([CXX, *CXXFLAGS, "-o", lib + ".tmp", src],
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr[-4000:]
            os.replace(lib + ".tmp", lib)
        self.dll = ctypes.CDLL(lib)
        self.index = {e: k for k, e in enumerate(expressions)}
        self.launches: list[tuple[str, int, int]] = []

    def function(self, expression: str):
        k = self.index[expression]
        fn = getattr(self.dll, f"fastopt_run_{k}")
        fn.restype = None
        math_t = _CTYPES.get(_parse(expression)[1][self.math_index])
        kinds = self.kinds

        def launch(grid, block, args):
            assert len(args) == len(kinds), (expression, len(args), len(kinds))
            arrays, scalars, ints = [], [], []
            for kind, a in zip(kinds, args):
                if kind == "array":
                    assert isinstance(a, ndarray), (expression, type(a))
                    arrays.append(a.data.ptr)
                elif kind == "scalar":
                    assert type(a) is math_t, (expression, "scalar", type(a), math_t)
                    scalars.append(float(a))
                else:
                    assert type(a) is _INTS[kind], (expression, kind, type(a))
                    ints.append(int(a))
            self.launches.append((expression, grid[0], block[0]))
            fn((ctypes.c_void_p * len(arrays))(*arrays),
               (ctypes.c_double * max(1, len(scalars)))(*scalars),
               (ctypes.c_longlong * len(ints))(*ints),
               ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]))

        return launch


class ndarray:  # noqa: N801 - CuPy's name
    """Host memory posing as a CuPy array on device 0."""

    __module__ = "cupy._emulated"

    def __init__(self, host: np.ndarray) -> None:
        self.host = host
        self.shape, self.dtype, self.size = host.shape, host.dtype, host.size
        self.data = SimpleNamespace(ptr=host.ctypes.data, device_id=0)
        self.device = SimpleNamespace(id=0)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "strides": None,
                "data": (self.host.ctypes.data, False), "version": 3}

    def __getitem__(self, key):
        return ndarray(self.host[key])


def fake_cupy(build_dir: str | None = None, sm_count: int = 2) -> ModuleType:
    """A module to put in ``sys.modules["cupy"]`` before importing fastopt._cupy_backend."""
    build_dir = build_dir or tempfile.mkdtemp(prefix="fastopt-cupy-emulator-")
    libraries: dict[tuple[str, str], _Library] = {}
    mod = ModuleType("cupy")
    mod.ndarray = ndarray
    mod.launches = []

    class RawModule:
        def __init__(self, code, options, name_expressions):
            assert options == sources.OPTIONS
            self.code = code
            self.expressions = list(name_expressions)

        def get_function(self, expression):
            assert expression in self.expressions
            name, targs = _parse(expression)
            if name == "roofline" and targs[0] in ("float", "double"):
                dtype = {"float": "float32", "double": "float64"}[targs[0]]
                key = (name, dtype)
                every = [sources.roofline_expression(dtype, v, s)
                         for v in (1, sources.TYPES[dtype][2]) for s in range(4)]
            else:
                dtype = {"float": "float32", "double": "float64"}.get(targs[0])
                every = [] if dtype is None else sources.all_expressions(name, dtype)
                key = (name, dtype) if expression in every else (name, expression)
                every = every if expression in every else [expression]
            if key not in libraries:
                libraries[key] = _Library(self.code, name, every, build_dir)
            lib = libraries[key]
            launch = lib.function(expression)

            def recorded(grid, block, args):
                mod.launches.append((expression, grid[0], block[0]))
                launch(grid, block, args)

            return recorded

    class Device:
        def __init__(self, device=0):
            assert device == 0
            self.attributes = {"MultiProcessorCount": sm_count}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    mod.RawModule = RawModule
    mod.cuda = SimpleNamespace(
        Device=Device, runtime=SimpleNamespace(getDevice=lambda: 0),
        get_current_stream=lambda: SimpleNamespace(synchronize=lambda: None))
    mod.asarray = lambda a: a if isinstance(a, ndarray) else ndarray(np.array(a, order="C"))
    mod.asnumpy = lambda a: a.host.copy()
    return mod
