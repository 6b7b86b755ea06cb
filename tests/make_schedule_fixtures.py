"""Regenerate tests/golden/schedules.json from torch.optim.lr_scheduler and transformers
(needs torch and transformers; run by hand):

    python tests/make_schedule_fixtures.py

For every case of tests/schedule_cases.py: an optimizer with two groups (lr 0.1 and 0.01; SGD
with momentum, or Adam), the oracle's scheduler stepped ``steps`` times, and every group's lr
(and momentum or beta1 for the cycling schedules) after construction and after each step.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(__file__))
from schedule_cases import CASES  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "golden", "schedules.json")


def optimizer(kind: str) -> torch.optim.Optimizer:
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    groups = [{"params": [a]}, {"params": [b], "lr": 0.01}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    return torch.optim.Adam(groups, lr=0.1)


def momentum(opt: torch.optim.Optimizer) -> list[float]:
    return [float(g["betas"][0] if "betas" in g else g["momentum"]) for g in opt.param_groups]


def main() -> None:
    import transformers

    out: dict[str, object] = {"torch": torch.__version__, "transformers": transformers.__version__}
    for case in CASES:
        opt = optimizer(case.optimizer)
        sched = case.oracle(opt)
        lrs, moms = [], []
        for t in range(case.steps + 1):
            if t:
                opt.step()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sched.step()
            lrs.append([float(g["lr"]) for g in opt.param_groups])
            moms.append(momentum(opt))
        out[case.id] = {"lr": lrs, "momentum": moms}
    with open(OUT, "w") as f:
        json.dump(out, f, indent=0)
    print(f"wrote {len(CASES)} schedules to {OUT}")


if __name__ == "__main__":
    main()
