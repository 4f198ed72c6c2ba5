"""SDE library: ``get("vp", beta_max=20)``, ``list()``, ``register("name")(cls)``.

Every registered SDE is a subclass of :class:`SDE`; see ``docs/adding-an-sde.md``. Each
module of this package is imported here (so a new file registers itself with no edit
here), like the samplers.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from scoregen.sde.base import SDE
from scoregen.sde.registry import SDES, register

_INFRASTRUCTURE = {"base", "registry"}
for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in _INFRASTRUCTURE and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")


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


__all__ = ["SDE", "SDES", "from_config", "get", "list", "register"]
