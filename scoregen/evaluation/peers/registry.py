"""The registry of peer samplers and what they share (see :mod:`scoregen.evaluation.peers`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scoregen.evaluation.compare import DrawFn, Method
from scoregen.infra.registry import Registry
from scoregen.sde.base import SDE


class PeerUnavailableError(ImportError):
    """A peer library is missing or does not import; the message says how to install it."""


@dataclass(frozen=True)
class PeerSampler:
    """A peer sampler: ``draw`` as in :class:`scoregen.evaluation.compare.Method`; ``supports(sde)``
    returns why it cannot run on ``sde`` (``None`` if it can)."""

    name: str
    library: str
    nfe_per_step: int | None
    stochastic: bool
    draw: DrawFn
    supports: Callable[[SDE], str | None]


PEERS: Registry[PeerSampler] = Registry("peer sampler")
LOADERS: dict[str, Callable[[], object]] = {}


def register_peer(peer: PeerSampler) -> PeerSampler:
    PEERS.register(peer.name)(peer)
    return peer


def unavailable(library: str) -> str | None:
    """Why ``library`` cannot be used here, or ``None`` when it loads."""
    try:
        LOADERS[library]()
    except PeerUnavailableError as err:
        return str(err)
    return None


def list() -> list[str]:
    """Names of all registered peer samplers (whether or not their library is installed)."""
    return PEERS.list()


def peer_methods(names: Sequence[str] | None, sde: SDE) -> tuple[list[Method], list[str]]:
    """The runnable peers among ``names`` (default: all) on ``sde``, and one message per
    library or sampler left out."""
    methods, messages, reasons = [], [], {}
    for name in names or list():
        peer = PEERS.get(name)
        if peer.library not in reasons:
            reasons[peer.library] = unavailable(peer.library)
            if reasons[peer.library]:
                messages.append(f"peers: {peer.library} unavailable, running without it: "
                                f"{reasons[peer.library]}")
        if reasons[peer.library]:
            continue
        why = peer.supports(sde)
        if why:
            message = f"peers: {peer.library}: {why}"
            if message not in messages:
                messages.append(message)
            continue
        methods.append(Method(peer.name, peer.library, peer.nfe_per_step, peer.stochastic,
                              peer.draw))
    return methods, messages

