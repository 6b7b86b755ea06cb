"""16-bit storage formats (bfloat16, float16): conversions, kernels, reference, validation."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import pytest

import fastopt
from algorithms import ALGORITHMS, Problem, case_id, cases
from fastopt import _storage
from fastopt.kernels import formats

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = ml_dtypes.bfloat16
ALL16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


def _elementwise(fn):
    f = numba.njit(inline="always")(fn)

    @numba.njit
    def run(a, out):
        for i in range(a.size):
            out[i] = f(a[i])

    return run


BF16_LOAD, F16_LOAD = _elementwise(formats.bf16_load), _elementwise(formats.f16_load)
BF16_STORE, F16_STORE = _elementwise(formats.bf16_store), _elementwise(formats.f16_store)


def _store_cases() -> np.ndarray:
    """float32 bit patterns around every 16-bit value: the value itself, the halfway points to
    its neighbours (ties), one float32 ulp either side of them, and float32's own edges."""
    hi = ALL16.astype(np.uint32) << 16  # every bfloat16 value as float32 bits
    bf = np.concatenate([hi + d for d in (0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF)])
    with np.errstate(all="ignore"):
        h = ALL16.view(np.float16).astype(np.float32).view(np.uint32)
    h = h[(h & 0x7F800000) != 0x7F800000]  # the finite float16 values
    f16 = np.concatenate([h + d for d in (0, 1, 0xFFF, 0x1000, 0x1001, 0x1FFF)]
                         + [h - d for d in (1, 0xFFF, 0x1000, 0x1001)])
    edges = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0xFF7FFFFF, 1,
                      0x80000001, 0x007FFFFF, 0x00800000, 0x7F800001, 0xFF800001, 0x7FC00000,
                      0x7FFFFFFF, 0xFFFFFFFF, 0x7FA00000, 0x477FE000, 0x477FF000, 0x477FEFFF,
                      0x38800000, 0x387FFFFF, 0x33800000, 0x33000000, 0x33000001, 0x32FFFFFF],
                     np.uint32)
    rng = np.random.default_rng(0)
    return np.concatenate([bf, f16, edges, rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64)
                           .astype(np.uint32)]).view(np.float32)


def test_loads_of_every_16bit_pattern_are_exact():
    out = np.empty(1 << 16, np.float32)
    BF16_LOAD(ALL16, out)
    np.testing.assert_array_equal(out.view(np.uint32),
                                  ALL16.view(BF16).astype(np.float32).view(np.uint32))
    F16_LOAD(ALL16, out)
    with np.errstate(invalid="ignore"):
        expected = ALL16.view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(out.view(np.uint32), expected.view(np.uint32))


def test_stores_round_to_nearest_even_bit_for_bit():
    x = _store_cases()
    out = np.empty(x.size, np.uint16)
    BF16_STORE(x, out)
    np.testing.assert_array_equal(out, x.astype(BF16).view(np.uint16))
    F16_STORE(x, out)
    with np.errstate(invalid="ignore", over="ignore"):
        np.testing.assert_array_equal(out, x.astype(np.float16).view(np.uint16))
    # The NumPy-side rounding of the reference backend: the same bits.
    a = np.empty(x.size, BF16)
    _storage.store(a, x, "bf16")
    np.testing.assert_array_equal(a.view(np.uint16), x.astype(BF16).view(np.uint16))


@pytest.mark.slow
def test_stores_of_every_float32_pattern():
    out, chunk = np.empty(1 << 26, np.uint16), np.arange(1 << 26, dtype=np.uint32)
    for k in range(64):
        x = (chunk + np.uint32(k << 26)).view(np.float32)
        BF16_STORE(x, out)
        np.testing.assert_array_equal(out, x.astype(BF16).view(np.uint16))
        F16_STORE(x, out)
        with np.errstate(invalid="ignore", over="ignore"):
            np.testing.assert_array_equal(out, x.astype(np.float16).view(np.uint16))


def test_the_integer_float16_path_runs_on_a_generic_cpu():
    # No F16C and no half type in the conversions: compiled for a CPU without them, they run.
    code = (
        "import numpy as np, numba\n"
        "from fastopt.kernels import formats\n"
        "ld, st = numba.njit(formats.f16_load), numba.njit(formats.f16_store)\n"
        "x = np.array([1.0, 65504.0, 1e-7, -2.5, 70000.0], np.float32)\n"
        "h = np.array([st(v) for v in x], np.uint16)\n"
        "assert (h == x.astype(np.float16).view(np.uint16)).all(), h\n"
        "assert np.array_equal(np.array([ld(v) for v in h], np.float32),"
        " h.view(np.float16).astype(np.float32))\n")
    import os
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_CPU_NAME="generic", NUMBA_CACHE_DIR=os.devnull)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# Kernels: a 16-bit update is the float32 update of the widened values, rounded once.

FORMAT_SETS = {
    "bf16": dict(param=BF16, grad=BF16, state=BF16),
    "f16": dict(param=np.float16, grad=np.float16, state=np.float16),
    "bf16-param-f32-state": dict(param=BF16, grad=BF16, state=np.float32),
    "f32-param-bf16-state": dict(param=np.float32, grad=np.float32, state=BF16),
    "f32-param-f16-grad": dict(param=np.float32, grad=np.float16, state=np.float32),
}


def _make(case, fmt, size, seed=0):
    algo, options = case
    prob = Problem(algo, options, size, np.float32, seed=seed)
    grads = [prob.grad() * np.float32(0.3) for _ in range(3)]
    prob.param[...] = prob.param.astype(fmt["param"]).astype(np.float32)
    for s in prob.state.values():
        if s is not None:
            s[...] = s.astype(fmt["state"]).astype(np.float32)
    narrow = prob.copy()
    narrow.param = prob.param.astype(fmt["param"])
    narrow.state = {k: None if v is None else v.astype(fmt["state"])
                    for k, v in prob.state.items()}
    grads = [g.astype(fmt["grad"]) for g in grads]
    return prob, narrow, grads


def _round(a, dtype):
    return a.astype(dtype).astype(np.float32) if dtype != np.float32 else a


def _sweep() -> list[Any]:
    """(case, size, formats): in the default run every algorithm's last option set in
    bfloat16, Adam's in every format mix, and in the parallel build in bfloat16; the rest is
    slow."""
    out = []
    for case in cases():
        algo, options = case
        for name in FORMAT_SETS:
            for size in (1031, 2**14 + 5):
                fast = options == algo.option_sets[-1] and (
                    (name == "bf16" and size == 1031)
                    or (algo.name == "adam" and (size == 1031 or name == "bf16")))
                out.append(pytest.param(case, size, name, marks=() if fast else pytest.mark.slow,
                                        id=f"{case_id(case)}-{name}-{size}"))
    return out


@pytest.mark.parametrize("case,size,fmt_name", _sweep())
def test_a_16bit_step_is_the_float32_step_rounded(case, size, fmt_name):
    # Step by step: the float32 kernel on the widened values, then every written array rounded
    # to its format, equals the 16-bit kernel bit for bit (the same element math, one rounding).
    fmt = FORMAT_SETS[fmt_name]
    wide, narrow, grads = _make(case, fmt, size)
    for t, g in enumerate(grads, 1):
        with np.errstate(all="ignore"):
            wide.step(g.astype(np.float32), t, "numba")
            narrow.step(g, t, "numba")
        wide.param[...] = _round(wide.param, fmt["param"])
        for s in wide.state.values():
            if s is not None:
                s[...] = _round(s, fmt["state"])
        for name, a in narrow.arrays().items():
            np.testing.assert_array_equal(a.astype(np.float32), wide.arrays()[name],
                                          err_msg=f"{name} at step {t}")


def _reference_sweep() -> list[Any]:
    """(case, formats) for the reference comparison: in the default run every algorithm's
    last option set in bfloat16, and three of them with float32 params and bfloat16 states;
    the rest under -m slow."""
    out = []
    for c in cases():
        last = c[1] == c[0].option_sets[-1]
        for name in ("bf16", "f32-param-bf16-state", "f16", "bf16-param-f32-state"):
            fast = last and (name == "bf16" or (name == "f32-param-bf16-state"
                                                and c[0].name in ("adam", "rmsprop", "nadam")))
            out.append(pytest.param(c, name, marks=() if fast else pytest.mark.slow,
                                    id=f"{case_id(c)}-{name}"))
    return out


@pytest.mark.parametrize("case,fmt_name", _reference_sweep())
def test_16bit_kernels_match_the_reference(case, fmt_name):
    # The reference backend widens, runs its float32 math and rounds: equal to the kernel
    # within one 16-bit rounding (the two float32 computations agree to float32 rounding).
    fmt = FORMAT_SETS[fmt_name]
    _, fast, grads = _make(case, fmt, 517, seed=2)
    ref = fast.copy()
    ref.param = fast.param.copy()
    for t, g in enumerate(grads, 1):
        with np.errstate(all="ignore"):
            fast.step(g, t, "numba")
            ref.step(g, t, "numpy")
    for name, a in fast.arrays().items():
        b = ref.arrays()[name]
        assert a.dtype == b.dtype
        x, y = a.astype(np.float64), b.astype(np.float64)
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
        ok = ~np.isnan(x)
        ulp = 2.0 ** (-7 if a.dtype == BF16 else -10 if a.dtype == np.float16 else -20)
        np.testing.assert_allclose(x[ok], y[ok], rtol=4 * ulp, atol=1e-6, err_msg=name)


def test_bf16_adam_with_the_ema_and_torch_tensors():
    torch = pytest.importorskip("torch")
    n = 4099
    rng = np.random.default_rng(3)
    p32 = rng.standard_normal(n).astype(np.float32)
    p = torch.from_numpy(p32).to(torch.bfloat16)
    g = torch.from_numpy(rng.standard_normal(n).astype(np.float32)).to(torch.bfloat16)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    ema = torch.zeros(n, dtype=torch.float32)
    ref = [t.clone() for t in (p, m, v)]
    version = p._version
    fastopt.adam_step(p, g, m, v, step=1, lr=1e-2, ema=ema, ema_decay=0.9)
    assert p._version > version  # written behind autograd's back: marked
    # torch's fused CPU Adam on bf16 parameters (states in the parameter's dtype).
    q = torch.nn.Parameter(ref[0])
    q.grad = g.clone()
    opt = torch.optim.Adam([q], lr=1e-2, fused=True)
    opt.step()
    diff = (p.float() - q.detach().float()).abs()
    ulp = q.detach().float().abs() * 2.0**-7
    assert bool((diff <= ulp).all()), float((diff / ulp.clamp_min(1e-30)).max())
    np.testing.assert_array_equal(ema.numpy(), p.float().numpy())  # the first EMA copies


def test_mixed_formats_share_one_dense_layout():
    # Strides are compared in elements: a Fortran-order bfloat16 parameter with Fortran-order
    # float32 states is one layout (the C-order result); a C-order state is not.
    rng = np.random.default_rng(5)
    shape = (33, 17)
    p = rng.standard_normal(shape).astype(BF16)
    g = rng.standard_normal(shape).astype(BF16)
    arrays = [p, g, np.zeros(shape, np.float32), np.full(shape, 0.5, np.float32)]
    fortran = [np.asfortranarray(a) for a in arrays]
    for a in (arrays, fortran):
        fastopt.adam_step(*a, step=2, lr=1e-2)
    for a, f in zip(arrays, fortran):
        np.testing.assert_array_equal(a.astype(np.float32), f.astype(np.float32))
    with pytest.raises(ValueError, match="Invalid exp_avg: strides"):
        fastopt.adam_step(fortran[0], fortran[1], arrays[2], fortran[3], step=3)


BAD = [
    (dict(param=np.float64, grad=BF16), TypeError,
     "Invalid grad: array of dtype bfloat16 (expected float64"),
    (dict(param=BF16, grad=np.float64), TypeError,
     "Invalid grad: array of dtype float64 (expected float32, bfloat16 or float16 with param "
     "of dtype bfloat16)"),
    (dict(param=np.uint16, grad=np.float32), TypeError,
     "Invalid param: numpy.ndarray of dtype uint16 (expected a numpy.ndarray of float32, "
     "float64, bfloat16 or float16"),
    (dict(param=np.float32, grad=np.float32, state=np.int16), TypeError,
     "Invalid exp_avg: array of dtype int16 (expected float32, bfloat16 or float16"),
]


@pytest.mark.parametrize("dtypes,error,message", BAD)
def test_bad_16bit_combinations_are_rejected_before_writing(dtypes, error, message):
    n = 8
    p = np.ones(n, dtypes["param"])
    g = np.ones(n, dtypes["grad"])
    m = np.zeros(n, dtypes.get("state", np.float32))
    v = np.zeros(n, np.float32)
    before = [a.tobytes() for a in (p, m, v)]
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        fastopt.adam_step(p, g, m, v, step=1)
    assert [a.tobytes() for a in (p, m, v)] == before


def test_the_swaps_refuse_16bit_arrays_for_now():
    # The Schedule-Free switch and the EMA swap have no 16-bit path yet: refused, unchanged
    # (they once ran their float math on the raw bit patterns).
    p, z = np.ones(4, BF16), np.full(4, 3.0, BF16)
    for call in (lambda: fastopt.schedulefree_eval(p, z, beta1=0.9),
                 lambda: fastopt.ema_swap(np.ones(4, np.float32), z),
                 lambda: fastopt.ema_swap(np.ones(4, np.float32), np.ones(4, np.float16))):
        with pytest.raises(TypeError, match="the swaps take no 16-bit arrays yet"):
            call()
    np.testing.assert_array_equal(p.astype(np.float32), 1.0)
    np.testing.assert_array_equal(z.astype(np.float32), 3.0)


def test_plain_uint16_is_not_taken_for_bfloat16():
    # A torch bfloat16 tensor travels as marked uint16 bits; NumPy's dtype equality ignores
    # the mark, so an unmarked uint16 array next to it must still be refused.
    torch = pytest.importorskip("torch")
    p = torch.ones(4, dtype=torch.bfloat16)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    with pytest.raises(TypeError, match="Invalid grad: array of dtype uint16 .expected float32, "
                                        "bfloat16 or float16 with param of dtype bfloat16"):
        fastopt.adam_step(p, np.full(4, 0x3F00, np.uint16), m, v, step=1, lr=0.1)
    assert bool((p == 1).all()) and bool((m == 0).all())


def test_small_updates_stall_in_bf16_as_expected():
    # Round to nearest: 1.0 + 1e-3 rounds back to 1.0 in bfloat16 (the reason for stochastic
    # rounding and master weights, next): a regression guard that rounding is nearest-even.
    p = np.ones(16, BF16)
    g = np.full(16, -1.0, BF16)
    for t in range(1, 101):
        fastopt.sgd_step(p, g, lr=1e-3, step=t)
    np.testing.assert_array_equal(p.astype(np.float32), 1.0)


assert ALGORITHMS  # the table the parametrisations above run off
