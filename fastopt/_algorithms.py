"""The table of algorithms, derived from the specs: each one's public function and states."""

from __future__ import annotations

from typing import Any, Callable

from . import _functional
from ._specs import SPECS

# Each algorithm's public function and its state names in call order.
ALGORITHMS: dict[str, tuple[Callable[..., None], tuple[str, ...]]] = {
    name: (getattr(_functional, spec.fn_name), spec.state_names) for name, spec in SPECS.items()
}


def active_states(algorithm: str, options: dict[str, Any]) -> tuple[str, ...]:
    """The state arrays ``algorithm`` uses with ``options`` (functional-API names), in order.
    Options left out take their defaults."""
    spec = SPECS[algorithm]
    return spec.active_states({**spec.defaults(), **options})
