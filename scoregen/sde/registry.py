"""The registry of SDE classes (filled by ``@register("name")``)."""

from __future__ import annotations

from scoregen.infra.registry import Registry

SDES: Registry[type] = Registry("SDE")
register = SDES.register
