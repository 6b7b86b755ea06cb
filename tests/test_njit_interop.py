"""The raw CPU kernels called from the user's own @numba.njit code (the README example)."""

import numba
import numpy as np

import fastopt
from fastopt.kernels.cpu import adam_kernel, sgd_kernel

adam = adam_kernel(amsgrad=False, maximize=False, weight_decay=False, decoupled=False,
                   parallel=False)
sgd = sgd_kernel(momentum=True, nesterov=True, maximize=False, weight_decay=False,
                 parallel=False)


@numba.njit
def fit_quadratic(p, target, m, v, steps):
    """Minimise 0.5 * ||p - target||^2 with Adam, never leaving compiled code."""
    g = np.empty_like(p)
    for t in range(1, steps + 1):
        for i in range(p.size):
            g[i] = p[i] - target[i]
        adam(p, g, m, v, v, t, 0.05, 0.9, 0.999, 1e-8, 0.0)


def test_user_njit_loop_matches_the_api():
    rng = np.random.default_rng(0)
    target = rng.standard_normal(100)
    p0 = rng.standard_normal(100)

    p, m, v = p0.copy(), np.zeros(100), np.zeros(100)
    fit_quadratic(p, target, m, v, 300)

    q, mq, vq = p0.copy(), np.zeros(100), np.zeros(100)
    for t in range(1, 301):
        fastopt.adam_step(q, q - target, mq, vq, step=t, lr=0.05)

    np.testing.assert_array_equal(p, q)
    assert np.abs(p - target).max() < 1e-2  # and it actually optimised


@numba.njit
def nesterov_loop(p, buf, steps):
    g = np.empty_like(p)
    for t in range(1, steps + 1):
        g[:] = 2.0 * p
        sgd(p, g, buf, t, 0.1, 0.9, 0.0, 0.0)


def test_user_njit_sgd_nesterov_matches_the_reference():
    p = np.linspace(-1, 1, 33, dtype=np.float32)
    q, buf, qbuf = p.copy(), np.zeros_like(p), np.zeros_like(p)
    nesterov_loop(p, buf, 10)
    for t in range(1, 11):
        fastopt.reference.sgd(q, 2 * q, qbuf, step=t, lr=0.1, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-7)


@numba.njit
def adam_once(p, g, m, v):
    return adam(p, g, m, v, v, 1, 0.05, 0.9, 0.999, 1e-8, 0.0)


def test_a_raw_kernel_refuses_overlapping_arrays_before_writing():
    rng = np.random.default_rng(1)
    buf = rng.standard_normal(150)
    p, g, v = buf[:100], rng.standard_normal(100), np.zeros(100)
    m = buf[50:]  # overlaps p: pair (param, exp_avg) = (0, 2)
    before = buf.copy()
    assert adam_once(p, g, m, v) == 64 * 0 + 2
    np.testing.assert_array_equal(buf, before)
    assert adam_once(p, g, np.zeros(100), v) == -1  # v twice: the unused slot is not checked
    assert not np.array_equal(buf[:100], before[:100])
