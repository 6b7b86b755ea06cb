"""Validation of device arrays and the GPU backend registry, without a GPU.

Device arrays are recognised by ``__cuda_array_interface__``; these tests use small objects that
publish one (pointers that are never dereferenced: every case here is rejected before a kernel
could run), so they run everywhere.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import fastopt
from fastopt import _backends, _device, _validate


class FakeDeviceArray:
    """Publishes a CUDA array interface and a device, as CuPy arrays and torch tensors do."""

    def __init__(self, n=8, typestr="<f4", ptr=1 << 20, readonly=False, strides=None,
                 shape=None, device=0):
        self.shape = (n,) if shape is None else shape
        self.dtype = np.dtype(typestr)
        self.device = SimpleNamespace(id=device)
        self._cai = {"shape": self.shape, "typestr": typestr, "data": (ptr, readonly),
                     "strides": strides, "version": 3}

    @property
    def __cuda_array_interface__(self):
        return self._cai


def four(n=8, **kw):
    """param, grad, exp_avg, exp_avg_sq at separate addresses 4 KiB apart."""
    return [FakeDeviceArray(n, ptr=(1 << 20) + k * 4096, **kw) for k in range(4)]


NAMES = ("param", "grad", "exp_avg", "exp_avg_sq")


def check(arrays):
    return _validate.arrays(NAMES, tuple(arrays))


def test_valid_device_arrays_pass_unchanged():
    arrays = four()
    assert list(check(arrays)) == arrays


@pytest.mark.parametrize("index, replacement, exc, match", [
    (1, FakeDeviceArray(typestr="<f8", ptr=1 << 24), TypeError,
     "Invalid grad: .* of dtype float64 .*expected float32"),
    (0, FakeDeviceArray(typestr="<i4"), TypeError, "Invalid param: .*typestr '<i4'"),
    (2, FakeDeviceArray(n=9, ptr=1 << 24), ValueError, r"Invalid exp_avg: shape \(9,\)"),
    (3, FakeDeviceArray(ptr=1 << 24, strides=(8,)), ValueError,
     r"Invalid exp_avg_sq: non-contiguous array with strides \(8,\)"),
    (2, FakeDeviceArray(ptr=1 << 24, readonly=True), ValueError,
     "Invalid exp_avg: read-only array"),
    (3, FakeDeviceArray(ptr=1 << 24, device=1), ValueError,
     r"Invalid exp_avg_sq: on cuda:1 \(expected cuda:0, the device of param\)"),
    (1, np.zeros(8, np.float32), TypeError,
     "Invalid grad: numpy.ndarray .*expected a CUDA array.*cannot be mixed"),
    (2, [0.0] * 8, TypeError, "Invalid exp_avg: builtins.list"),
])
def test_rejections(index, replacement, exc, match):
    arrays = four()
    arrays[index] = replacement
    with pytest.raises(exc, match=match):
        check(arrays)


def test_read_only_grad_is_fine():
    arrays = four()
    arrays[1] = FakeDeviceArray(ptr=1 << 24, readonly=True)
    check(arrays)


@pytest.mark.parametrize("offset, overlaps", [(0, True), (4, True), (31, True), (32, False)])
def test_overlap_by_pointer_range(offset, overlaps):
    # 8 float32 = 32 bytes from 1 MiB; exp_avg starts `offset` bytes later.
    arrays = four()
    arrays[2] = FakeDeviceArray(ptr=(1 << 20) + offset)
    if overlaps:
        with pytest.raises(ValueError, match="Invalid exp_avg: it overlaps param in device"):
            check(arrays)
    else:
        check(arrays)


def test_overlap_found_whatever_the_order_of_addresses():
    arrays = four()
    arrays[0] = FakeDeviceArray(ptr=(1 << 20) + 3 * 4096 + 16)  # inside exp_avg_sq
    with pytest.raises(ValueError, match="Invalid exp_avg_sq: it overlaps param"):
        check(arrays)


def test_empty_arrays_same_object_twice():
    arrays = four(0)
    check(arrays)  # size 0 arrays at any addresses share no memory
    arrays[3] = arrays[2]
    with pytest.raises(ValueError, match="Invalid exp_avg_sq: it overlaps exp_avg"):
        check(arrays)


def test_extent_one_axes_may_have_any_stride():
    assert _device.c_contiguous((3, 1, 4), (16, 999, 4), 4)
    assert not _device.c_contiguous((3, 4), (4, 12), 4)
    assert _device.c_contiguous((3, 4), None, 4)


def test_rejected_before_the_backend_is_consulted(monkeypatch):
    """A rejected device call never reaches a backend (nothing could have been written)."""
    monkeypatch.setattr(_backends, "get", lambda *a: pytest.fail("backend consulted"))
    arrays = four()
    arrays[1] = arrays[0]
    with pytest.raises(ValueError, match="Invalid grad: it overlaps param"):
        fastopt.adam_step(*arrays, step=1)


# ---------------------------------------------------------------------------------------------
# The registry: reasons, and dispatch by array type.


@pytest.fixture
def fresh_probes():
    """The cached probes start empty and are emptied again, so no patched answer outlives a test."""
    probes = (_backends._cupy_reason, _backends._numba_cuda_reason, _backends._driver_reason)
    for fn in probes:
        fn.cache_clear()
    yield
    for fn in probes:
        fn.cache_clear()


def test_reason_package_missing(monkeypatch, fresh_probes):
    real = _backends.importlib.util.find_spec
    monkeypatch.setattr(_backends.importlib.util, "find_spec",
                        lambda name: None if name in ("cupy", "numba_cuda") else real(name))
    avail = fastopt.available_backends()
    assert avail["cupy"] == "the cupy package is not installed (pip install 'fastopt[cuda]')"
    assert avail["numba-cuda"].startswith("the numba-cuda package is not installed")
    assert avail["numba"] is None and avail["numpy"] is None


def test_reason_no_driver(monkeypatch, fresh_probes):
    real = _backends.importlib.util.find_spec
    monkeypatch.setattr(_backends.importlib.util, "find_spec",
                        lambda name: object() if name in ("cupy", "numba_cuda") else real(name))
    monkeypatch.setattr(_backends, "simulator_enabled", lambda: False)

    def no_library(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(_backends.ctypes, "CDLL", no_library)
    avail = fastopt.available_backends()
    assert avail["cupy"] == "no NVIDIA driver found (libcuda.so.1 cannot be loaded)"
    assert avail["numba-cuda"] == "no NVIDIA driver found (libcuda.so.1 cannot be loaded)"


def test_reason_no_device(monkeypatch, fresh_probes):
    """A driver but no GPU: CuPy's runtime says cudaErrorNoDevice."""
    import sys

    class NoDevice(Exception):
        pass

    def count():
        raise NoDevice("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake_cupy = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(
        getDeviceCount=count)))
    real = _backends.importlib.util.find_spec
    monkeypatch.setattr(_backends.importlib.util, "find_spec",
                        lambda name: object() if name == "cupy" else real(name))
    monkeypatch.setattr(_backends, "_driver_reason", lambda: None)
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    reason = fastopt.available_backends()["cupy"]
    assert reason.startswith("no CUDA GPU found (cudaErrorNoDevice")


def test_simulator_counts_as_available(monkeypatch, fresh_probes):
    pytest.importorskip("numba_cuda")
    monkeypatch.setattr(_backends, "simulator_enabled", lambda: True)
    assert fastopt.available_backends()["numba-cuda"] is None


def test_unavailable_explicit_backend_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setattr(_backends, "available_backends",
                        lambda: {"numba": None, "numpy": None, "cupy": "no GPU here",
                                 "numba-cuda": "no GPU here"})
    monkeypatch.setattr(_backends, "_loaded", {})
    with pytest.raises(RuntimeError, match="backend 'cupy' is not available: no GPU here"):
        _backends.get("cupy", FakeDeviceArray())
    with pytest.raises(RuntimeError, match="backend 'numba-cuda' is not available"):
        _backends.get("auto", FakeDeviceArray())


@pytest.mark.parametrize("module, expected", [
    ("cupy._core.core", "cupy"),
    ("torch", "numba-cuda"),
    ("numba.cuda.cudadrv.devicearray", "numba-cuda"),
    ("numba.cuda.simulator.cudadrv.devicearray", "numba-cuda"),
])
def test_auto_picks_by_array_type(module, expected):
    cls = type("ndarray", (), {"__module__": module})
    assert _backends._auto(cls()) == expected
    assert _backends._auto(np.zeros(1)) == "numba"


def test_unknown_device_is_not_compared(monkeypatch):
    """Where an array's device cannot be told, it is not taken for a different one."""
    arrays = four()
    monkeypatch.setattr(_device, "device_id",
                        lambda a, cai: None if a is arrays[1] else a.device.id)
    check(arrays)
    arrays[3] = FakeDeviceArray(ptr=1 << 24, device=2)
    with pytest.raises(ValueError, match=r"Invalid exp_avg_sq: on cuda:2 \(expected cuda:0"):
        check(arrays)


def test_optimizer_classes_point_gpu_arrays_to_the_functional_api():
    with pytest.raises(TypeError, match="host arrays only: for GPU arrays call the functional"):
        fastopt.Adam([FakeDeviceArray()])
