"""Same-traffic reference kernel on the GPU: the roofline a fused update is measured against.

``roofline_kernel(n_state)[blocks, threads](param, grad, s0, s1, s2)`` reads param, grad and
the first ``n_state`` state arrays once and writes param and those states once, one add per
written element: the traffic of an optimizer step and nothing else (unused states may be any
array; they are not touched).
"""

from numba import cuda

from ._common import compile_kernel, kernel_factory


@kernel_factory
def roofline_kernel(n_state):
    if n_state not in (0, 1, 2, 3):
        raise ValueError(f"Invalid n_state: {n_state!r} (expected 0, 1, 2 or 3)")

    def roofline(param, grad, s0, s1, s2):
        for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
            g = grad[i]
            param[i] = param[i] + g
            if n_state > 0:
                s0[i] = s0[i] + g
            if n_state > 1:
                s1[i] = s1[i] + g
            if n_state > 2:
                s2[i] = s2[i] + g

    return compile_kernel(roofline)
