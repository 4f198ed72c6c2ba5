"""SDE library: ``get("vp", beta_max=20)``, ``list()``, ``register("name")(cls)``.

Every registered SDE is a subclass of :class:`SDE`; see ``docs/adding-an-sde.md``.
"""

from __future__ import annotations

from typing import Any

from scoregen.sde.base import SDE
from scoregen.sde.ddpm import DiscreteVPSDE, linear_betas
from scoregen.sde.linear import LinearSDE
from scoregen.sde.registry import SDES, register
from scoregen.sde.subvp import SubVPSDE
from scoregen.sde.ve import VESDE
from scoregen.sde.vp import VPSDE, CosineVPSDE, VariancePreserving


def get(name: str, **kwargs: Any) -> SDE:
    """Build the SDE registered as ``name`` with constructor arguments ``kwargs``."""
    cls = SDES.get(name)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise TypeError(f"bad arguments for SDE {name!r}: {err}") from None


def list() -> list[str]:
    """Names of all registered SDEs."""
    return SDES.list()


def from_config(config: dict[str, Any]) -> SDE:
    """Inverse of :meth:`SDE.config`: ``{"name": "vp", "beta_max": 20, ...}`` -> SDE."""
    if "name" not in config:
        raise ValueError(f"SDE config needs a 'name' key (one of {SDES.list()}), got {config}")
    kwargs = {k: v for k, v in config.items() if k != "name"}
    return get(config["name"], **kwargs)


__all__ = [
    "SDE",
    "SDES",
    "VESDE",
    "VPSDE",
    "CosineVPSDE",
    "DiscreteVPSDE",
    "LinearSDE",
    "SubVPSDE",
    "VariancePreserving",
    "from_config",
    "get",
    "linear_betas",
    "list",
    "register",
]
