"""k-diffusion samplers driven by a scoregen model through the VE-equivalent parametrisation.

Every scoregen SDE has ``x_t = alpha x0 + sigma eps``; dividing by ``alpha`` gives the
variance-exploding form of Karras et al. 2022 (sec. 2, eq. 4 with ``s(t) = alpha``):

    x_edm = x / alpha,      sigma_edm = sigma / alpha = exp(-lambda),
    D(x_edm, sigma_edm) = x0_hat(alpha(t) x_edm, t),   t = t(lambda = -log sigma_edm).

k-diffusion's samplers integrate in ``(x_edm, sigma_edm)`` with ``D``. The grid is
``get_sigmas_karras(n, sigma_min, sigma_max, rho=7)`` over the SDE's range (``sigma_edm`` at
``t_min`` and ``T``) followed by 0, i.e. scoregen's ``edm`` spacing; the start is scoregen's
``x_T / alpha(T)``. ``sample_dpm_adaptive`` stops at ``sigma_min``; a final counted
denoising step ``x0_hat`` follows it, as in every scoregen sampler. Its tolerance sets
``rtol = tol`` and ``atol = 0.156 tol`` (k-diffusion's default ratio 0.0078 / 0.05).

k-diffusion's package ``__init__`` imports torchvision, kornia, scikit-image, wandb and
more. When that fails, only ``k_diffusion/sampling.py`` is loaded from the installed file,
with its one helper from ``k_diffusion.utils`` (``append_dims``) supplied here; it needs
``torchsde`` at import time.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

import torch
from torch import Tensor

from scoregen.evaluation.peers.registry import (
    LOADERS,
    PeerSampler,
    PeerUnavailableError,
    register_peer,
)
from scoregen.infra.shape import bcast
from scoregen.sampling.denoiser import Denoiser
from scoregen.sde.base import SCALAR_KERNEL, SDE

LIBRARY = "k-diffusion"
_STANDALONE = "_scoregen_k_diffusion"

# name: (function in k_diffusion.sampling, NFE per step (None: adaptive), stochastic)
SAMPLERS: dict[str, tuple[str, int | None, bool]] = {
    "euler": ("sample_euler", 1, False),
    "heun": ("sample_heun", 2, False),
    "dpm_2": ("sample_dpm_2", 2, False),
    "dpmpp_2m": ("sample_dpmpp_2m", 1, False),
    "lms": ("sample_lms", 1, False),
    "euler_ancestral": ("sample_euler_ancestral", 1, True),
    "dpm_adaptive": ("sample_dpm_adaptive", None, False),
}
ATOL_PER_RTOL = 0.0078 / 0.05


def _append_dims(x: Tensor, target_dims: int) -> Tensor:
    """``x`` with trailing singleton dimensions up to ``target_dims`` (k_diffusion.utils)."""
    if x.ndim > target_dims:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}")
    return x.reshape(*x.shape, *([1] * (target_dims - x.ndim)))


def _load_standalone() -> Any:
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise PeerUnavailableError("k-diffusion is not installed; install it with "
                              "`pip install --no-deps k-diffusion torchsde`")
    path = f"{next(iter(spec.submodule_search_locations))}/sampling.py"
    pkg = types.ModuleType(_STANDALONE)
    pkg.__path__ = []
    pkg.utils = types.SimpleNamespace(append_dims=_append_dims)
    sys.modules[_STANDALONE] = pkg
    sys.modules[f"{_STANDALONE}.utils"] = pkg.utils
    mspec = importlib.util.spec_from_file_location(f"{_STANDALONE}.sampling", path)
    module = importlib.util.module_from_spec(mspec)
    try:
        mspec.loader.exec_module(module)
    except ImportError as err:
        raise PeerUnavailableError(f"k-diffusion's sampling module does not import ({err}); "
                              "install `torchsde`") from None
    sys.modules[f"{_STANDALONE}.sampling"] = module
    return module


def load() -> Any:
    """``k_diffusion.sampling`` (or the stand-alone copy of it; see the module docstring)."""
    if f"{_STANDALONE}.sampling" in sys.modules:
        return sys.modules[f"{_STANDALONE}.sampling"]
    try:
        from k_diffusion import sampling
    except ImportError:
        return _load_standalone()
    return sampling


LOADERS[LIBRARY] = load


class EDMDenoiser:
    """``D(x_edm, sigma_edm) = x0_hat(alpha x_edm, t(sigma_edm))`` over a counting denoiser.

    ``grid``: noise levels known in advance; their times are found in one vectorised call
    (other levels, e.g. midpoints, are inverted when they occur).
    """

    def __init__(self, denoiser: Denoiser, sde: SDE, grid: Tensor | None = None) -> None:
        self.denoiser, self.sde = denoiser, sde
        self._known: dict[float, float] = {}
        if grid is not None:
            grid = grid[grid > 0].to(torch.float64)
            self._known = dict(zip(grid.tolist(), self._invert(grid).tolist(), strict=True))

    def _invert(self, sigma: Tensor) -> Tensor:
        return self.sde.t_from_log_snr(-sigma.to(torch.float64).log())

    def time(self, sigma: Tensor) -> Tensor:
        """``t`` with ``sigma(t) / alpha(t) = sigma`` (float64, shape of ``sigma``)."""
        sigma = torch.as_tensor(sigma).reshape(-1)
        if bool((sigma == sigma[0]).all()):  # one noise level for the batch
            s = float(sigma[0])
            t = self._known.get(s)
            t = float(self._invert(sigma[:1])) if t is None else t
            return torch.full(sigma.shape, t, dtype=torch.float64, device=sigma.device)
        return self._invert(sigma)

    def __call__(self, x_edm: Tensor, sigma: Tensor) -> Tensor:
        t = self.time(sigma)
        return self.denoiser(bcast(self.sde.alpha(t).to(x_edm.dtype), x_edm) * x_edm, t).x0


def sigma_range(sde: SDE) -> tuple[float, float]:
    """``(sigma_edm(t_min), sigma_edm(T))`` of the SDE."""
    lam = sde.log_snr(torch.tensor([sde.t_min, sde.T], dtype=torch.float64))
    return float(torch.exp(-lam[0])), float(torch.exp(-lam[1]))


def run_sampler(fn_name: str, denoiser: Denoiser, sde: SDE, x_T: Tensor, steps: int | None = None,
                tolerance: float | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Samples from scoregen's prior draw ``x_T`` with ``k_diffusion.sampling.<fn_name>``."""
    kd = load()
    s_min, s_max = sigma_range(sde)
    sigmas = None
    if tolerance is None:
        sigmas = kd.get_sigmas_karras(steps, s_min, s_max, device=x_T.device).to(x_T.dtype)
    D = EDMDenoiser(denoiser, sde, sigmas)
    extra: dict[str, Any] = {"disable": True}
    if fn_name == "sample_euler_ancestral":
        extra["noise_sampler"] = lambda s, s_next: torch.randn(
            x_T.shape, generator=generator, dtype=x_T.dtype, device=x_T.device)
    with torch.random.fork_rng(devices=[]):  # some samplers draw unused global noise
        if sigmas is not None:
            t0 = D.time(sigmas[:1])
            x = x_T / float(sde.alpha(t0))
            return getattr(kd, fn_name)(D, x, sigmas, **extra)
        t0 = D.time(torch.tensor([s_max]))
        x = x_T / float(sde.alpha(t0))
        x = getattr(kd, fn_name)(D, x, s_min, s_max, rtol=tolerance,
                                 atol=ATOL_PER_RTOL * tolerance, **extra)
    s = torch.full((x.shape[0],), s_min, dtype=torch.float64, device=x.device)
    return D(x, s)  # the final denoising step at t_min


def _peer(name: str, fn_name: str, nfe_per_step: int | None, stochastic: bool) -> PeerSampler:
    def draw(model, sde, x_T, setting, seed):
        denoiser = Denoiser(model, sde)
        g = torch.Generator(device=x_T.device).manual_seed(seed)
        x = run_sampler(fn_name, denoiser, sde, x_T, setting.steps, setting.tolerance, g)
        return x, denoiser.nfe

    return PeerSampler(f"{LIBRARY}/{name}", LIBRARY, nfe_per_step, stochastic, draw,
                       _supports)


def _supports(sde: SDE) -> str | None:
    """k-diffusion samples ``x / alpha`` over ``sigma / alpha``: the scalar kernel."""
    if SCALAR_KERNEL not in sde.capabilities:
        return (f"its samplers step in sigma = exp(-log-SNR) of a scalar kernel, which "
                f"{sde.name} does not offer")
    return None


for _name, (_fn, _nfe, _stoch) in SAMPLERS.items():
    register_peer(_peer(_name, _fn, _nfe, _stoch))
