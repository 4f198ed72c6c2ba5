"""An SDE from one string with its parameters: ``"ve:sigma_min=0.002,sigma_max=80"``.

``from_spec("vp")`` is ``get("vp")``; ``from_spec("ve:sigma_min=0.002,sigma_max=80")`` is
``get("ve", sigma_min=0.002, sigma_max=80)`` (the EDM noise range), the form every ``--sde``
option of the command line takes (:mod:`scoregen.infra.spec` for the syntax). A misspelt
parameter is an error that lists the process's parameters.
"""

from __future__ import annotations

from scoregen.infra.spec import build_spec
from scoregen.sde.base import SDE
from scoregen.sde.registry import SDES

EXAMPLE = "ve:sigma_min=0.002,sigma_max=80"


def from_spec(spec: str | SDE) -> SDE:
    """The SDE named by ``spec`` (``NAME`` or ``NAME:KEY=VALUE,...``); an SDE is returned as
    is. Errors (:class:`scoregen.infra.spec.SpecError`, a ``ValueError``) name the problem
    and show the syntax."""
    if isinstance(spec, SDE):
        return spec
    return build_spec(spec, SDES.get, "SDE", EXAMPLE)


def describe(sde: SDE) -> str:
    """``name`` or ``name:key=value,...`` with the parameters that differ from the defaults:
    the spec that rebuilds ``sde`` (for titles and tables)."""
    default = type(sde)().params()
    changed = {k: v for k, v in sde.params().items() if default.get(k) != v}
    return sde.name + (":" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in changed.items()) if changed else "")


__all__ = ["EXAMPLE", "describe", "from_spec"]
