"""Regenerate tests/golden/trajectories.npz from torch.optim (needs torch; run by hand).

    python tests/make_golden.py

For every algorithm and option set of the test table, and every boundary case (hyperparameters
at 0, extreme but finite gradients), float32 and float64, it runs torch.optim's
single-tensor ("for-loop") implementation for STEPS steps from a seeded parameter and seeded
gradients and records the parameter and the state after every step, and the scalar states
(NAdam's mu_product, ASGD's eta and mu). float64 cases run with torch's default dtype set to
float64, so torch keeps those scalar states in float64 too (fastopt keeps them in the
parameters' dtype).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from algorithms import boundary_cases, boundary_id, case_id, cases  # noqa: E402
from torch_optim import make_torch_optimizer, torch_state  # noqa: E402

SIZE = 13
STEPS = 12
OUT = os.path.join(os.path.dirname(__file__), "golden", "trajectories.npz")


def main() -> None:
    data: dict[str, np.ndarray] = {}
    table = [(algo, options, 1.0, case_id((algo, options))) for algo, options in cases()]
    table += [(*case, boundary_id(case)) for case in boundary_cases()]
    for algo, options, scale, name in table:
        for dtype in (np.float32, np.float64):
            key = f"{name}|{np.dtype(dtype).name}"
            rng = np.random.default_rng(1234)
            param0 = rng.standard_normal(SIZE).astype(dtype)
            grads = (rng.standard_normal((STEPS, SIZE)) * scale).astype(dtype)
            torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
            p = torch.nn.Parameter(torch.from_numpy(param0.copy()))
            opt = make_torch_optimizer(algo, options, [p])
            params, states, scalars = [], [], []
            for t in range(STEPS):
                p.grad = torch.from_numpy(grads[t].copy())
                opt.step()
                params.append(p.detach().numpy().copy())
                st = torch_state(algo, options, opt, p)
                states.append(np.stack([st[n] for n in sorted(st)]) if st else
                              np.zeros((0, SIZE), dtype))
                scalars.append([opt.state[p][n].item() for n in algo.spec.scalar_names])
            torch.set_default_dtype(torch.float32)
            data[key + "|param0"] = param0
            data[key + "|grads"] = grads
            data[key + "|params"] = np.stack(params)
            data[key + "|states"] = np.stack(states)
            data[key + "|scalars"] = np.array(scalars, np.float64).reshape(STEPS, -1)
    np.savez_compressed(OUT, torch_version=np.array(torch.__version__), **data)
    print(f"wrote {len(data) // 5} trajectories to {OUT} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
