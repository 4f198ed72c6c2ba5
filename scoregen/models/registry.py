"""The network registry ``NETWORKS`` and :func:`build_network`.

A network is an ``nn.Module`` built as ``cls(shape, **kwargs)`` and called as
``net(x_in: (B, *shape), c_noise: (B,)) -> (B, *shape)``; it knows nothing about SDEs
(the :class:`~scoregen.models.score_model.ScoreModel` wrapper does the scaling).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from scoregen.infra.registry import Registry

NETWORKS: Registry[type] = Registry("network")
register = NETWORKS.register


def network_options(name: str) -> dict[str, Any]:
    """Constructor keyword arguments of network ``name`` (except ``shape``) and defaults."""
    sig = inspect.signature(NETWORKS.get(name).__init__)
    return {
        k: p.default for k, p in sig.parameters.items()
        if k not in ("self", "shape") and p.kind is p.POSITIONAL_OR_KEYWORD
    }


def build_network(name: str, shape: tuple[int, ...] | list[int], **kwargs: Any) -> nn.Module:
    """Build network ``name`` for samples of event shape ``shape``.

    The result carries ``spec = {"name", "shape", **kwargs}``, which rebuilds it (stored in
    checkpoints). Unknown keyword arguments raise a ``ValueError`` listing the known ones.
    """
    known = network_options(name)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for network {name!r}; "
            f"known: {', '.join(sorted(known))}"
        )
    net = NETWORKS.get(name)(tuple(shape), **kwargs)
    net.spec = {"name": name, "shape": list(shape), **kwargs}
    return net
