"""Shared helpers of the sampler suites: the exact oracle and a high-accuracy ODE reference."""

from __future__ import annotations

import math
from functools import cache

import torch

import scoregen
from scoregen import sde as sde_lib
from scoregen.models import analytic
from scoregen.sampling.noise import NoiseSource, seeds_for

MIXTURE = analytic.preset("ring8")
# ring8 laid out as 1x2 images, for processes on images only (blurring diffusion)
IMAGE_MIXTURE = analytic.GaussianMixture(MIXTURE.means, MIXTURE.covariances(), shape=(1, 1, 2))


def mixture_for(sde) -> analytic.GaussianMixture:
    """ring8, as vectors where the process takes them, else as 1x2 images."""
    try:
        sde.state_shape(MIXTURE.shape)
    except ValueError:
        return IMAGE_MIXTURE
    return MIXTURE


def spacing_for(sde, spacing: str = "edm") -> str:
    """``spacing`` on a scalar kernel, else the process's own default grid."""
    return spacing if "scalar_kernel" in sde.capabilities else "auto"


# the order tests per process: (steps, 2 * steps), the grid, and the error statistic; on
# processes stepped in t a few samples near a separatrix of the flow change mode at coarse
# steps, so the median error is the one with the method's order there
ORDER_SETTINGS = {
    "vp": ((40, 80), "logsnr", "max"),
    "ve": ((40, 80), "logsnr", "max"),
    "vdm": ((40, 80), "logsnr", "max"),
    "blur": ((40, 80), "uniform", "median"),
    "cld": ((160, 320), "quadratic", "median"),
}


def sampler_sde_pairs(names: list[str] | None = None) -> list[tuple[str, str]]:
    """``(sampler, sde)`` for every registered sampler and every registered SDE that offers
    what the sampler declares it requires (``requires``): the pairs the shared suites test."""
    return [(name, sde_name) for name in (names or scoregen.samplers.list())
            for sde_name in sde_lib.list()
            if not scoregen.samplers.missing(name, sde_lib.get(sde_name))]


def samplers_for(sde_name: str) -> list[str]:
    """The registered samplers that run on the SDE ``sde_name`` (what it offers covers what
    they require)."""
    sde = sde_lib.get(sde_name)
    return [name for name in scoregen.samplers.list() if not scoregen.samplers.missing(name, sde)]


def takes_option(name: str, option: str) -> bool:
    """Whether sampler ``name`` has the keyword option ``option`` (e.g. ``final``)."""
    import inspect

    return option in inspect.signature(scoregen.samplers.get(name)).parameters


@cache
def pf_ode_reference(sde_name: str):
    """``(sde, x_T, x_ref)``: the probability-flow ODE solved from ``x_T`` (32 samples) to
    ``t_min`` by dopri5 at ``rtol = atol = 1e-11`` in float64."""
    sde = sde_lib.get(sde_name)
    mix = mixture_for(sde)
    x_T = sde.prior_from_normal(
        NoiseSource(seeds_for(32, 7), sde.state_shape(mix.shape), torch.float64).draw(0))
    ts = torch.tensor([sde.T, sde.t_min], dtype=torch.float64)
    tol = 1e-11 if "scalar_kernel" in sde.capabilities else 1e-10  # in t: costlier
    ref = scoregen.sample(mix.model(sde), sde, x_T, "ode_dopri5", None, ts=ts,
                          rtol=tol, atol=tol)
    return sde, x_T, ref.x


def order_slope(name: str, sde_name: str, steps: tuple[int, int] | None = None
                ) -> tuple[float, list[float]]:
    """``log2`` of the endpoint-error ratio between ``steps[0]`` and ``steps[1] = 2 steps[0]``
    steps of the process's order-test grid (:data:`ORDER_SETTINGS`: log-SNR-uniform on scalar
    kernels; no final denoising), against :func:`pf_ode_reference`."""
    default_steps, spacing, statistic = ORDER_SETTINGS.get(sde_name, ((40, 80), "logsnr", "max"))
    sde, x_T, ref = pf_ode_reference(sde_name)
    errors = []
    for n in steps or default_steps:
        out = scoregen.sample(mixture_for(sde).model(sde), sde, x_T, name, n, spacing=spacing,
                              denoise=False)
        err = (out.x - ref).flatten(1)
        errors.append(err.abs().max().item() if statistic == "max"
                      else err.norm(dim=1).median().item())
    return math.log2(errors[0] / errors[1]), errors


@cache
def smooth_reference():
    """``(sde, model, x_T, x_ref)``: VP, ring8 with std 0.3 (asymptotic orders from about 20
    steps), 24 starts, and the probability-flow ODE solved to ``t_min`` by torchdiffeq's
    dopri5 at ``rtol = atol = 1e-10`` in float64 (independent of the solvers under test)."""
    from torchdiffeq import odeint

    from scoregen.sampling.denoiser import Denoiser

    sde = sde_lib.get("vp")
    model = analytic.preset("ring8", std=0.3).model(sde)
    x_T = torch.randn(24, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    den = Denoiser(model, sde)

    def drift(t, x):
        return sde.ode_drift(x, t, sde.score_from_eps(den(x, t).eps, t))

    span = torch.tensor([sde.T, sde.t_min], dtype=torch.float64)
    ref = odeint(drift, x_T, span, method="dopri5", rtol=1e-10, atol=1e-10,
                 options={"first_step": 1e-4, "step_t": span[1:]})[-1]
    return sde, model, x_T, ref


class CountingModel:
    """Wraps a model and counts calls independently of the sampler framework."""

    def __init__(self, model) -> None:
        self.model, self.prediction, self.sde, self.calls = model, model.prediction, model.sde, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.model(x, t)
