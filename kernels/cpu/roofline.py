"""Same-traffic reference kernels: the memory roofline a fused update is measured against.

``roofline_kernel(n_state, parallel)(param, grad, states)`` reads param, grad and every state
array once and writes param and the states once, with one add per written element and no other
arithmetic: the traffic of an optimizer step with ``n_state`` state arrays, and nothing else.
"""

from ._common import compile_kernel, kernel_factory, loop_for


@kernel_factory
def roofline_kernel(n_state, parallel):
    loop = loop_for(parallel)
    if n_state == 0:
        def roofline(param, grad, states):
            for i in loop(param.size):
                param[i] = param[i] + grad[i]
    elif n_state == 1:
        def roofline(param, grad, states):
            s0 = states[0]
            for i in loop(param.size):
                g = grad[i]
                param[i] = param[i] + g
                s0[i] = s0[i] + g
    elif n_state == 2:
        def roofline(param, grad, states):
            s0, s1 = states[0], states[1]
            for i in loop(param.size):
                g = grad[i]
                param[i] = param[i] + g
                s0[i] = s0[i] + g
                s1[i] = s1[i] + g
    elif n_state == 3:
        def roofline(param, grad, states):
            s0, s1, s2 = states[0], states[1], states[2]
            for i in loop(param.size):
                g = grad[i]
                param[i] = param[i] + g
                s0[i] = s0[i] + g
                s1[i] = s1[i] + g
                s2[i] = s2[i] + g
    else:
        raise ValueError(f"Invalid n_state: {n_state!r} (expected 0, 1, 2 or 3)")
    return compile_kernel(roofline, parallel)


@kernel_factory
def roofline_master_kernel(parallel):
    """``kernel(master, grad, states, param)``: the traffic of a step with master weights and
    two states -- master, grad and the states read, master and the states written, and
    ``param`` (the rounded copy) written only."""
    loop = loop_for(parallel)

    def roofline_master(master, grad, states, param):
        s0, s1 = states[0], states[1]
        for i in loop(master.size):
            g = grad[i]
            x = master[i] + g
            master[i] = x
            param[i] = x
            s0[i] = s0[i] + g
            s1[i] = s1[i] + g

    return compile_kernel(roofline_master, parallel)
