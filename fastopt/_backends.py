"""Backend registry: which backends exist, which can run here, and which one a call uses."""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

import numpy as np

from . import _device

# name -> module implementing the six algorithms over validated arrays.
_MODULES = {
    "numba": "fastopt._numba_backend",
    "numpy": "fastopt._numpy_backend",
    "cupy": "fastopt._cupy_backend",
    "numba-cuda": "fastopt._cuda_backend",
}
CPU_BACKENDS = ("numba", "numpy")
GPU_BACKENDS = ("cupy", "numba-cuda")
ALL_BACKENDS = (*CPU_BACKENDS, *GPU_BACKENDS)

_INSTALL = "pip install 'fastopt[cuda]'"

# backend name -> module, for NumPy arrays; (backend, type of param) -> module, for the rest.
_host_loaded: dict[str, ModuleType] = {}
_loaded: dict[tuple[str, type], ModuleType] = {}


def simulator_enabled() -> bool:
    """Whether numba.cuda is (or will be) Numba's CUDA simulator in this process."""
    numba = sys.modules.get("numba")
    config = getattr(numba, "config", None)
    if config is not None and hasattr(config, "ENABLE_CUDASIM"):
        return bool(config.ENABLE_CUDASIM)
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@functools.cache
def _driver_reason() -> str | None:
    """None when the NVIDIA driver library loads, else why not."""
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        ctypes.CDLL(name)
    except OSError:
        return f"no NVIDIA driver found ({name} cannot be loaded)"
    return None


@functools.cache
def _cupy_reason() -> str | None:
    if importlib.util.find_spec("cupy") is None:
        return f"the cupy package is not installed ({_INSTALL})"
    driver = _driver_reason()
    if driver is not None:
        return driver
    try:
        import cupy

        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:  # CUDARuntimeError, or CUDA libraries CuPy cannot find
        text = str(e)
        if "NoDevice" in text:
            return f"no CUDA GPU found ({text})"
        return f"CuPy cannot use CUDA: {type(e).__name__}: {text}"
    if count == 0:
        return "no CUDA GPU found"
    return None


@functools.cache
def _numba_cuda_reason() -> str | None:
    if importlib.util.find_spec("numba_cuda") is None:
        return f"the numba-cuda package is not installed ({_INSTALL})"
    if simulator_enabled():
        return None
    driver = _driver_reason()
    if driver is not None:
        return driver
    try:
        from numba import cuda

        count = len(cuda.gpus)
    except Exception as e:  # CudaSupportError and friends
        text = " ".join(str(e).split())
        if "NO_DEVICE" in text or "no CUDA-capable device" in text:
            return f"no CUDA GPU found ({text})"
        return f"numba-cuda cannot use CUDA: {text}"
    if count == 0:
        return "no CUDA GPU found"
    return None


def available_backends() -> dict[str, str | None]:
    """Every backend name mapped to None when it can run here, or to the reason it cannot.

    GPU backends are probed once per process (this imports CuPy / numba.cuda, only here).
    Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) numba-cuda counts as available.

    >>> fastopt.available_backends()["numba"] is None
    True
    """
    out: dict[str, str | None] = {}
    out["numba"] = (None if importlib.util.find_spec("numba") is not None
                    else "the numba package is not installed (pip install numba)")
    out["numpy"] = None
    out["cupy"] = _cupy_reason()
    out["numba-cuda"] = _numba_cuda_reason()
    return out


def _auto(param: Any) -> str:
    if isinstance(param, np.ndarray):  # np.memmap included
        return "numba"
    return "cupy" if _device.is_cupy(param) else "numba-cuda"


def get(backend: str, param: Any) -> ModuleType:
    """The backend module for an explicit name or for ``"auto"`` (chosen by array type).

    ``param`` has been validated: a NumPy array, or a device array of the GPU path.
    """
    host = type(param) is np.ndarray or isinstance(param, np.ndarray)
    if host:  # the hot path: one lookup by name, as fast as before the GPU backends
        mod = _host_loaded.get(backend)
        if mod is not None:
            return mod
    key = (backend, type(param))
    mod = _loaded.get(key)
    if mod is not None:
        return mod
    name = _auto(param) if backend == "auto" else backend
    if name not in ALL_BACKENDS:
        raise ValueError(f"Invalid backend: {backend!r} (expected 'auto' or one of "
                         f"{', '.join(repr(b) for b in ALL_BACKENDS)})")
    if host and name in GPU_BACKENDS:
        raise TypeError(f"Invalid backend: {backend!r} for NumPy arrays (a GPU backend updates "
                        f"device arrays in place; pass CuPy, Numba or torch CUDA arrays, or "
                        f"use backend='numba')")
    if not host and name in CPU_BACKENDS:
        raise TypeError(f"Invalid backend: {backend!r} for device arrays (param is a "
                        f"{type(param).__module__}.{type(param).__qualname__}; use "
                        f"backend='auto', 'cupy' or 'numba-cuda')")
    if name == "cupy" and _device.is_simulated(param):
        raise TypeError("Invalid backend: 'cupy' for arrays of Numba's CUDA simulator "
                        "(they hold no device memory; use backend='numba-cuda')")
    reason = available_backends()[name]
    if reason is not None:
        raise RuntimeError(f"backend {name!r} is not available: {reason}")
    mod = load(name)
    if host:
        _host_loaded[backend] = mod
    else:
        _loaded[key] = mod
    return mod


def load(name: str) -> ModuleType:
    """The module of an available backend, by name."""
    return importlib.import_module(_MODULES[name])
