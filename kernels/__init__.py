"""fastopt's kernels: the per-element rules and every backend's compiled loops.

Installed as ``fastopt.kernels``. ``rules`` is plain Python; ``cpu`` needs Numba.
"""
