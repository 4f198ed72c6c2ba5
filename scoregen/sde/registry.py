"""The registry of SDE classes: ``@register("name")`` on a class of :mod:`scoregen.sde`.

The name is written once: the decorator registers the class and sets its ``name``
attribute (the key of ``SDE.config()`` and of error messages). Every module of the
:mod:`scoregen.sde` package is imported on ``import scoregen.sde``, so a new file registers
itself with no other edit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scoregen.infra.registry import Registry

SDES: Registry[type] = Registry("SDE")


def register(name: str, **meta: Any) -> Callable[[type], type]:
    """Class decorator: register an :class:`~scoregen.sde.base.SDE` subclass as ``name``."""

    def deco(cls: type) -> type:
        cls.name = name
        return SDES.register(name, **meta)(cls)

    return deco
