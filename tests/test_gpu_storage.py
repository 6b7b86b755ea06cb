"""16-bit storage on the GPU backends: bfloat16 / float16 arrays, master weights, compensation,
stochastic rounding, through the CuPy backend's C++ kernels (run on the CPU by
tests/cupy_emulator.py) and the numba-cuda kernels (under Numba's CUDA simulator).

The kernels widen every 16-bit value to float32, run the rule and round each store once, so a
16-bit step on the GPU equals the float32 step of the same backend on the widened values,
rounded: bit for bit. Stochastic rounding draws the bits the CPU kernels draw (one hash of
seed, step and element index), so it equals the NumPy rounding of that float32 step.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any, Callable

import numpy as np
import pytest

import fastopt
from algorithms import ALGORITHMS, Problem, case_id, cases
from fastopt import _backends, _storage
import cupy_emulator

ml_dtypes = pytest.importorskip("ml_dtypes")
# The simulator runs kernels.formats' hash in NumPy scalars, whose uint32 arithmetic wraps (as
# intended) with a warning.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
BF16 = ml_dtypes.bfloat16
FORMATS = {"bf16": BF16, "f16": np.float16}


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cupy-emulator"))


class Device:
    """A GPU backend under test: its name, and how arrays go to it and come back."""

    def __init__(self, backend: str, to_device: Callable[[np.ndarray], Any],
                 to_host: Callable[[Any], np.ndarray], size: int) -> None:
        self.backend, self.to_device, self.to_host, self.size = backend, to_device, to_host, size
        self.launches: list[Any] | None = None  # the emulator's record of its launches


@pytest.fixture(params=["cupy", "numba-cuda", pytest.param("cupy-gpu", marks=pytest.mark.gpu)])
def device(request, monkeypatch, build_dir):
    """The CuPy backend on the emulator, numba-cuda (on the simulator where there is no GPU),
    and the CuPy backend on a real GPU (where there is one)."""
    yield from _device(request.param, monkeypatch, build_dir)


@pytest.fixture(params=["cupy", pytest.param("cupy-gpu", marks=pytest.mark.gpu)])
def cupy_device(request, monkeypatch, build_dir):
    """The CuPy backend on the emulator and on a real GPU (where there is one)."""
    yield from _device(request.param, monkeypatch, build_dir)


def _device(kind, monkeypatch, build_dir):
    if kind == "cupy-gpu":
        reason = fastopt.available_backends()["cupy"]
        if reason is not None:
            pytest.skip(f"cupy backend unavailable: {reason}")
        import cupy

        yield Device("cupy", cupy.asarray, cupy.asnumpy, 2**16 + 3)
    elif kind == "cupy":
        if shutil.which(cupy_emulator.CXX) is None:
            pytest.skip(f"no host C++ compiler ({cupy_emulator.CXX})")
        fake = cupy_emulator.fake_cupy(build_dir)
        monkeypatch.setitem(sys.modules, "cupy", fake)
        sys.modules.pop("fastopt._cupy_backend", None)
        monkeypatch.setattr(_backends, "_cupy_reason", lambda: None)
        _backends._loaded.clear()
        # 1031 elements: the vector build's packs of 4 and a tail of 3.
        d = Device("cupy", lambda a: cupy_emulator.ndarray(a.copy()), lambda d: d.host.copy(),
                   1031)
        d.launches = fake.launches
        yield d
        sys.modules.pop("fastopt._cupy_backend", None)
        _backends._loaded.clear()
    else:
        pytest.importorskip("numba_cuda")
        reason = fastopt.available_backends()["numba-cuda"]
        if reason is not None:
            pytest.skip(f"numba-cuda backend unavailable: {reason}")
        from numba import cuda

        # Under the simulator every thread is a Python thread: a small array.
        yield Device("numba-cuda", cuda.to_device, lambda d: d.copy_to_host(), 37)


def _narrow(prob: Problem, param: Any, state: Any) -> Problem:
    """``prob`` with its param and states of the given dtypes (values rounded)."""
    out = prob.copy()
    out.param = prob.param.astype(param)
    out.state = {k: None if v is None else v.astype(state) for k, v in prob.state.items()}
    if prob.ema is not None:
        out.ema = prob.ema.astype(state)
    return out


def _widen(prob: Problem) -> Problem:
    out = prob.copy()
    out.param = prob.param.astype(np.float32)
    out.state = {k: None if v is None else v.astype(np.float32) for k, v in prob.state.items()}
    if prob.ema is not None:
        out.ema = prob.ema.astype(np.float32)
    return out


def _gpu_step(prob: Problem, grad: np.ndarray, t: int, dev: Device, **store: Any) -> None:
    """One step of ``prob``'s arrays on the device (the results copied back into them);
    ``store``: master / compensation (host arrays, copied likewise), rounding, seed."""
    on = {k: dev.to_device(v) for k, v in prob.arrays().items()}
    extra = {k: dev.to_device(v) if isinstance(v, np.ndarray) else v for k, v in store.items()}
    states = [None if v is None else on[k] for k, v in prob.state.items()]
    ema = {} if prob.ema is None else {"ema": on["ema"], "ema_decay": prob.ema_decay}
    prob.algo.step_fn(on["param"], dev.to_device(grad), *states, step=t, backend=dev.backend,
                      **prob.scalars, **prob.options, **ema, **extra)
    for k, a in prob.arrays().items():
        a[...] = dev.to_host(on[k]).reshape(a.shape)
    for k, v in store.items():
        if isinstance(v, np.ndarray):
            v[...] = dev.to_host(extra[k]).reshape(v.shape)


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16) if a.itemsize == 2 else a


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], where: str) -> None:
    for name, a in got.items():
        np.testing.assert_array_equal(_bits(a), _bits(want[name].astype(a.dtype)),
                                      err_msg=f"{name} {where}")


STORAGE = {  # param, grad, states (and the EMA)
    "bf16": (BF16, BF16, BF16),
    "f16-param-f32-state": (np.float16, np.float16, np.float32),
    "f32-param-bf16-state": (np.float32, BF16, BF16),
}


def _sweep() -> list[Any]:
    """(case, storage): by default every algorithm's last option set in bfloat16, Adam's in
    the other mixes (with a bfloat16 weight EMA for a float32 param); the rest slow."""
    out = []
    for case in cases():
        last = case[1] == case[0].option_sets[-1]
        for name in STORAGE:
            fast = last and (name == "bf16" or case[0].name == "adam")
            out.append(pytest.param(case, name, marks=() if fast else pytest.mark.slow,
                                    id=f"{case_id(case)}-{name}"))
    return out


@pytest.mark.parametrize("case,storage", _sweep())
def test_a_16bit_gpu_step_is_the_float32_gpu_step_rounded(device, case, storage):
    p16, g16, s16 = STORAGE[storage]
    algo, options = case
    if algo.name == "adam" and p16 == np.float32:
        # (with a 16-bit param the EMA follows its rounded value: not the wide step's)
        options = {**options, "ema_decay": 0.9}
    prob = Problem(algo, options, device.size, np.float32, seed=5)
    narrow = _narrow(prob, p16, s16)
    rng = np.random.default_rng(1)
    for t in range(1, 4):
        g = (rng.standard_normal(device.size) * 0.3).astype(g16)
        wide = _widen(narrow)
        with np.errstate(all="ignore"):
            _gpu_step(wide, g.astype(np.float32), t, device)
            _gpu_step(narrow, g, t, device)
        _assert_same(narrow.arrays(), wide.arrays(), f"at step {t}")
    assert not np.array_equal(narrow.param.astype(np.float32), prob.param)
    if device.launches is not None:
        types = {"bf16": "bf16, bf16, bf16", "f16-param-f32-state": "f16, f16, float",
                 "f32-param-bf16-state": "float, bf16, bf16"}[storage]
        assert any(e.startswith(f"{algo.spec.rule}<{types}, ") for e, _, _ in device.launches)


@pytest.mark.parametrize("fmt", ["bf16", "f16"])
@pytest.mark.parametrize("mode", ["master", "compensation", "stochastic"])
def test_param_stores_on_the_gpu(device, mode, fmt):
    # Master weights: the float32 step of the master, the param its rounding. Compensation:
    # the float32 step of param + comp, stored as the rounding and what it lost. Stochastic
    # rounding: the float32 step rounded with the CPU kernels' random bits.
    algo = next(a for a in ALGORITHMS if a.name == "adamw")
    prob = Problem(algo, algo.option_sets[-1], device.size, np.float32, seed=2)
    narrow = _narrow(prob, FORMATS[fmt], np.float32)
    master = prob.param.copy()
    comp = np.zeros(device.size, FORMATS[fmt])
    rng = np.random.default_rng(3)
    for t in range(1, 4):
        g = (rng.standard_normal(device.size) * 0.3).astype(FORMATS[fmt])
        wide = _widen(narrow)
        if mode == "master":
            wide.param[...] = master
            store: dict[str, Any] = {"master": master}
        elif mode == "compensation":
            wide.param[...] = narrow.param.astype(np.float32) + comp.astype(np.float32)
            store = {"compensation": comp}
        else:
            store = {"rounding": "stochastic", "seed": 11}
        _gpu_step(wide, g.astype(np.float32), t, device)
        _gpu_step(narrow, g, t, device, **store)
        want = wide.param.astype(FORMATS[fmt])
        if mode == "stochastic":
            want = np.empty_like(want)
            _storage.store_sr(want, wide.param, fmt, _storage.sr_key(11, t))
        np.testing.assert_array_equal(_bits(narrow.param), _bits(want), err_msg=f"step {t}")
        if mode == "master":
            np.testing.assert_array_equal(master, wide.param)
        if mode == "compensation":
            lost = (wide.param - want.astype(np.float32)).astype(FORMATS[fmt])
            np.testing.assert_array_equal(_bits(comp), _bits(lost))
        for name, s in narrow.state.items():
            if s is not None:
                np.testing.assert_array_equal(s, wide.state[name], err_msg=name)
    if mode == "stochastic":  # it rounded both ways: not the nearest rounding everywhere
        assert not np.array_equal(_bits(narrow.param), _bits(wide.param.astype(FORMATS[fmt])))


def test_16bit_arrays_misaligned_for_the_vector_build(device):
    if device.launches is None:
        pytest.skip("the emulated CuPy kernels' vector build")
    algo = next(a for a in ALGORITHMS if a.name == "adam")
    n = 301
    prob = _narrow(Problem(algo, algo.option_sets[-1], n, np.float32, seed=1), BF16, BF16)
    wide = _widen(prob)
    g = (np.random.default_rng(0).standard_normal(n) * 0.3).astype(BF16)

    def odd(a):  # one element into a buffer: 2-byte aligned, not 8
        buf = np.zeros(a.size + 1, a.dtype)
        buf[1:] = a
        return cupy_emulator.ndarray(buf[1:])

    device.to_device = odd
    _gpu_step(prob, g, 1, device)
    _gpu_step(wide, g.astype(np.float32), 1, device)
    _assert_same(prob.arrays(), wide.arrays(), "misaligned")
    assert device.launches[0][0].startswith("adam<bf16, bf16, bf16, bf16, float, 1, ")
    assert device.launches[1][0].startswith("adam<float, float, float, float, float, 1, ")


def _arrays(device: Device, param=BF16, grad=BF16, states=(np.float32, np.float32), n=16):
    host = [np.full(n, 0.5, param), np.full(n, 0.25, grad),
            *[np.zeros(n, s) for s in states]]
    return host, [device.to_device(a) for a in host]


BAD = [
    ("float64 grad", dict(grad=np.float64), {}, TypeError, "expected float32, bfloat16 or "),
    ("bf16 with float64", dict(param=np.float64), {}, TypeError, "expected float64"),
    ("master of a float32 param", dict(param=np.float32), dict(master=np.float32), TypeError,
     "expected a bfloat16 or float16 param"),
    ("bf16 master", {}, dict(master=BF16), TypeError, "Invalid master"),
    ("float32 compensation", {}, dict(compensation=np.float32), TypeError,
     "Invalid compensation"),
    ("stochastic without seed", {}, dict(rounding="stochastic", seed=-1), ValueError,
     "Invalid seed"),
]


@pytest.mark.parametrize("what,dtypes,store,error,message", BAD, ids=[b[0] for b in BAD])
def test_bad_16bit_gpu_calls_change_nothing(device, what, dtypes, store, error, message):
    host, dev = _arrays(device, **dtypes)
    kw = {k: device.to_device(np.zeros(16, v)) if k in ("master", "compensation") else v
          for k, v in store.items()}
    before = [device.to_host(a).copy() for a in dev]
    with pytest.raises(error, match=message):
        fastopt.adam_step(*dev, step=1, lr=0.1, backend=device.backend, **kw)
    for a, b in zip(dev, before):
        np.testing.assert_array_equal(_bits(device.to_host(a)), _bits(b))


def test_one_state_format_per_call_on_cupy(device):
    """The CuPy kernels take one storage type for all states: a mix is refused, unwritten
    (numba-cuda, generated per slot, takes it)."""
    host, dev = _arrays(device, states=(BF16, np.float32))
    if device.backend == "cupy":
        with pytest.raises(TypeError, match="one dtype for every state on the cupy backend"):
            fastopt.adam_step(*dev, step=1, lr=0.1, backend="cupy")
        np.testing.assert_array_equal(_bits(device.to_host(dev[0])), _bits(host[0]))
    else:
        fastopt.adam_step(*dev, step=1, lr=0.1, backend=device.backend)
        p = device.to_host(dev[0]).astype(np.float32)
        np.testing.assert_array_equal(p, np.full(16, 0.5 - 0.1, np.float32).astype(BF16))


@pytest.mark.parametrize("swap", ["ema_swap", "schedulefree_eval"])
@pytest.mark.parametrize("dtypes", [(BF16, BF16), (np.float16, np.float16),
                                    (np.float32, BF16)], ids=["bf16", "f16", "mixed"])
def test_the_swaps_refuse_16bit_device_arrays(device, swap, dtypes):
    host = [np.full(16, 1.0 + k, d) for k, d in enumerate(dtypes)]
    dev = [device.to_device(a) for a in host]
    kw = {"beta1": 0.9} if swap == "schedulefree_eval" else {}
    with pytest.raises(TypeError, match="the swaps take no 16-bit arrays yet"):
        getattr(fastopt, swap)(*dev, backend=device.backend, **kw)
    for a, h in zip(dev, host):
        np.testing.assert_array_equal(_bits(device.to_host(a)), _bits(h))


def test_the_roofline_moves_16bit_arrays(device):
    """benchmarks/gpu.py's same-traffic kernel on bfloat16 arrays (read as 16-bit integers:
    the bytes of a bf16 step, one integer add per element)."""
    mod = _backends.load(device.backend)
    host = [(np.arange(37) * (k + 1)).astype(np.uint16).view(BF16) for k in range(4)]
    dev = [device.to_device(a) for a in host]
    mod.roofline(dev[0], dev[1], dev[2:])
    g = host[1].view(np.uint16)
    for k, a in enumerate(dev):
        want = host[k].view(np.uint16) + (g if k != 1 else 0)
        np.testing.assert_array_equal(device.to_host(a).view(np.uint16), want)


# -- 8-bit states: the numba-cuda backend (one CUDA block per block of the state) -----------

# (the simulator runs 256 Python threads per CUDA block: few, small cases by default)
Q8_CASES = [pytest.param(("adam", "dynamic", 513), id="adam-dynamic-513"),
            pytest.param(("adam", "fp8", 1), id="adam-fp8-1"),
            pytest.param(("adamw", "fp8", 700), id="adamw-fp8-700", marks=pytest.mark.slow)]


@pytest.fixture
def simulated_numba_cuda():
    pytest.importorskip("numba_cuda")
    reason = fastopt.available_backends()["numba-cuda"]
    if reason is not None:
        pytest.skip(f"numba-cuda backend unavailable: {reason}")
    from numba import cuda

    return cuda


def _q8_run(name, fmt, n, backend, to_device, to_host, param=np.float32, steps=3):
    """``steps`` Adam-family steps with 8-bit states; the param, codes and absmax after."""
    rng = np.random.default_rng(4)
    p = rng.standard_normal(n).astype(param)
    m = fastopt.State8bit.zeros(p, signed=True, format=fmt).map(to_device)
    v = fastopt.State8bit.zeros(p, signed=False, format=fmt).map(to_device)
    p = to_device(p)
    step = getattr(fastopt, f"{name}_step")
    for t in range(1, steps + 1):
        g = to_device((rng.standard_normal(n) * 0.5).astype(param))
        step(p, g, m, v, step=t, lr=1e-2, backend=backend)
    return [to_host(a) for a in (p, m.codes, m.absmax, v.codes, v.absmax)]


@pytest.mark.parametrize("case", Q8_CASES)
def test_8bit_gpu_states_equal_the_cpu_kernels(simulated_numba_cuda, case):
    """The blockwise GPU kernel (block maxima in shared memory) gives the CPU kernel's
    parameter, codes and absmax bit for bit, tail block included."""
    cuda = simulated_numba_cuda
    name, fmt, n = case
    gpu = _q8_run(name, fmt, n, "numba-cuda", cuda.to_device, lambda a: a.copy_to_host())
    cpu = _q8_run(name, fmt, n, "numba", np.copy, np.copy)
    for what, a, b in zip(("param", "m.codes", "m.absmax", "v.codes", "v.absmax"), gpu, cpu):
        np.testing.assert_array_equal(a, b, err_msg=what)
    assert gpu[2].size == -(-n // 256)


@pytest.mark.slow
def test_8bit_gpu_states_with_a_bf16_param(simulated_numba_cuda):
    cuda = simulated_numba_cuda
    gpu = _q8_run("adam", "fp8", 300, "numba-cuda", cuda.to_device, lambda a: a.copy_to_host(),
                  BF16, 2)
    cpu = _q8_run("adam", "fp8", 300, "numba", np.copy, np.copy, BF16, 2)
    for a, b in zip(gpu, cpu):
        np.testing.assert_array_equal(_bits(a), _bits(b))


def _q8_device_args(cuda, n=300):
    p = cuda.to_device(np.ones(n, np.float32))
    g = cuda.to_device(np.ones(n, np.float32))
    m = fastopt.State8bit.zeros(np.ones(n), signed=True).map(cuda.to_device)
    v = fastopt.State8bit.zeros(np.ones(n), signed=False).map(cuda.to_device)
    return p, g, m, v


Q8_BAD = [
    ("host codes", lambda m, cuda: fastopt.State8bit(m.codes.copy_to_host(), m.absmax,
                                                     signed=True), TypeError,
     "exp_avg.codes: .*expected a device array of uint8"),
    ("short absmax", lambda m, cuda: fastopt.State8bit(
        m.codes, cuda.to_device(np.zeros(1, np.float32)), signed=True), ValueError,
     r"exp_avg.absmax: shape \(1,\) \(expected \(2,\)\)"),
    ("float16 absmax", lambda m, cuda: fastopt.State8bit(
        m.codes, cuda.to_device(np.zeros(2, np.float16)), signed=True), TypeError,
     "expected a device array of float32"),
    ("unsigned", lambda m, cuda: fastopt.State8bit(m.codes, m.absmax, signed=False),
     ValueError, "signed=False"),
]


@pytest.mark.parametrize("what,make,error,message", Q8_BAD, ids=[b[0] for b in Q8_BAD])
def test_bad_8bit_gpu_states_change_nothing(simulated_numba_cuda, what, make, error, message):
    cuda = simulated_numba_cuda
    p, g, m, v = _q8_device_args(cuda)
    with pytest.raises(error, match=message):
        fastopt.adam_step(p, g, make(m, cuda), v, step=1, lr=0.1, backend="numba-cuda")
    np.testing.assert_array_equal(p.copy_to_host(), np.ones(300, np.float32))
    np.testing.assert_array_equal(v.absmax.copy_to_host(), np.zeros(2, np.float32))


def test_8bit_codes_overlapping_the_param_are_refused(simulated_numba_cuda):
    cuda = simulated_numba_cuda
    p, g, m, v = _q8_device_args(cuda)
    raw = cuda.to_device(np.zeros(300, np.float32))
    alias = fastopt.State8bit(raw.view(np.uint8)[:300], m.absmax, signed=True)
    with pytest.raises(ValueError, match="overlaps"):
        fastopt.adam_step(raw, g, alias, v, step=1, lr=0.1, backend="numba-cuda")


# -- the C++ conversions themselves, on every 16-bit pattern and the float32 edge cases ------

_HARNESS = """
extern "C" void fastopt_conversions(const unsigned short* h, float* bf_in, float* f16_in,
                                    long long n16, const float* x, unsigned short* bf_out,
                                    unsigned short* f16_out, unsigned short* bf_sr,
                                    unsigned short* f16_sr, unsigned* bits, long long n32,
                                    unsigned key) {
    for (long long i = 0; i < n16; ++i) {
        bf_in[i] = get(bf16{h[i]});
        f16_in[i] = get(f16{h[i]});
    }
    for (long long i = 0; i < n32; ++i) {
        bf16 b; f16 f;
        put(b, x[i]); bf_out[i] = b.bits;
        put(f, x[i]); f16_out[i] = f.bits;
        bits[i] = random_bits(key, i);
        put_sr(b, x[i], bits[i]); bf_sr[i] = b.bits;
        put_sr(f, x[i], bits[i]); f16_sr[i] = f.bits;
    }
}
"""


def test_cuda_conversions_match_the_cpu_formats(tmp_path):
    """common.cuh's get/put/put_sr/random_bits, compiled for the host: every bfloat16 and
    float16 pattern widened as ml_dtypes/NumPy do; float32 values around every 16-bit value
    (ties, their neighbours), float32's edges and random patterns rounded to nearest even as
    they do, and stochastically as the CPU kernels do (the same hash bits)."""
    import ctypes
    import subprocess

    from fastopt.kernels import cupy as sources
    from test_storage import ALL16, _store_cases

    if shutil.which(cupy_emulator.CXX) is None:
        pytest.skip(f"no host C++ compiler ({cupy_emulator.CXX})")
    src, lib = tmp_path / "conv.cpp", tmp_path / "conv.so"
    src.write_text(cupy_emulator.PRELUDE + sources.source("adam") + _HARNESS)
    subprocess.run([cupy_emulator.CXX, *cupy_emulator.CXXFLAGS, "-o", str(lib), str(src)],
                   check=True, timeout=300)
    fn = ctypes.CDLL(str(lib)).fastopt_conversions
    x = _store_cases()
    n16, n32 = ALL16.size, x.size
    bf_in, f16_in = np.empty(n16, np.float32), np.empty(n16, np.float32)
    outs = [np.empty(n32, np.uint16) for _ in range(4)]
    bits = np.empty(n32, np.uint32)
    key = 0x1234ABCD
    ptr = [a.ctypes.data_as(ctypes.c_void_p) for a in (ALL16, bf_in, f16_in)]
    fn(*ptr, ctypes.c_longlong(n16), x.ctypes.data_as(ctypes.c_void_p),
       *[a.ctypes.data_as(ctypes.c_void_p) for a in (*outs, bits)], ctypes.c_longlong(n32),
       ctypes.c_uint(key))
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(bf_in.view(np.uint32),
                                      ALL16.view(BF16).astype(np.float32).view(np.uint32))
        np.testing.assert_array_equal(f16_in.view(np.uint32),
                                      ALL16.view(np.float16).astype(np.float32).view(np.uint32))
        np.testing.assert_array_equal(outs[0], x.astype(BF16).view(np.uint16))
        np.testing.assert_array_equal(outs[1], x.astype(np.float16).view(np.uint16))
    np.testing.assert_array_equal(bits, _storage.random_bits(key, np.arange(n32)))
    for out, fmt, dtype in ((outs[2], "bf16", BF16), (outs[3], "f16", np.float16)):
        want = np.empty(n32, dtype)
        _storage.store_sr(want, x, fmt, key)
        np.testing.assert_array_equal(out, want.view(np.uint16), err_msg=fmt)


def test_with_master_weights_the_16bit_param_is_only_written(device):
    """The master holds the value: what the bfloat16 param held (NaN here) is never read."""
    n = device.size
    master = np.linspace(-1, 1, n).astype(np.float32)
    p = device.to_device(np.full(n, np.nan, BF16))
    g = device.to_device(np.full(n, 0.5, BF16))
    m, v = (device.to_device(np.zeros(n, np.float32)) for _ in range(2))
    dm = device.to_device(master)
    fastopt.adam_step(p, g, m, v, step=1, lr=0.1, master=dm, backend=device.backend)
    got = device.to_host(dm)
    np.testing.assert_array_equal(got, master - np.float32(0.1))
    np.testing.assert_array_equal(_bits(device.to_host(p)), _bits(got.astype(BF16)))


def _q8_algorithms() -> list[Any]:
    """Every algorithm with a state that can be 8-bit: by default Schedule-Free AdamW (a
    state of parameter values kept float32 beside an 8-bit one, scalar states); the rest
    under -m slow (the simulator runs 256 Python threads per CUDA block)."""
    return [pytest.param(a, id=a.name, marks=() if a.name == "schedulefree_adamw"
                         else pytest.mark.slow)
            for a in ALGORITHMS if any(s.kind != "weights" for s in a.spec.states)]


def _q8_steps(algo, fmt: str, n: int, to_device, backend: str):
    """Three steps of ``algo``'s last option set with 8-bit states (format ``fmt``) on the
    CPU kernels and, from the same start, on ``backend``: (the CPU problem, the device param,
    the device states)."""
    from test_8bit import _quantized

    prob = Problem(algo, algo.option_sets[-1], n, np.float32, seed=4)
    cpu = _quantized(prob, fmt)
    gpu_state = {k: None if v is None else v.map(to_device)
                 if isinstance(v, fastopt.State8bit) else to_device(v)
                 for k, v in cpu.state.items()}
    gpu_param = to_device(cpu.param)
    for t in range(1, 4):
        g = prob.grad()
        with np.errstate(all="ignore"):
            cpu.step(g, t, "numba")
        algo.step_fn(gpu_param, to_device(g), *gpu_state.values(), step=t, backend=backend,
                     **prob.scalars, **prob.options)
    return cpu, gpu_param, gpu_state


@pytest.mark.parametrize("algo", _q8_algorithms())
def test_8bit_gpu_steps_of_every_algorithm_equal_the_cpu_kernels(simulated_numba_cuda, algo):
    cuda = simulated_numba_cuda
    cpu, gpu_param, gpu_state = _q8_steps(algo, "fp8", 300, cuda.to_device, "numba-cuda")
    # Under the simulator a rule's math.sqrt of a float32 returns a Python float (float64):
    # a few results one float32 rounding apart (on a GPU, as on the CPU, sqrtf). So: values
    # within float32 rounding, and a code off by at most one step in rare elements.
    np.testing.assert_allclose(gpu_param.copy_to_host(), cpu.param, rtol=1e-6, atol=1e-9)
    for name, s in cpu.state.items():
        d = gpu_state[name]
        if isinstance(s, fastopt.State8bit):
            codes = d.codes.copy_to_host()
            off = codes != s.codes
            assert off.mean() <= 0.02, (name, off.sum())
            np.testing.assert_array_less(np.abs(codes.astype(int) - s.codes)[off], 2)
            np.testing.assert_allclose(d.absmax.copy_to_host(), s.absmax, rtol=1e-6,
                                       err_msg=name)
        elif s is not None:
            np.testing.assert_allclose(d.copy_to_host(), s, rtol=1e-6, atol=1e-9,
                                       err_msg=name)


# -- 8-bit states: the CuPy backend (blockwise kernels, common.cuh; on the emulator a block's
# 256 threads run as host threads with a barrier for __syncthreads) ------------------------

def _cupy_q8_gpu_tolerance(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """On a real GPU NVRTC contracts a * b + c into FMAs: values within float32 rounding, an
    8-bit code at most one step away in rare elements (on the emulator: bit for bit)."""
    if got.dtype == np.uint8:
        off = got != want
        assert off.mean() <= 0.02, (what, off.sum())
        np.testing.assert_array_less(np.abs(got.astype(int) - want)[off], 2, err_msg=what)
    else:
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-5,
                                   atol=1e-7, err_msg=what)


def _compare_q8(device: Device, got: list[np.ndarray], want: list[np.ndarray],
                names: list[str]) -> None:
    for what, a, b in zip(names, got, want):
        if device.launches is None:  # a real GPU
            _cupy_q8_gpu_tolerance(a, b, what)
        else:
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=what)


# adam-dynamic-5000: 20 blocks of the state on the emulator's grid of 16 (grid-striding); -1:
# a single element (a block of one)
CUPY_Q8_CASES = [pytest.param(("adam", "dynamic", 5000), id="adam-dynamic-5000"),
                 pytest.param(("adamw", "fp8", 1031), id="adamw-fp8-1031"),
                 pytest.param(("adam", "fp8", 1), id="adam-fp8-1")]


@pytest.mark.parametrize("case", CUPY_Q8_CASES)
def test_8bit_cupy_states_equal_the_cpu_kernels(cupy_device, case):
    """The CuPy blockwise kernel gives the CPU kernel's parameter, codes and absmax bit for
    bit (tail blocks, grid-striding over blocks), one CUDA block of 256 threads per block."""
    name, fmt, n = case
    dev = cupy_device
    gpu = _q8_run(name, fmt, n, "cupy", dev.to_device, dev.to_host)
    cpu = _q8_run(name, fmt, n, "numba", np.copy, np.copy)
    _compare_q8(dev, gpu, cpu, ["param", "m.codes", "m.absmax", "v.codes", "v.absmax"])
    assert gpu[2].size == -(-n // 256)
    if dev.launches is not None:
        expression, grid, threads = dev.launches[-1]
        assert ", q8, " in expression and threads == 256
        assert grid == min(-(-n // 256), 16)  # the emulator's 2 SMs x 8 blocks


def _q8_cupy_algorithms():
    """Every algorithm with a state that can be 8-bit; by default four with other state
    shapes (three states; three with momentum and centering; a parameter-valued state kept
    at full precision; one state), the rest under -m slow."""
    fast = ("adam", "rmsprop", "schedulefree_adamw", "lion")
    return [pytest.param(a, id=a.name, marks=() if a.name in fast else pytest.mark.slow)
            for a in ALGORITHMS if any(s.kind != "weights" for s in a.spec.states)]


@pytest.mark.parametrize("fmt", ["fp8", "dynamic"])
@pytest.mark.parametrize("algo", _q8_cupy_algorithms())
def test_8bit_cupy_steps_of_every_algorithm_equal_the_cpu_kernels(cupy_device, algo, fmt):
    dev = cupy_device
    cpu, gpu_param, gpu_state = _q8_steps(algo, fmt, 700, dev.to_device, "cupy")
    got, want, names = [dev.to_host(gpu_param)], [cpu.param], ["param"]
    for name, s in cpu.state.items():
        d = gpu_state[name]
        if isinstance(s, fastopt.State8bit):
            got += [dev.to_host(d.codes), dev.to_host(d.absmax)]
            want += [s.codes, s.absmax]
            names += [f"{name}.codes", f"{name}.absmax"]
        elif s is not None:  # a parameter-valued state: float32
            got.append(dev.to_host(d))
            want.append(s)
            names.append(name)
    _compare_q8(dev, got, want, names)


def _q8_mixed(to_device, to_host, backend, store):
    """Adam on a bfloat16 param and gradient with a bfloat16 weight EMA, an 8-bit exp_avg
    and a bfloat16 exp_avg_sq (each state its own format in one call), and ``store`` (the
    16-bit parameter's store: stochastic rounding or master weights)."""
    rng = np.random.default_rng(7)
    n = 600
    p = rng.standard_normal(n).astype(BF16)
    m = fastopt.State8bit.zeros(p, signed=True, format="dynamic").map(to_device)
    v, ema = to_device(np.zeros(n, BF16)), to_device(p.copy())
    extra = {}
    if store == "master":
        extra["master"] = to_device(p.astype(np.float32))
    else:
        extra.update(rounding="stochastic", seed=11)
    p = to_device(p)
    for t in range(1, 4):
        g = to_device((rng.standard_normal(n) * 0.5).astype(BF16))
        fastopt.adam_step(p, g, m, v, step=t, lr=1e-2, weight_decay=0.1, ema=ema,
                          ema_decay=0.9, backend=backend, **extra)
    out = [to_host(a) for a in (p, m.codes, m.absmax, v, ema)]
    return out + ([to_host(extra["master"])] if store == "master" else [])


@pytest.mark.parametrize("store", ["stochastic", "master"])
def test_8bit_cupy_states_with_16bit_arrays(cupy_device, store):
    dev = cupy_device
    gpu = _q8_mixed(dev.to_device, dev.to_host, "cupy", store)
    cpu = _q8_mixed(np.copy, np.copy, "numba", store)
    names = ["param", "m.codes", "m.absmax", "v", "ema", "master"]
    _compare_q8(dev, [_bits(a) for a in gpu], [_bits(a) for a in cpu], names)


def test_bad_8bit_cupy_states_change_nothing(cupy_device):
    dev = cupy_device
    host = np.ones(300, np.float32)
    p, g = dev.to_device(host), dev.to_device(host)
    m = fastopt.State8bit.zeros(host, signed=True).map(dev.to_device)
    v = fastopt.State8bit.zeros(host, signed=False).map(dev.to_device)
    short = fastopt.State8bit(m.codes, dev.to_device(np.zeros(1, np.float32)), signed=True)
    with pytest.raises(ValueError, match=r"exp_avg.absmax: shape \(1,\) \(expected \(2,\)\)"):
        fastopt.adam_step(p, g, short, v, step=1, lr=0.1, backend="cupy")
    with pytest.raises(ValueError, match="signed=False"):
        fastopt.adam_step(p, g, v, v, step=1, lr=0.1, backend="cupy")
    np.testing.assert_array_equal(dev.to_host(p), host)
    np.testing.assert_array_equal(dev.to_host(v.absmax), np.zeros(2, np.float32))
    if dev.launches is not None:
        assert not dev.launches
