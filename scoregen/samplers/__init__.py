"""Registered samplers: ``scoregen.samplers.list()``, ``get(name)``, ``meta(name)``.

Each sampler is one module here; importing this package registers them all. See
``docs/adding-a-sampler.md`` and :mod:`scoregen.samplers.registry` for the contract.
"""

from __future__ import annotations

from typing import Any

from scoregen.samplers import ddim  # noqa: F401  (registers)
from scoregen.samplers.grid import SPACINGS, check_grid, time_grid
from scoregen.samplers.registry import SAMPLERS, register


def get(name: str) -> Any:
    """The sampler function registered as ``name``."""
    return SAMPLERS.get(name)


def meta(name: str) -> dict[str, Any]:
    """Declared ``order``, ``stochastic`` and ``nfe_per_step`` of a sampler."""
    return SAMPLERS.meta(name)


def list() -> list[str]:
    """Names of all registered samplers."""
    return SAMPLERS.list()


__all__ = ["SAMPLERS", "SPACINGS", "check_grid", "get", "list", "meta", "register", "time_grid"]
