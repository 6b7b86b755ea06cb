"""How a 16-bit parameter is stored: master weights, Kahan compensation, stochastic rounding."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import fastopt
from algorithms import Problem, case_id, cases
from fastopt import _storage
from fastopt.kernels import formats

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = ml_dtypes.bfloat16
DTYPES = {"bf16": BF16, "f16": np.float16}


@numba.njit
def _sr_many(x, key, offset, f16):
    """Kernel-compiled stochastic rounding of x[i] with the random bits of offset + i."""
    rb = _random_bits
    out = np.empty(x.size, np.uint16)
    for i in range(x.size):
        r = rb(key, offset + i)
        out[i] = _f16_sr(x[i], r) if f16 else _bf16_sr(x[i], r)
    return out


_random_bits = numba.njit(inline="always")(formats.random_bits)
_bf16_sr = numba.njit(inline="always")(formats.bf16_store_sr)
_f16_sr = numba.njit(inline="always")(formats.f16_store_sr)


def _cases() -> np.ndarray:
    """float32 values around every 16-bit value and float32's edges (NaN payloads, infinities,
    subnormals of both formats, the float16 overflow threshold), plus random bit patterns."""
    all16 = np.arange(1 << 16, dtype=np.uint32)
    near = np.concatenate([(all16 << 16) + d for d in (0, 1, 0x7FFF, 0x8000, 0xFFFF)])
    with np.errstate(all="ignore"):
        h = all16.astype(np.uint16).view(np.float16).astype(np.float32).view(np.uint32)
    h = h[(h & 0x7F800000) != 0x7F800000]
    near16 = np.concatenate([h + d for d in (0, 1, 0xFFF, 0x1000, 0x1FFF)])
    edges = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 1, 0x007FFFFF,
                      0x7F800001, 0xFF800001, 0x7FC00000, 0x477FE000, 0x477FF000, 0x477FFFFF,
                      0x47800000, 0x38800000, 0x387FFFFF, 0x33800000, 0x2F000000, 0x2EFFFFFF],
                     np.uint32)
    rng = np.random.default_rng(1)
    return np.concatenate([near, near16, edges, rng.integers(0, 1 << 32, 1 << 18,
                                                             dtype=np.uint64).astype(np.uint32)]
                          ).view(np.float32)


@pytest.mark.parametrize("fmt", ["bf16", "f16"])
def test_stochastic_rounding_kernel_and_numpy_agree_bit_for_bit(fmt):
    x = _cases()
    for key, offset in ((0, 0), (0xDEADBEEF, 12345), (7, 2**33 + 5)):
        ours = _sr_many(x, np.uint32(key), offset, fmt == "f16")
        ref = np.empty(x.size, DTYPES[fmt])
        with np.errstate(all="ignore"):
            _storage.store_sr(ref, x, fmt, key, offset)
        np.testing.assert_array_equal(ours, ref.view(np.uint16))


@pytest.mark.parametrize("fmt", ["bf16", "f16"])
def test_stochastic_rounding_gives_a_neighbour_and_nan_stays_nan(fmt):
    x = _cases()
    out = _sr_many(x, np.uint32(99), 0, fmt == "f16").view(DTYPES[fmt]).astype(np.float64)
    with np.errstate(invalid="ignore"):
        x64 = x.astype(np.float64)
    nan = np.isnan(x64)
    assert np.isnan(out[nan]).all()
    # The two neighbours: the value rounded toward zero, and the next one away from zero.
    with np.errstate(all="ignore"):
        lo = x.astype(DTYPES[fmt]).astype(np.float64)
        lo = np.where(np.abs(lo) > np.abs(x64), np.nextafter(
            x.astype(DTYPES[fmt]), np.zeros(1, DTYPES[fmt])).astype(np.float64), lo)
        hi = np.nextafter(lo.astype(DTYPES[fmt]), np.where(x64 < 0, -np.inf, np.inf).astype(
            DTYPES[fmt])).astype(np.float64)
    tiny = np.abs(x64) < 2.0**-33  # below this float16 truncates to zero (documented)
    ok = nan | ((out == lo) | (out == hi) | (out == x64) | (tiny & (out == 0)))
    assert ok.all(), (x[~ok][:5], out[~ok][:5], lo[~ok][:5], hi[~ok][:5])


@pytest.mark.parametrize("fmt", ["bf16", "f16"])
def test_stochastic_rounding_is_unbiased(fmt):
    # torchao's test: 32 values, each rounded 100,000 times (here: at 100,000 indices); the
    # mean must match the value within 3e-5 relative.
    rng = np.random.default_rng(5)
    values = (rng.standard_normal(32) * 10.0 ** rng.integers(-3, 3, 32)).astype(np.float32)
    for v in values:
        out = _sr_many(np.full(100_000, v, np.float32), np.uint32(1234), 0, fmt == "f16")
        mean = out.view(DTYPES[fmt]).astype(np.float64).mean()
        assert abs(mean - float(v)) <= 3e-5 * abs(float(v)), (v, mean)


def _sgd_sr(p, seed, threads=None, backend="auto"):
    g = np.full(p.size, 1e-3, np.float32).astype(p.dtype)
    old = numba.get_num_threads()
    try:
        if threads is not None:
            numba.set_num_threads(threads)
        for t in range(1, 4):
            fastopt.sgd_step(p, g, lr=0.37, step=t, rounding="stochastic", seed=seed,
                             backend=backend)
    finally:
        numba.set_num_threads(old)
    return p.view(np.uint16).copy()


def test_stochastic_rounding_is_deterministic_for_any_thread_count_and_seeded():
    from fastopt import _numba_backend

    n = _numba_backend.PARALLEL_MIN_SIZE * 2 + 3  # the parallel build
    start = np.linspace(-1, 1, n, dtype=np.float32).astype(BF16)
    one = _sgd_sr(start.copy(), seed=3, threads=1)
    assert np.array_equal(one, _sgd_sr(start.copy(), 3, numba.config.NUMBA_NUM_THREADS))
    assert not np.array_equal(one, _sgd_sr(start.copy(), seed=4))
    # The serial build on a prefix draws the same bits for the same indices, and so does the
    # reference backend.
    assert np.array_equal(one[:1001], _sgd_sr(start[:1001].copy(), seed=3))
    assert np.array_equal(one[:1001], _sgd_sr(start[:1001].copy(), seed=3, backend="numpy"))


@pytest.mark.parametrize("fmt", ["bf16", "f16"])
def test_small_updates_progress_under_stochastic_rounding_and_stall_under_nearest(fmt):
    # 1.0 plus 1000 updates of 1e-3: nearest rounding never leaves 1.0 (the gap above 1.0 is
    # 2**-7 in bfloat16, 2**-10 in float16: 1e-3 is below half of either for bfloat16 and
    # about one for float16); stochastic rounding gets 2.0 on average.
    n = 4096
    g = np.full(n, -1.0, DTYPES[fmt])
    near, sr = np.ones(n, DTYPES[fmt]), np.ones(n, DTYPES[fmt])
    for t in range(1, 1001):
        fastopt.sgd_step(near, g, lr=1e-3, step=t)
        fastopt.sgd_step(sr, g, lr=1e-3, step=t, rounding="stochastic", seed=11)
    if fmt == "bf16":
        np.testing.assert_array_equal(near.astype(np.float32), 1.0)
    assert abs(sr.astype(np.float64).mean() - 2.0) < 0.01


def test_small_updates_progress_with_compensation():
    n = 256
    g = np.full(n, -1.0, BF16)
    p, comp = np.ones(n, BF16), np.zeros(n, BF16)
    for t in range(1, 1001):
        fastopt.sgd_step(p, g, lr=1e-3, step=t, compensation=comp)
    # The compensation is bfloat16 too: each step's residual keeps 8 bits, so the sum drifts
    # by a few parts in 1e4 over 1000 steps (nearest rounding alone would stay at 1.0).
    total = p.astype(np.float64) + comp.astype(np.float64)
    np.testing.assert_allclose(total, 2.0, rtol=5e-3)
    np.testing.assert_allclose(p.astype(np.float64), 2.0, rtol=2**-7)


# ---------------------------------------------------------------------------------------------
# Every algorithm: master weights are float32 fastopt on the master; compensation is the float32
# step of param + comp, stored as two roundings.

def _fast_cases(names=("adam", "nadam", "rmsprop")):
    """Every algorithm's option sets; in the default run the last option set of ``names``
    (one with scalar states, one with three states), the rest under -m slow."""
    return [pytest.param(c, marks=() if c[1] == c[0].option_sets[-1] and c[0].name in names
                         else pytest.mark.slow, id=case_id(c)) for c in cases()]


def _problem(case, fmt, n=1031, seed=3):
    algo, options = case
    prob = Problem(algo, options, n, np.float32, seed=seed)
    grads = [prob.grad() * np.float32(0.3) for _ in range(3)]
    grads = [g.astype(DTYPES[fmt]) for g in grads]
    return prob, grads


@pytest.mark.parametrize("fmt", ["bf16", pytest.param("f16", marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", _fast_cases())
def test_master_weights_are_the_float32_step_and_the_param_its_rounding(case, fmt):
    wide, grads = _problem(case, fmt)
    narrow = wide.copy()
    master = wide.param.copy()
    narrow.param = wide.param.astype(DTYPES[fmt])
    for t, g in enumerate(grads, 1):
        with np.errstate(all="ignore"):
            wide.step(g.astype(np.float32), t, "numba")
            narrow.step(g, t, "numba", master=master)
        np.testing.assert_array_equal(master, wide.param, err_msg=f"master at step {t}")
        np.testing.assert_array_equal(narrow.param.view(np.uint16),
                                      wide.param.astype(DTYPES[fmt]).view(np.uint16),
                                      err_msg=f"param at step {t}")
        for name, s in wide.state.items():
            if s is not None:
                np.testing.assert_array_equal(narrow.state[name], s, err_msg=name)


@pytest.mark.parametrize("case", _fast_cases(("adamw", "sgd")))
def test_compensation_is_the_float32_step_of_param_plus_comp(case):
    wide, grads = _problem(case, "bf16")
    narrow = wide.copy()
    narrow.param = wide.param.astype(BF16)
    comp = np.zeros(wide.param.size, BF16)
    for t, g in enumerate(grads, 1):
        start = (narrow.param.astype(np.float32) + comp.astype(np.float32)).astype(np.float32)
        wide.param[...] = start
        with np.errstate(all="ignore"):
            wide.step(g.astype(np.float32), t, "numba")
            narrow.step(g, t, "numba", compensation=comp)
        expect_p = wide.param.astype(BF16)
        expect_c = (wide.param - expect_p.astype(np.float32)).astype(BF16)
        np.testing.assert_array_equal(narrow.param.view(np.uint16), expect_p.view(np.uint16))
        np.testing.assert_array_equal(comp.view(np.uint16), expect_c.view(np.uint16))


@pytest.mark.parametrize("mode", ["master", "compensation", "stochastic"])
def test_param_stores_match_the_reference_backend(mode):
    # numpy widens, runs the reference's float32 math and stores as the kernels do: equal to
    # them within float32 rounding of the full value (one 16-bit ulp for the param).
    rng = np.random.default_rng(8)
    n = 777
    p32 = rng.standard_normal(n).astype(np.float32)
    out = {}
    for backend in ("numba", "numpy"):
        p = p32.astype(BF16)
        m, v = np.zeros(n, np.float32), np.zeros(n, BF16)
        extra = p32.copy() if mode == "master" else np.zeros(n, BF16)
        for t in range(1, 6):
            g = rng.standard_normal(n).astype(BF16) if backend == "numba" else None
            out.setdefault(t, g)
            kw = ({"master": extra} if mode == "master" else {"compensation": extra}
                  if mode == "compensation" else {"rounding": "stochastic", "seed": 5})
            fastopt.adamw_step(p, out[t], m, v, step=t, lr=1e-2, backend=backend, **kw)
        out[backend] = (p.astype(np.float64), extra.astype(np.float64))
    (p1, e1), (p2, e2) = out["numba"], out["numpy"]
    np.testing.assert_allclose(p1, p2, rtol=2**-7)
    if mode != "stochastic":
        full1 = e1 if mode == "master" else p1 + e1
        full2 = e2 if mode == "master" else p2 + e2
        # (with compensation, where the two float32 results round to different params the
        # bfloat16 residuals differ by up to one of their own ulps: 2**-16 of the value)
        np.testing.assert_allclose(full1, full2, rtol=2**-14, atol=1e-7)


def test_master_weights_with_the_ema_follow_the_master():
    n = 64
    p32 = np.linspace(-1, 1, n, dtype=np.float32)
    p, master, m, v = p32.astype(BF16), p32.copy(), np.zeros(n, BF16), np.zeros(n, BF16)
    ema = np.zeros(n, np.float32)
    g = np.full(n, 0.25, BF16)
    fastopt.adam_step(p, g, m, v, step=1, lr=0.01, master=master, ema=ema, ema_decay=0.9)
    np.testing.assert_array_equal(ema, master)  # the first EMA update copies the full value


def test_torch_bf16_tensors_with_a_float32_master():
    torch = pytest.importorskip("torch")
    p = torch.linspace(-1, 1, 32).to(torch.bfloat16)
    master = torch.linspace(-1, 1, 32)
    m, v = torch.zeros(32, dtype=torch.bfloat16), torch.zeros(32, dtype=torch.bfloat16)
    version = p._version
    fastopt.adam_step(p, torch.ones(32, dtype=torch.bfloat16), m, v, step=1, lr=0.1,
                      master=master)
    assert torch.equal(p, master.to(torch.bfloat16)) and p._version > version
    assert not torch.equal(master, torch.linspace(-1, 1, 32))


# ---------------------------------------------------------------------------------------------
# Bad input: rejected before anything is written.

def _arrays(param=BF16, n=8):
    p = np.linspace(-1, 1, n, dtype=np.float32).astype(param)
    return p, np.ones(n, param), np.zeros(n, param), np.zeros(n, param)


BAD = [
    (dict(master=np.zeros(8, np.float32)), np.float32, TypeError,
     r"Invalid master: given with a param of dtype float32 .expected a bfloat16 or float16"),
    (dict(rounding="stochastic"), np.float64, TypeError, r"Invalid rounding='stochastic'"),
    (dict(master=np.zeros(8, BF16)), BF16, TypeError,
     r"Invalid master: array of dtype bfloat16 .expected float32"),
    (dict(master=np.zeros(8, np.float64)), BF16, TypeError, r"Invalid master: array of dtype"),
    (dict(compensation=np.zeros(8, np.float32)), BF16, TypeError,
     r"Invalid compensation: array of dtype float32 .expected bfloat16, the dtype of param"),
    (dict(compensation=np.zeros(8, np.float16)), BF16, TypeError, r"Invalid compensation"),
    (dict(master=np.zeros(8, np.float32), compensation=np.zeros(8, BF16)), BF16, ValueError,
     r"Invalid compensation: an array was given with master"),
    (dict(compensation=np.zeros(8, BF16), rounding="stochastic"), BF16, ValueError,
     r"'stochastic' with compensation"),
    (dict(rounding="up"), BF16, ValueError, r"Invalid rounding: 'up'"),
    (dict(rounding="stochastic", seed=-1), BF16, ValueError, r"Invalid seed: -1"),
    (dict(rounding="stochastic", seed=2**64), BF16, ValueError, r"Invalid seed"),
    (dict(rounding="stochastic", seed=1.5), BF16, ValueError, r"Invalid seed: 1.5"),
    (dict(seed=True), np.float32, ValueError, r"Invalid seed: True"),
    (dict(master=np.zeros(9, np.float32)), BF16, ValueError, r"Invalid master: shape"),
]


@pytest.mark.parametrize("kw,param,error,message", BAD)
def test_bad_param_stores_are_rejected_before_writing(kw, param, error, message):
    p, g, m, v = _arrays(param)
    before = [a.copy() for a in (p, m, v, *[x for x in kw.values() if isinstance(x, np.ndarray)])]
    with pytest.raises(error, match=message):
        fastopt.adam_step(p, g, m, v, step=1, lr=0.1, **kw)
    after = [p, m, v, *[x for x in kw.values() if isinstance(x, np.ndarray)]]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_a_master_that_overlaps_another_array_is_rejected(backend):
    p, g, _, v = _arrays()
    buf = np.zeros(16, np.float32)
    with pytest.raises(ValueError, match="Invalid master: it overlaps exp_avg in memory"):
        fastopt.adam_step(p, g, buf[4:12], v.astype(np.float32), step=1, lr=0.1,
                          master=buf[:8], backend=backend)
    assert (buf == 0).all() and np.array_equal(p, _arrays()[0])


def test_stochastic_rounding_needs_the_step():
    p, g, _, _ = _arrays()
    with pytest.raises(ValueError, match="Invalid step: None with rounding='stochastic'"):
        fastopt.sgd_step(p, g, lr=0.1, rounding="stochastic")


# ---------------------------------------------------------------------------------------------
# The optimizer classes: state_dtype, master_weights, param_rounding, checkpoints.

SHAPES = [(64,), (8, 8), (5,), (3, 1, 4)]


def _model(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in SHAPES]


def _grads(dtype, steps=4, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(np.float32).astype(dtype) for s in SHAPES]
            for _ in range(steps)]


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "Lion"])
def test_class_master_weights_are_float32_training_on_the_master(name):
    kw = {"lr": 1e-2, **({"momentum": 0.9} if name == "SGD" else {})}
    narrow = _model(BF16)
    wide = [p.astype(np.float32) for p in narrow]
    ours = getattr(fastopt, name)(narrow, master_weights=True, **kw)
    ref = getattr(fastopt, name)(wide, **kw)
    for g in _grads(BF16):
        ours.step(g)
        ref.step([x.astype(np.float32) for x in g])
    for i, (p, w) in enumerate(zip(narrow, wide)):
        np.testing.assert_array_equal(ours.state[i]["master"], w)
        np.testing.assert_array_equal(p.view(np.uint16), w.astype(BF16).view(np.uint16))
        for k, v in ref.state[i].items():
            if isinstance(v, np.ndarray) and v.ndim:
                assert ours.state[i][k].dtype == np.float32
                np.testing.assert_array_equal(ours.state[i][k], v)


@pytest.mark.parametrize("multi_tensor", [True, False])
def test_class_bf16_states_match_the_functional_api(multi_tensor):
    params = _model(np.float32)
    copies = [p.copy() for p in params]
    opt = fastopt.Adam(params, lr=1e-2, state_dtype="bfloat16", multi_tensor=multi_tensor)
    m = [np.zeros(s, BF16) for s in SHAPES]
    v = [np.zeros(s, BF16) for s in SHAPES]
    for t, g in enumerate(_grads(np.float32), 1):
        opt.step(g)
        for p, gi, mi, vi in zip(copies, g, m, v):
            fastopt.adam_step(p, gi, mi, vi, step=t, lr=1e-2)
    for i in range(len(SHAPES)):
        assert opt.state[i]["exp_avg"].dtype == BF16
        np.testing.assert_array_equal(params[i], copies[i])
        np.testing.assert_array_equal(opt.state[i]["exp_avg_sq"].view(np.uint16),
                                      v[i].view(np.uint16))


def test_class_stochastic_rounding_is_seeded_per_tensor():
    same = [np.ones(4096, BF16), np.ones(4096, BF16)]
    opt = fastopt.SGD(same, lr=1e-3, param_rounding="stochastic", seed=5)
    for _ in range(10):
        opt.step([np.full(4096, -1.0, BF16)] * 2)
    assert not np.array_equal(same[0], same[1])  # one random stream per tensor
    for p in same:
        assert abs(p.astype(np.float64).mean() - 1.01) < 2e-3
    again = [np.ones(4096, BF16), np.ones(4096, BF16)]
    opt2 = fastopt.SGD(again, lr=1e-3, param_rounding="stochastic", seed=5)
    for _ in range(10):
        opt2.step([np.full(4096, -1.0, BF16)] * 2)
    assert all(np.array_equal(a.view(np.uint16), b.view(np.uint16)) for a, b in zip(same, again))


def test_class_kahan_keeps_small_updates():
    p = [np.ones(256, BF16)]
    opt = fastopt.SGD(p, lr=1e-3, param_rounding="kahan")
    for _ in range(1000):
        opt.step([np.full(256, -1.0, BF16)])
    total = p[0].astype(np.float64) + opt.state[0]["compensation"].astype(np.float64)
    np.testing.assert_allclose(total, 2.0, rtol=5e-3)


def test_a_mixed_model_keeps_master_weights_for_its_16bit_tensors_only():
    params = [np.ones(8, np.float32), np.ones(8, BF16), np.ones(8, np.float16)]
    opt = fastopt.AdamW(params, lr=0.1, master_weights=True)
    opt.step([np.full(8, 0.5, np.float32), np.full(8, 0.5, BF16), np.full(8, 0.5, np.float16)])
    assert "master" not in opt.state[0] and opt.state[0]["exp_avg"].dtype == np.float32
    assert opt.state[1]["master"].dtype == np.float32 and opt.state[2]["master"].dtype == np.float32
    np.testing.assert_array_equal(opt.state[1]["master"], opt.state[2]["master"])
    np.testing.assert_array_equal(params[0], opt.state[1]["master"])


def test_loss_scaling_and_clipping_with_bf16_gradients():
    narrow = _model(BF16)
    wide = [p.astype(np.float32) for p in narrow]
    ours = fastopt.Adam(narrow, lr=1e-2, master_weights=True)
    ref = fastopt.Adam(wide, lr=1e-2)
    for g in _grads(BF16):
        r1 = ours.step(g, loss_scale=4.0, max_grad_norm=1.0)
        r2 = ref.step([x.astype(np.float32) for x in g], loss_scale=4.0, max_grad_norm=1.0)
        assert r1.grad_norm == r2.grad_norm and r1.clip_coef == r2.clip_coef
    bad = _grads(BF16)[0]
    bad[1][0, 0] = np.nan
    before = [p.copy() for p in narrow]
    assert ours.step(bad, loss_scale=2.0).skipped
    assert all(np.array_equal(a.view(np.uint16), b.view(np.uint16))
               for a, b in zip(before, narrow))


@pytest.mark.parametrize("kw", [dict(master_weights=True), dict(param_rounding="kahan"),
                                dict(state_dtype="bfloat16"),
                                dict(param_rounding="stochastic", seed=9)])
def test_class_checkpoints_round_trip_bit_exactly_and_resume(tmp_path, kw):
    def make(params):
        return fastopt.AdamW(params, lr=1e-2, **kw)

    dtype = np.float32 if "state_dtype" in kw else BF16
    grads = _grads(dtype, steps=6)
    straight = _model(dtype)
    a = make(straight)
    for g in grads:
        a.step(g)
    resumed = _model(dtype)
    b = make(resumed)
    for g in grads[:3]:
        b.step(g)
    b.save(tmp_path / "c.npz")
    c = make([p.copy() for p in resumed])
    c.load(tmp_path / "c.npz")
    for i, s in b.state.items():
        for k, v in s.items():
            if isinstance(v, np.ndarray):
                assert c.state[i][k].dtype == v.dtype
                np.testing.assert_array_equal(c.state[i][k].view(np.uint8), v.view(np.uint8))
    c_params = c._params()
    for g in grads[3:]:
        c.step(g)
    for x, y in zip(c_params, straight):
        np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8))


CLASS_BAD = [
    (dict(state_dtype="float16"), np.float32, ValueError, r"Invalid state_dtype: 'float16'"),
    (dict(state_dtype="bfloat16"), np.float64, TypeError,
     r"Invalid state_dtype: bfloat16 with a float64 parameter"),
    (dict(master_weights=True, param_rounding="kahan"), BF16, ValueError,
     r"'kahan' with master_weights=True"),
    (dict(param_rounding="up"), BF16, ValueError, r"Invalid param_rounding: 'up'"),
    (dict(seed=-3), BF16, ValueError, r"Invalid seed: -3"),
    (dict(master_weights=2), BF16, TypeError, r"master_weights"),
]


@pytest.mark.parametrize("kw,dtype,error,message", CLASS_BAD)
def test_bad_class_storage_options_are_rejected(kw, dtype, error, message):
    with pytest.raises(error, match=message):
        fastopt.Adam([np.ones(4, dtype)], lr=0.1, **kw)


def test_a_state_of_the_wrong_dtype_is_rejected_before_writing():
    p = [np.ones(8, BF16)]
    opt = fastopt.Adam(p, lr=0.1, master_weights=True)
    opt.step([np.ones(8, BF16)])
    opt.state[0]["master"] = opt.state[0]["master"].astype(BF16)
    before = p[0].copy()
    with pytest.raises(ValueError, match=r"state\[0\]\['master'\]: array of bfloat16 .8,. "
                                         r"\(expected float32"):
        opt.step([np.ones(8, BF16)])
    assert np.array_equal(p[0].view(np.uint16), before.view(np.uint16))


# ---------------------------------------------------------------------------------------------
# Found in review: option changes between steps, swaps with 16-bit tensors, loss scaling.

def test_changing_state_dtype_after_a_step_is_an_error_not_a_write_past_the_states():
    p = np.ones(8, np.float32)
    opt = fastopt.SGD([p], lr=0.1, momentum=0.9, state_dtype="bfloat16")
    opt.step([np.ones(8, np.float32)])
    opt.param_groups[0]["state_dtype"] = None  # the bfloat16 buffer is now the wrong dtype
    before = p.copy()
    with pytest.raises(ValueError, match=r"state\[0\]\['momentum_buffer'\]: array of "
                                         r"bfloat16 .8,. \(expected float32"):
        opt.step([np.ones(8, np.float32)])
    np.testing.assert_array_equal(p, before)


def test_master_weights_switched_off_leave_a_master_that_must_be_deleted():
    p = np.zeros(2, BF16)
    opt = fastopt.SGD([p], lr=1.0, master_weights=True)
    opt.step([np.ones(2, BF16)])
    opt.param_groups[0]["master_weights"] = False
    with pytest.raises(ValueError, match=r"state\[0\]\['master'\]: an array for params\[0\]"):
        opt.step([np.ones(2, BF16)])
    del opt.state[0]["master"]
    opt.step([np.ones(2, BF16)])
    opt.param_groups[0]["master_weights"] = True
    opt.step([np.ones(2, BF16)])  # a new master, from the parameter as it is now
    np.testing.assert_array_equal(p.astype(np.float32), -3.0)


def test_torch_master_weights_switched_off_leave_a_master_that_must_be_deleted():
    torch = pytest.importorskip("torch")
    import fastopt.torch as ft

    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))
    opt = ft.SGD([p], lr=1.0, master_weights=True)

    def step():
        p.grad = torch.ones(2, dtype=torch.bfloat16)
        opt.step()

    step()
    opt.param_groups[0]["master_weights"] = False
    with pytest.raises(ValueError, match="state 'master' of param_groups.0..'params'..0. is "
                                         "left from options"):
        step()
    del opt.state[p]["master"]
    step()
    opt.param_groups[0]["master_weights"] = True
    step()
    assert bool((p == -3).all())


@pytest.mark.parametrize("layer", ["numpy", "torch"])
@pytest.mark.parametrize("swap", ["ema", "schedulefree"])
def test_swaps_refuse_16bit_tensors_before_swapping_any(layer, swap):
    if layer == "torch":
        torch = pytest.importorskip("torch")
        import fastopt.torch as ft

        a = torch.nn.Parameter(torch.ones(4))
        b = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
        opt = (ft.Adam([a, b], lr=0.1, ema_decay=0.5) if swap == "ema"
               else ft.SGDScheduleFree([a, b], lr=0.1))
        for _ in range(2):
            a.grad, b.grad = torch.ones(4), torch.ones(4, dtype=torch.bfloat16)
            opt.step()
        first = a.detach().clone()
    else:
        a, b = np.ones(4, np.float32), np.ones(4, BF16)
        opt = (fastopt.Adam([a, b], lr=0.1, ema_decay=0.5) if swap == "ema"
               else fastopt.SGDScheduleFree([a, b], lr=0.1))
        for _ in range(2):
            opt.step([np.ones(4, np.float32), np.ones(4, BF16)])
        first = a.copy()
    with pytest.raises(TypeError, match="bfloat16"):
        opt.swap_ema() if swap == "ema" else opt.eval()
    assert bool((a == first).all()), "the float32 tensor was swapped before the error"
    if swap == "ema":
        swapped = (opt.param_groups[0]["ema_swapped"] if layer == "torch"
                   else opt.ema_swapped)
        assert not swapped
    else:
        assert opt.param_groups[0].get("train_mode", True)


def test_loss_scaling_of_16bit_gradients_happens_in_float32():
    g = np.array([2e-8, 1e-7, 1e-3], np.float32)
    wide, narrow = np.zeros(3, np.float32), np.zeros(3, np.float16)
    fastopt.Adam([wide], lr=1e-2).step([(g * 2**16).astype(np.float16).astype(np.float32)],
                                       loss_scale=2**16)
    fastopt.Adam([narrow], lr=1e-2, master_weights=True).step(
        [(g * 2**16).astype(np.float16)], loss_scale=2**16)
    np.testing.assert_array_equal(narrow, wide.astype(np.float16))
