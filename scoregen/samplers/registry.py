"""The sampler registry and the signature every registered sampler follows.

A sampler is a pure function over a descending time grid (Karras et al. 2022 / k-diffusion
style)::

    fn(denoiser, sde, x, ts, *, noise, callback, **opts) -> x  (or (x, info: dict))

- ``denoiser``: :class:`scoregen.sampling.denoiser.Denoiser`; ``denoiser(x, t)`` returns the pair
  ``(x0_hat, eps_hat)`` and counts NFE.
- ``ts``: float64 tensor, strictly decreasing, ``ts[0] <= T``. When ``ts[-1] == 0`` the last
  interval is the final denoising step: the sampler returns ``x0_hat`` at ``ts[-2]`` (the
  exact limit of every exponential-integrator step at ``sigma = 0``).
- ``noise()``: the next standard-normal draw ``(B, *D)``, per-sample reproducible.
- ``callback(i, t, x)``: called after step ``i`` (progress bars, tracing).

Registration declares ``order`` (of convergence of the deterministic error, or strong order
for SDE solvers), ``stochastic`` and ``nfe_per_step`` (``None`` when the solver chooses its
own steps), so benchmarks compare at equal NFE and tests check the declared order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scoregen.infra.registry import Registry

SamplerFn = Callable[..., Any]
SAMPLERS: Registry[SamplerFn] = Registry("sampler")


def register(
    name: str, *, order: float, stochastic: bool, nfe_per_step: int | None, **meta: Any
) -> Callable[[SamplerFn], SamplerFn]:
    """Register a sampler function under ``name`` with its declared properties."""
    return SAMPLERS.register(
        name, order=order, stochastic=stochastic, nfe_per_step=nfe_per_step, **meta
    )
