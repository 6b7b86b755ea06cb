"""Numba CPU kernels, each generated from its algorithm's rule in kernels.rules (see generic).

These are the raw kernels: no defaults, 1-D contiguous arrays only, and one check, that no
two arrays used overlap (the return value: -1, or ``64 * i + j`` for an overlapping pair, with
nothing written; see generic). They can be called from the caller's own ``@numba.njit`` code;
see the README. ``<algorithm>_kernel(**flags,
parallel=...)`` (for example ``adam_kernel(amsgrad=False, maximize=False, weight_decay=False,
decoupled=False, parallel=False)``) returns the compiled kernel of one configuration, for every
algorithm fastopt declares: its flags are the compile-time flags of its spec, in any order.
"""

from .roofline import roofline_kernel, roofline_master_kernel


def __getattr__(name):
    if name.endswith("_kernel"):
        from ..._specs import SPECS

        spec = SPECS.get(name.removesuffix("_kernel"))
        if spec is not None:
            def factory(*, parallel, **flags):
                from ..._numba_backend import kernel

                if set(flags) != set(spec.flag_names):
                    raise TypeError(f"{name} takes the flags {', '.join(spec.flag_names)} and "
                                    f"parallel (got {', '.join(sorted(flags))})")
                return kernel(spec, tuple(bool(flags[f]) for f in spec.flag_names),
                              bool(parallel))

            factory.__name__ = factory.__qualname__ = name
            return factory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["roofline_kernel", "roofline_master_kernel"]
