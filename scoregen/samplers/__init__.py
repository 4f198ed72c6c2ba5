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
    MODEL_KINDS,
    SAMPLERS,
    CapabilityError,
    applicable,
    check_applies,
    check_model_kind,
    missing,
    model_kind,
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


def list(model: str | None = "denoiser") -> list[str]:
    """Names of the registered samplers for a kind of model: ``denoiser`` (the default; what
    sweeps and suites run on any model), ``consistency`` (samplers of consistency functions),
    or ``None`` for every one."""
    if model is not None and model not in MODEL_KINDS:
        raise ValueError(f"model must be one of {', '.join(MODEL_KINDS)} or None, got {model!r}")
    return [n for n in SAMPLERS.list()
            if model is None or SAMPLERS.meta(n).get("model", "denoiser") == model]


__all__ = [
    "MODEL_KINDS",
    "SAMPLERS",
    "CapabilityError",
    "applicable",
    "check_applies",
    "check_model_kind",
    "get",
    "list",
    "meta",
    "missing",
    "model_kind",
    "register",
]
