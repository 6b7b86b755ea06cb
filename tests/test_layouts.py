"""Memory layouts: dense arrays with one shared layout are updated as flat memory, in the
functional API, the optimizer classes and fastopt.torch; anything else is rejected, unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from algorithms import ALGORITHMS, Problem, assert_close

SHAPE = (24, 37)  # 888 elements: odd, not a multiple of any vector width


def _fortran(a):
    return np.asfortranarray(a)


def _transposed(a):
    return np.ascontiguousarray(a.T).T  # Fortran-like strides by transposition


def _reversed(a):
    return np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1]  # negative strides


def _channels_last(a):
    b = a.reshape(2, 3, 4, 37)  # NCHW -> NHWC memory
    return np.ascontiguousarray(b.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


LAYOUTS = {"fortran": _fortran, "transposed": _transposed, "reversed": _reversed,
           "channels_last": _channels_last}


def _shaped(layout, a):
    if layout == "channels_last":
        a = a.reshape(2, 3, 4, 37)
    return LAYOUTS[layout](a)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("algo", ALGORITHMS, ids=lambda a: a.name)
def test_dense_layouts_match_the_contiguous_update(algo, backend, layout):
    options = algo.option_sets[-1]
    prob = Problem(algo, options, SHAPE, np.float32, seed=1)
    ref = prob.copy()
    mine = prob.copy()
    mine.param = _shaped(layout, mine.param)
    mine.state = {k: None if v is None else _shaped(layout, v) for k, v in mine.state.items()}
    assert not mine.param.flags.c_contiguous
    for t in range(1, 4):
        g = prob.grad()
        ref.step_reference(g, t)
        mine.step(_shaped(layout, g), t, backend)
    got = {k: np.ascontiguousarray(v).reshape(SHAPE) for k, v in mine.arrays().items()}
    assert_close(got, ref.arrays(), np.float32)


def test_mixed_layouts_and_gappy_arrays_are_rejected_unchanged():
    p = np.asfortranarray(np.ones(SHAPE, np.float32))
    g = np.ones(SHAPE, np.float32)  # C order: another layout than p
    m, v = np.zeros_like(p), np.zeros_like(p)
    with pytest.raises(ValueError, match=r"Invalid grad: strides \(148, 4\) differ from "
                                         r"param's \(4, 96\)"):
        fastopt.adam_step(p, g, m, v, step=1)
    with pytest.raises(ValueError, match="Invalid exp_avg: strides"):
        fastopt.adam_step(p, np.asfortranarray(g), np.zeros(SHAPE, np.float32), v, step=1)
    wide = np.ones((24, 74), np.float32)
    with pytest.raises(ValueError, match="Invalid param: array with gaps"):
        fastopt.adam_step(wide[:, ::2], g, np.zeros(SHAPE, np.float32),
                          np.zeros(SHAPE, np.float32), step=1)
    assert (p == 1).all() and (m == 0).all() and (v == 0).all() and (wide == 1).all()
