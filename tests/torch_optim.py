"""Map the test table's option sets onto torch.optim (used only where torch is importable)."""

from __future__ import annotations

from typing import Any

import numpy as np


# fastopt keeps torch's state names, except Adagrad's "sum", which would shadow a builtin.
TORCH_STATE_NAMES = {"state_sum": "sum"}


def torch_kwargs(algo: Any, options: dict[str, Any]) -> dict[str, Any]:
    kw = dict(options)
    if "beta1" in kw or "beta2" in kw:
        kw["betas"] = (kw.pop("beta1", 0.9), kw.pop("beta2", 0.999))
    return kw


def make_torch_optimizer(algo: Any, options: dict[str, Any], params: list[Any]) -> Any:
    import torch

    cls = getattr(torch.optim, algo.torch_name)
    # foreach=False: torch's documented single-tensor loop, the algorithm the reference follows.
    return cls(params, foreach=False, **torch_kwargs(algo, options))


def torch_state(algo: Any, options: dict[str, Any], opt: Any, p: Any) -> dict[str, np.ndarray]:
    """The optimizer state of ``p`` under fastopt's state names (only the active ones)."""
    st = opt.state[p]
    return {name: st[TORCH_STATE_NAMES.get(name, name)].detach().numpy().copy()
            for name in algo.active_states(options)}
