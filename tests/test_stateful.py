"""The optimizer classes operate on what the user sees: the arrays in ``param_groups`` and
``state`` now. Replacing, clearing or corrupting them is either followed exactly or rejected
before anything is written; an interrupted step is a completed step.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest

import fastopt
from fastopt import optim

SHAPES = [(5,), (3, 4), (70_000,)]  # the last one runs the parallel kernels


def _params(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _grads(seed, dtype=np.float32):
    rng = np.random.default_rng(100 + seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _run(opt, steps, first=0):
    for t in range(first, first + steps):
        opt.step(_grads(t))


def _snapshot(opt):
    return ([p.copy() for g in opt.param_groups for p in g["params"]],
            {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
             for i, s in opt.state.items()})


def _assert_same(a, b):
    (pa, sa), (pb, sb) = a, b
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb))
    assert sa.keys() == sb.keys()
    for i in sa:
        assert sa[i].keys() == sb[i].keys()
        for k in sa[i]:
            assert np.array_equal(sa[i][k], sb[i][k]), (i, k)


@pytest.mark.parametrize("multi_tensor", [True, False])
def test_a_replaced_state_array_is_the_one_updated(multi_tensor):
    a, b = fastopt.Adam(_params(), lr=0.01, multi_tensor=multi_tensor), \
        fastopt.Adam(_params(), lr=0.01, multi_tensor=multi_tensor)
    _run(a, 2)
    _run(b, 2)
    old = a.state[2]["exp_avg"]
    new = old * 0.5  # a new array, another address
    a.state[2]["exp_avg"] = new
    b.state[2]["exp_avg"][...] *= 0.5  # the same values, in place
    frozen = old.copy()
    _run(a, 2, first=2)
    _run(b, 2, first=2)
    assert np.array_equal(old, frozen), "the replaced array was written"
    assert a.state[2]["exp_avg"] is new
    _assert_same(_snapshot(a), _snapshot(b))


def test_a_replaced_parameter_is_the_one_updated():
    params = _params()
    opt = fastopt.SGD(params, lr=0.1, momentum=0.9)
    _run(opt, 1)
    old = params[1]
    new = old.copy()
    opt.param_groups[0]["params"][1] = new
    frozen = old.copy()
    _run(opt, 1, first=1)
    assert np.array_equal(old, frozen)
    assert not np.array_equal(new, frozen)


@pytest.mark.parametrize("reset", ["clear", "new dict"])
def test_clearing_state_resets_the_optimizer(reset):
    params = _params()
    opt = fastopt.AdamW(params, lr=0.01)
    _run(opt, 3)
    if reset == "clear":
        opt.state.clear()
    else:
        opt.state = {}
    fresh = fastopt.AdamW([p.copy() for p in params], lr=0.01)
    _run(opt, 2, first=3)
    _run(fresh, 2, first=3)
    _assert_same(_snapshot(opt), _snapshot(fresh))
    assert opt.state[0]["step"] == 2


@pytest.mark.parametrize("bad,match", [
    (lambda p: np.zeros(p.size * 4, p.dtype), r"state\[2\]\['exp_avg'\]: array of float32 "),
    (lambda p: np.zeros(p.shape, np.float64), "expected float32"),
    (lambda p: np.zeros(p.shape, p.dtype)[::-1][::-1].T if p.ndim > 1 else
     np.zeros(2 * p.size, p.dtype)[::2], "array with gaps"),
    (lambda p: p, r"overlaps params\[2\]"),
    (lambda p: np.ma.zeros(p.shape, p.dtype), "mask would be ignored"),
    (lambda p: [0.0] * p.size, r"Invalid state\[2\]\['exp_avg'\]: builtins.list"),
])
def test_a_bad_replacement_state_is_rejected_before_anything_is_written(bad, match):
    opt = fastopt.Adam(_params(), lr=0.01)
    _run(opt, 1)
    opt.state[2]["exp_avg"] = bad(opt.param_groups[0]["params"][2])
    before = _snapshot(opt)
    with pytest.raises((ValueError, TypeError), match=match):
        opt.step(_grads(5))
    _assert_same(_snapshot(opt), before)


def test_a_state_in_another_layout_is_rejected_and_one_in_the_same_layout_works():
    p = np.asfortranarray(np.ones((30, 40), np.float32))
    opt = fastopt.Adam([p], lr=0.1)
    g = np.asfortranarray(np.full((30, 40), 0.5, np.float32))
    opt.step([g])
    opt.state[0]["exp_avg"] = np.ascontiguousarray(opt.state[0]["exp_avg"])
    with pytest.raises(ValueError, match=r"strides \(160, 4\) differ from params\[0\]'s"):
        opt.step([g])
    opt.state[0]["exp_avg"] = np.asfortranarray(opt.state[0]["exp_avg"])
    opt.step([g])
    assert opt.state[0]["step"] == 2


def test_state_as_a_non_dict_is_rejected():
    opt = fastopt.Adam(_params(), lr=0.01)
    opt.state = [1, 2]
    with pytest.raises(TypeError, match="Invalid state: list"):
        opt.step(_grads(0))


def test_checkpoint_loaded_state_keeps_the_parameter_layout():
    p = np.asfortranarray(np.ones((8, 9), np.float32))
    opt = fastopt.Adam([p], lr=0.1)
    opt.step([np.asfortranarray(np.full((8, 9), 0.5, np.float32))])
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"] = np.ascontiguousarray(sd["state"][0]["exp_avg"])
    opt.load_state_dict(sd)
    assert opt.state[0]["exp_avg"].strides == p.strides
    opt.step([np.asfortranarray(np.full((8, 9), 0.5, np.float32))])


def test_memmap_parameters_work(tmp_path):
    mm = np.memmap(tmp_path / "w.bin", dtype=np.float32, mode="w+", shape=(1000,))
    mm[:] = 1.0
    ref = np.ones(1000, np.float32)
    for arrays in ([mm], [ref]):
        opt = fastopt.Adam(arrays, lr=0.1)
        for t in range(3):
            opt.step([np.full(1000, 0.5, np.float32)])
    assert np.array_equal(np.asarray(mm), ref)


def test_masked_arrays_are_rejected_everywhere():
    m = np.ma.array(np.ones(4, np.float32), mask=[0, 1, 0, 0])
    with pytest.raises(TypeError, match="mask would be ignored"):
        fastopt.Adam([m])
    opt = fastopt.Adam([np.ones(4, np.float32)])
    with pytest.raises(TypeError, match=r"Invalid grads\[0\]: numpy.ma"):
        opt.step([m])


@pytest.mark.parametrize("step", [2**63 - 1, 2**63, 2**64, -1])
def test_step_counts_out_of_int64_range_are_rejected_before_any_group(step):
    params = _params()
    opt = fastopt.Adam([{"params": params[:2]}, {"params": params[2:]}], lr=0.01)
    _run(opt, 1)
    opt.state[2]["step"] = step
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=r"state\[2\]\['step'\]"):
        opt.step(_grads(1))
    _assert_same(_snapshot(opt), before)
    opt.state[2]["step"] = 1
    sd = opt.state_dict()
    sd["state"][0]["step"] = step
    with pytest.raises(ValueError, match=r"state\[0\]\['step'\]"):
        opt.load_state_dict(sd)


def test_the_largest_step_count_steps_once_then_stops():
    opt = fastopt.Adam([np.ones(3, np.float32)], lr=0.01)
    opt.step([np.ones(3, np.float32)])
    opt.state[0]["step"] = optim.MAX_STEP
    opt.step([np.ones(3, np.float32)])
    assert opt.state[0]["step"] == 2**63 - 1
    with pytest.raises(ValueError, match="step"):
        opt.step([np.ones(3, np.float32)])


def test_numpy_integer_step_counts_are_stored_as_ints():
    opt = fastopt.Adam([np.ones(3, np.float32)], lr=0.01)
    opt.step([np.ones(3, np.float32)])
    opt.state[0]["step"] = np.int64(5)
    opt.step([np.ones(3, np.float32)])
    assert type(opt.state[0]["step"]) is int and opt.state[0]["step"] == 6


# -- interrupted steps --------------------------------------------------------------------------

def _two_groups(cls=fastopt.Adam, **kw):
    params = _params()
    return cls([{"params": params[:2]}, {"params": params[2:]}], lr=0.01, **kw)


def test_ctrl_c_mid_step_leaves_the_optimizer_exactly_after_the_step(monkeypatch, sigint_default):
    """SIGINT arrives after the first group's kernel: the step completes (every group, every
    step count), then KeyboardInterrupt is raised."""
    interrupted, reference = _two_groups(), _two_groups()
    _run(interrupted, 2)
    _run(reference, 3)
    from fastopt import _numba_backend

    real = _numba_backend.multi_step_rows
    calls = []

    def update_then_signal(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(_numba_backend, "multi_step_rows", update_then_signal)
    with pytest.raises(KeyboardInterrupt):
        interrupted.step(_grads(2))
    assert len(calls) == 2  # both groups ran before the interrupt was delivered
    _assert_same(_snapshot(interrupted), _snapshot(reference))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_users_signal_handler_still_runs_after_the_step(monkeypatch):
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))
    try:
        from fastopt import _numba_backend

        opt = _two_groups()
        real = _numba_backend.multi_step_rows

        def update_then_signal(*args, **kwargs):
            real(*args, **kwargs)
            signal.raise_signal(signal.SIGUSR1)
            assert seen == []  # deferred while the step writes

        monkeypatch.setattr(_numba_backend, "multi_step_rows", update_then_signal)
        opt.step(_grads(0))
        assert seen == [signal.SIGUSR1, signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_an_error_while_allocating_state_leaves_the_optimizer_exactly_before(monkeypatch):
    opt = _two_groups(fastopt.SGD, momentum=0.9)
    calls = []
    real = optim.SGD._new_state

    def fail_on_third(self, name, p, group, dtype=None):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("no memory for the momentum buffer")
        return real(self, name, p, group, dtype)

    monkeypatch.setattr(optim.SGD, "_new_state", fail_on_third)
    before = _snapshot(opt)
    with pytest.raises(MemoryError):
        opt.step(_grads(0))
    _assert_same(_snapshot(opt), before)
    assert opt.state == {}
    monkeypatch.setattr(optim.SGD, "_new_state", real)
    reference = _two_groups(fastopt.SGD, momentum=0.9)
    opt.step(_grads(0))
    reference.step(_grads(0))
    _assert_same(_snapshot(opt), _snapshot(reference))  # buffers start as the gradient


def test_a_loss_scale_below_one_whose_unscaling_overflows_skips_the_step():
    opt = fastopt.Adam([np.ones(4, np.float32)], lr=0.1)
    g = np.array([1.0, 2.0, 3e37, 4.0], np.float32)  # finite; 3e37 / 0.01 overflows float32
    before = _snapshot(opt)
    result = opt.step([g], loss_scale=0.01)
    assert result.skipped and result.nonfinite == 1
    _assert_same(_snapshot(opt), before)
    assert not opt.step([g], loss_scale=1.0).skipped


def test_functional_api_rejects_masked_arrays_and_takes_memmaps(tmp_path):
    m = np.ma.array(np.ones(4, np.float32), mask=[0, 1, 0, 0])
    z = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match=r"Invalid grad: numpy.ma.MaskedArray of dtype "
                                        r"float32 \(expected a numpy.ndarray; a masked"):
        fastopt.adam_step(np.ones(4, np.float32), m, z, z.copy(), step=1)
    mm = np.memmap(tmp_path / "p.bin", dtype=np.float32, mode="w+", shape=(4,))
    mm[:] = 1
    fastopt.adam_step(mm, np.ones(4, np.float32), z, z.copy(), step=1, lr=0.5)
    assert np.allclose(np.asarray(mm), 0.5)


# -- inputs ----------------------------------------------------------------------------------

def test_huge_integer_lr_is_a_value_error_everywhere():
    p, g = np.ones(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="Invalid lr: 1000.* beyond float64's range"):
        fastopt.adam_step(p, g, np.zeros(3, np.float32), np.zeros(3, np.float32), step=1,
                          lr=10**400)
    with pytest.raises(ValueError, match="Invalid lr"):
        fastopt.Adam([p], lr=10**400)
    assert (p == 1).all()


def test_numpy_scalar_hyperparameters_work_and_save(tmp_path):
    p = np.ones(3, np.float32)
    opt = fastopt.Adam([p], lr=np.float32(0.1), betas=(np.float64(0.9), np.float32(0.99)),
                       amsgrad=np.bool_(True), weight_decay=np.int64(0))
    opt.step([np.ones(3, np.float32)])
    opt.save(tmp_path / "opt.npz")
    other = fastopt.Adam([np.ones(3, np.float32)], lr=0.1, betas=(0.9, 0.99), amsgrad=True)
    other.load(tmp_path / "opt.npz")
    assert other.param_groups[0]["lr"] == pytest.approx(0.1)
    assert other.param_groups[0]["amsgrad"] is True


def test_save_gives_new_files_the_umask_mode_and_keeps_an_existing_files_mode(tmp_path):
    import os
    import stat

    opt = fastopt.SGD([np.ones(3, np.float32)], lr=0.1)
    old = os.umask(0o027)
    try:
        opt.save(tmp_path / "new.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.npz").st_mode) == 0o640
    existing = tmp_path / "existing.npz"
    opt.save(existing)
    os.chmod(existing, 0o604)
    opt.save(existing)
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o604


@pytest.mark.parametrize("metric", [float("nan"), float("inf"), np.array(2.0),
                                    np.float32(2.0), "torch"])
def test_reduce_lr_on_plateau_takes_what_torch_takes(metric):
    from fastopt import schedules

    if isinstance(metric, str):
        torch = pytest.importorskip("torch")
        metric = torch.tensor(2.0)
    opt = fastopt.SGD([np.ones(3, np.float32)], lr=1.0)
    sched = schedules.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    sched.step(1.0)
    sched.step(metric)  # NaN/inf/2.0: not an improvement on 1.0
    assert opt.param_groups[0]["lr"] == 0.5
    with pytest.raises(TypeError, match="Invalid metric"):
        sched.step("low")
    with pytest.raises(TypeError, match="Invalid metric"):
        sched.step(np.ones(2))


def test_arrays_changed_in_place_are_checked_again():
    """NumPy lets an array's dtype, shape and strides change in place: the next step sees it
    (before: the plan's old dtype with the new size wrote past the arrays)."""
    base = np.zeros(12)
    p = base[:6]
    opt = fastopt.SGD([p], lr=1.0, momentum=0.9)
    opt.step([np.ones(6)])
    p.dtype = np.float32  # now 12 float32 over the same 48 bytes
    with pytest.raises(ValueError, match=r"state\[0\]\['momentum_buffer'\]: array of float64"):
        opt.step([np.ones(12, np.float32)])
    assert (base[6:] == 0).all()


def test_a_removed_step_count_counts_as_zero():
    a, b = np.ones(3, np.float32), np.ones(3, np.float32)
    opt = fastopt.Adam([a, b], lr=0.1)
    g = [np.ones(3, np.float32), np.ones(3, np.float32)]
    opt.step(g)
    opt.step(g)
    del opt.state[1]["step"]
    opt.step(g)
    assert opt.state[0]["step"] == 3 and opt.state[1]["step"] == 1


def test_negative_stride_parameters_step_like_contiguous_ones():
    p = np.arange(1.0, 7.0, dtype=np.float32)[::-1]
    q = np.ascontiguousarray(p)
    for arrays in ([p], [q]):
        opt = fastopt.Adam(arrays, lr=0.1)
        for _ in range(3):
            opt.step([np.full(6, 0.5, np.float32)[::-1] if arrays[0] is p
                      else np.full(6, 0.5, np.float32)])
    assert np.array_equal(p, q)
    assert opt.state[0]["exp_avg"].strides == q.strides


def test_deepcopy_and_pickle_never_reuse_the_originals_addresses():
    """The plan holds raw addresses: a copied optimizer must step its own arrays (before the
    fix, a deepcopy wrote into the original's)."""
    import copy
    import pickle

    w = np.ones(5, np.float32)
    opt = fastopt.Adam([w], lr=0.1)
    opt.step([np.ones(5, np.float32)])
    before = w.copy()
    for other in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        mine = other.param_groups[0]["params"][0]
        other.step([np.ones(5, np.float32)])
        assert np.array_equal(w, before), "the original was written"
        assert not np.array_equal(mine, before)
        assert other.state[0]["step"] == 2 and opt.state[0]["step"] == 1


@pytest.mark.parametrize("backend,multi_tensor", [("numba", False), ("numpy", True)])
def test_per_tensor_path_scales_0d_and_negative_stride_gradients(backend, multi_tensor):
    """With a loss scale, the per-tensor path used to hand the functional API a NumPy scalar
    (0-d) or a re-laid-out gradient and fail after writing earlier tensors."""
    params = [np.ones(3), np.array(1.0), np.arange(1.0, 5.0)[::-1]]
    ref = [np.ones(3), np.array(1.0), np.ascontiguousarray(np.arange(1.0, 5.0)[::-1])]
    grads = [np.ones(3), np.array(2.0), np.full(4, 3.0)[::-1]]
    a = fastopt.Adam(params, lr=0.1, backend=backend, multi_tensor=multi_tensor)
    b = fastopt.Adam(ref, lr=0.1)
    for _ in range(2):
        a.step(grads, loss_scale=2.0)
        b.step([np.ones(3), np.array(2.0), np.full(4, 3.0)], loss_scale=2.0)
    for x, y in zip(params, ref):
        np.testing.assert_allclose(x, y, rtol=1e-12)


@pytest.mark.parametrize("multi_tensor", [True, False])
def test_memmap_parameters_and_gradients_everywhere(tmp_path, multi_tensor):
    m = np.memmap(tmp_path / "p.bin", np.float64, "w+", shape=(3,))
    m[:] = 1.0
    gm = np.memmap(tmp_path / "g.bin", np.float64, "w+", shape=(3,))
    gm[:] = 0.5
    a = np.ones(3)
    opt = fastopt.Adam([{"params": [a]}, {"params": [m]}], lr=0.1, multi_tensor=multi_tensor)
    opt.step([np.full(3, 0.5), gm], max_grad_norm=10.0, loss_scale=1.0)
    np.testing.assert_array_equal(np.asarray(m), a)


@pytest.mark.parametrize("change", ["shape", "dtype", "strides", "param shape"])
def test_state_arrays_changed_in_place_are_checked_again(change):
    """The per-step check covers the state arrays too, not only the parameters."""
    p = np.zeros(8)
    opt = fastopt.Adam([p], lr=0.1)
    opt.step([np.ones(8)])
    m = opt.state[0]["exp_avg"]
    before = p.copy()
    if change == "param shape":  # its states no longer match
        p.shape = (2, 4)
        before = p.copy()
        with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\]: array of float64 \(8,\)"):
            opt.step([np.ones(8)])
        assert np.array_equal(p, before) and opt.state[0]["step"] == 1
        return
    if change == "shape":
        m.shape = (2, 4)
    elif change == "dtype":
        m.dtype = np.int64
    else:
        with pytest.warns(DeprecationWarning):
            m.strides = (0,)  # every element aliases the first
    with pytest.raises((TypeError, ValueError), match=r"state\[0\]\['exp_avg'\]"):
        opt.step([np.ones(8)])
    assert np.array_equal(p, before) and opt.state[0]["step"] == 1


def test_a_state_added_by_hand_is_used_at_the_next_step():
    """amsgrad switched on with a hand-made max_exp_avg_sq: the kernel must use that array,
    not a stale plan in which the state was absent."""
    p, q = np.zeros(4), np.zeros(4)
    opt, ref = fastopt.Adam([p], lr=0.1), fastopt.Adam([q], lr=0.1, backend="numpy")
    g = np.linspace(-1, 1, 4)
    for o in (opt, ref):
        o.step([g])
        o.param_groups[0]["amsgrad"] = True
        o.state[0]["max_exp_avg_sq"] = np.full(4, 0.5)
        o.step([g])
    assert np.array_equal(p, q)
    assert np.array_equal(opt.state[0]["max_exp_avg_sq"], ref.state[0]["max_exp_avg_sq"])
    assert opt.state[0]["max_exp_avg_sq"].max() == 0.5


def test_changing_gradient_patterns_and_mixed_dtypes_step_like_one_call_per_tensor():
    """The launch layout kept per set of stepped tensors: None patterns that change from step
    to step, and float32/float64 tensors in one group."""
    rng = np.random.default_rng(3)
    shapes = [(5,), (3, 2), (7,), (1,), (4,)]
    dtypes = [np.float32, np.float64, np.float32, np.float64, np.float32]
    params = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    copies = [x.copy() for x in params]
    fast = fastopt.AdamW(params, lr=0.05)
    slow = fastopt.AdamW(copies, lr=0.05, multi_tensor=False)
    for mask in ([1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [0, 1, 0, 1, 0], [1, 0, 1, 0, 1],
                 [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]):
        grads = [rng.standard_normal(s).astype(d) if m else None
                 for s, d, m in zip(shapes, dtypes, mask)]
        fast.step(grads)
        slow.step(grads)
    for a, b in zip(params, copies):
        assert np.array_equal(a, b)
    assert [fast.state[i]["step"] for i in range(5)] == [slow.state[i]["step"] for i in range(5)]


def test_read_only_and_fortran_order_gradients_take_the_checked_path():
    p = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    q = np.ascontiguousarray(p)
    opt, ref = fastopt.Adam([p], lr=0.1), fastopt.Adam([q], lr=0.1)
    g = np.asfortranarray(np.full((2, 3), 0.5))
    g.flags.writeable = False
    opt.step([g])
    ref.step([np.ascontiguousarray(g)])
    assert np.array_equal(p, q)
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        opt.step([np.ones((3, 2))])
