"""Peer libraries' samplers run on scoregen's problems, for side-by-side comparison.

Each peer sampler is registered here by name (``diffusers/ddim``, ``k-diffusion/euler``,
...) with its library, declared NFE per step and whether it is stochastic, and runs through
the same ``draw(model, sde, x_T, setting, seed) -> (x, counted NFE)`` signature as
scoregen's own samplers (:class:`scoregen.evaluation.compare.Method`): same start ``x_T``,
same model (the exact oracle or a trained network), NFE counted by
:class:`scoregen.sampling.denoiser.Denoiser`.

The libraries are optional (``pip install diffusers torchsde`` and ``pip install --no-deps
k-diffusion``). Nothing is imported until a peer runs; :func:`peer_methods` returns the
runnable peers and one line per library or sampler that cannot run, saying why.
"""

from __future__ import annotations

from scoregen.evaluation.peers import diffusers_schedulers, kdiffusion  # (they register)
from scoregen.evaluation.peers.registry import (
    LOADERS,
    PEERS,
    PeerSampler,
    PeerUnavailableError,
    list,
    peer_methods,
    register_peer,
    unavailable,
)

__all__ = ["LOADERS", "PEERS", "PeerSampler", "PeerUnavailableError", "diffusers_schedulers",
           "kdiffusion", "list", "peer_methods", "register_peer", "unavailable"]
