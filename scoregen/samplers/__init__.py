"""Registered samplers: ``scoregen.samplers.list()``, ``get(name)``, ``meta(name)``.

Each sampler is one module in this package; importing the package imports every module
in it (so a new file registers itself with no edit here). See ``docs/adding-a-sampler.md``
and :mod:`scoregen.samplers.registry` for the contract.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from scoregen.samplers.registry import (
    SAMPLERS,
    CapabilityError,
    applicable,
    check_applies,
    missing,
    register,
)

_INFRASTRUCTURE = {"registry"}
for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in _INFRASTRUCTURE and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")


def get(name: str) -> Any:
    """The sampler function registered as ``name``."""
    return SAMPLERS.get(name)


def meta(name: str) -> dict[str, Any]:
    """Declared ``order``, ``stochastic``, ``nfe_per_step`` and ``requires`` of a sampler."""
    return SAMPLERS.meta(name)


def list() -> list[str]:
    """Names of all registered samplers."""
    return SAMPLERS.list()


__all__ = [
    "SAMPLERS",
    "CapabilityError",
    "applicable",
    "check_applies",
    "get",
    "list",
    "meta",
    "missing",
    "register",
]
