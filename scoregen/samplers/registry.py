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
own steps), so benchmarks compare at equal NFE and tests check the declared order, and
``requires``: the capabilities of the SDE it needs (:data:`scoregen.sde.base.CAPABILITIES`;
by default the scalar kernel ``x_t = alpha x0 + sigma eps``, which every solver written in
log-SNR or with the Gaussian posterior uses). :func:`check_applies` refuses an SDE that lacks
one, naming it; the shared test suites pair SDEs and samplers by the same declarations.
``model`` names the kind of model the sampler needs: ``denoiser`` (the default: any model
whose ``x0_hat`` is the posterior mean, what every solver of the probability-flow ODE or the
reverse SDE assumes) or ``consistency`` (a consistency function, whose ``x0_hat`` is the end
of the trajectory; :func:`check_model_kind`). ``scoregen.samplers.list()`` gives the samplers
for denoisers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scoregen.infra.registry import Registry
from scoregen.sde.base import CAPABILITIES, SCALAR_KERNEL, SDE

SamplerFn = Callable[..., Any]
SAMPLERS: Registry[SamplerFn] = Registry("sampler")


class CapabilityError(ValueError):
    """A sampler needs a capability the SDE does not offer; the message names it."""


MODEL_KINDS = ("denoiser", "consistency")


def register(
    name: str, *, order: float, stochastic: bool, nfe_per_step: int | None,
    requires: tuple[str, ...] = (SCALAR_KERNEL,), model: str = "denoiser", **meta: Any
) -> Callable[[SamplerFn], SamplerFn]:
    """Register a sampler function under ``name`` with its declared properties."""
    unknown = sorted(set(requires) - set(CAPABILITIES))
    if unknown:
        raise ValueError(f"sampler {name!r} requires unknown capabilities {unknown}; known: "
                         f"{', '.join(CAPABILITIES)}")
    if model not in MODEL_KINDS:
        raise ValueError(f"sampler {name!r}: model must be one of {', '.join(MODEL_KINDS)}, "
                         f"got {model!r}")
    return SAMPLERS.register(
        name, order=order, stochastic=stochastic, nfe_per_step=nfe_per_step,
        requires=frozenset(requires), model=model, **meta
    )


def model_kind(model: Any) -> str:
    """``consistency`` for a consistency function (a model with ``consistency = True``),
    else ``denoiser``."""
    return "consistency" if getattr(model, "consistency", False) else "denoiser"


def check_model_kind(name: str, model: Any) -> None:
    """Refuse a denoiser for a sampler that needs a consistency function."""
    needs = SAMPLERS.meta(name).get("model", "denoiser")
    if needs == "consistency" and model_kind(model) != "consistency":
        raise ValueError(f"sampler {name!r} needs a consistency function (a model with a "
                         "consistency parameterization, e.g. a student of `scoregen distill "
                         "--method consistency`); this model is a denoiser: sample it with "
                         "one of scoregen.samplers.list()")


def missing(name: str, sde: SDE) -> list[str]:
    """The capabilities sampler ``name`` requires that ``sde`` does not offer (sorted)."""
    return sorted(SAMPLERS.meta(name)["requires"] - sde.capabilities)


def applicable(sde: SDE, model: str | None = "denoiser") -> list[str]:
    """The registered samplers that run on ``sde`` for a kind of model (``denoiser``, the
    default; ``consistency``; ``None``: every kind)."""
    return [name for name in SAMPLERS.list() if not missing(name, sde)
            and (model is None or SAMPLERS.meta(name).get("model", "denoiser") == model)]


def check_applies(name: str, sde: SDE) -> None:
    """Raise :class:`CapabilityError` unless sampler ``name`` runs on ``sde``."""
    lacking = missing(name, sde)
    if lacking:
        what = "; ".join(f"{c}: {CAPABILITIES[c]}" for c in lacking)
        raise CapabilityError(
            f"sampler {name!r} needs what the SDE {sde.name!r} does not offer ({what}); "
            f"samplers that run on {sde.name!r}: {', '.join(applicable(sde)) or '(none)'}")
