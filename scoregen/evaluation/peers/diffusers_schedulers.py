"""diffusers schedulers driven by a scoregen model on the discrete DDPM process.

diffusers schedulers are discrete: ``alphas_cumprod[k] = prod_{j<=k} (1 - beta_j)`` for the
train timesteps ``k = 0 .. N-1``. scoregen's ``ddpm`` SDE places ``alpha_bar_i`` (Ho et al.
2020, ``i = 1..N``) at time ``t_i = i / N``, so diffusers' timestep ``k`` is scoregen time

    t = (k + 1) / N,        alpha(t)^2 = alphas_cumprod[k]  exactly.

At each of its timesteps the scheduler receives the model's exact ``eps_hat`` at
``(x_in, t)``, where ``x_in = scheduler.scale_model_input(x, k)``: the identity for the
variance-preserving schedulers (DDPM, DDIM, DPM-Solver, UniPC) and ``x / sqrt(sigma_k^2 +
1)`` for the sigma-space ones (Euler, Heun, Euler ancestral), which keep
``x_edm = x_vp / alpha``. The start is scoregen's ``x_T`` mapped into the scheduler's space
(divided by the same scale at the first timestep), so every method starts from the same
point. Schedulers are built with ``trained_betas`` = the SDE's betas, ``timestep_spacing =
"trailing"`` (the grid starts at ``k = N-1``, i.e. ``t = T``; Lin et al. 2024, sec. 3.3) and
``clip_sample=False`` (no clipping of ``x0_hat``: the exact math); everything else is
diffusers' default (e.g. DPM-Solver++ order 2, UniPC bh2).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import Tensor

from scoregen.evaluation.peers.registry import (
    LOADERS,
    PeerSampler,
    PeerUnavailableError,
    register_peer,
)
from scoregen.sampling.denoiser import Denoiser
from scoregen.sde.base import SDE

LIBRARY = "diffusers"

# name: (scheduler class, NFE per step, stochastic)
SCHEDULERS: dict[str, tuple[str, int, bool]] = {
    "ddpm": ("DDPMScheduler", 1, True),
    "ddim": ("DDIMScheduler", 1, False),
    "dpmsolver_multistep": ("DPMSolverMultistepScheduler", 1, False),
    "unipc_multistep": ("UniPCMultistepScheduler", 1, False),
    "euler": ("EulerDiscreteScheduler", 1, False),
    "heun": ("HeunDiscreteScheduler", 2, False),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", 1, True),
}


def load() -> Any:
    """``diffusers.schedulers``, or a :class:`PeerUnavailableError` saying how to get it."""
    try:
        import diffusers.schedulers as schedulers
    except ImportError as err:
        raise PeerUnavailableError(f"cannot import diffusers ({err}); install it with "
                              "`pip install diffusers`") from None
    return schedulers


LOADERS[LIBRARY] = load


def supports(sde: SDE) -> str | None:
    """diffusers schedulers need the discrete DDPM process (``--sde ddpm``)."""
    if getattr(sde, "name", None) != "ddpm" or not hasattr(sde, "betas"):
        return f"schedulers are discrete-time DDPM schedules; run with --sde ddpm (got {sde.name})"
    return None


def make_scheduler(cls_name: str, sde: SDE, steps: int, **config: Any) -> Any:
    """A diffusers scheduler for ``sde`` (the discrete DDPM process) with ``steps`` steps."""
    cls = getattr(load(), cls_name)
    accepted = inspect.signature(cls.__init__).parameters
    cfg = {"num_train_timesteps": sde.n, "trained_betas": sde.betas.numpy(),
           "timestep_spacing": "trailing", **config}
    if "clip_sample" in accepted:
        cfg.setdefault("clip_sample", False)
    with warnings.catch_warnings():  # numpy-2 deprecation notices inside diffusers
        warnings.simplefilter("ignore", DeprecationWarning)
        sched = cls(**cfg)
        sched.set_timesteps(steps)
    return sched


def time_of(k: Tensor | float, sde: SDE) -> Tensor:
    """scoregen time ``(k + 1) / N`` of diffusers' train timestep ``k`` (must be an integer)."""
    kf = float(k)
    if abs(kf - round(kf)) > 1e-4:
        raise ValueError(f"diffusers timestep {kf} is not a train timestep; use integer spacing")
    return torch.tensor((round(kf) + 1) / sde.n, dtype=torch.float64)


def run_scheduler(cls_name: str, denoiser: Denoiser, sde: SDE, x_T: Tensor, steps: int,
                  generator: torch.Generator | None = None, **config: Any) -> Tensor:
    """Samples from ``x_T`` (scoregen's VP prior draw) with diffusers' ``cls_name``."""
    if steps > sde.n:
        raise ValueError(f"diffusers schedulers take at most {sde.n} steps, got {steps}")
    sched = make_scheduler(cls_name, sde, steps, **config)
    first = make_scheduler(cls_name, sde, steps, **config)  # scale_model_input is stateful
    scale = first.scale_model_input(torch.ones((), dtype=torch.float64), first.timesteps[0])
    x = x_T / scale
    takes_generator = "generator" in inspect.signature(sched.step).parameters
    kw = {"generator": generator} if takes_generator else {}
    for k in sched.timesteps:
        eps = denoiser(sched.scale_model_input(x, k), time_of(k, sde)).eps
        x = sched.step(eps, k, x, **kw).prev_sample
    return x


def _peer(name: str, cls_name: str, nfe_per_step: int, stochastic: bool) -> PeerSampler:
    def draw(model, sde, x_T, setting, seed):
        denoiser = Denoiser(model, sde)
        g = torch.Generator(device=x_T.device).manual_seed(seed)
        x = run_scheduler(cls_name, denoiser, sde, x_T, setting.steps, g)
        return x, denoiser.nfe

    return PeerSampler(f"{LIBRARY}/{name}", LIBRARY, nfe_per_step, stochastic, draw, supports)


for _name, (_cls, _nfe, _stoch) in SCHEDULERS.items():
    register_peer(_peer(_name, _cls, _nfe, _stoch))
