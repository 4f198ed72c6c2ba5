"""Consistency models: distillation from a teacher's ODE and training from data alone.

A consistency function ``f(x_t, t)`` returns the end at ``t_min`` of the probability-flow
trajectory through ``x_t`` (in the scale ``x~ = x / alpha``); the model's ``consistency``
parameterization makes ``f(x, t_min) = x / alpha(t_min)`` exact
(:mod:`scoregen.models.prediction`). Both objectives enforce self-consistency between two
points of one trajectory, a high one ``(x_hi, t_hi)`` and a low one ``(x_lo, t_lo)``::

    L = E[ lambda * d( f_theta(x_hi, t_hi),  stopgrad f_target(x_lo, t_lo) ) ]

(Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", eq. 7 and 10). The parts:

- **Target network** (``target_ema``): ``0`` is the stop-gradient of the online network itself
  (Song & Dhariwal 2023, "Improved Techniques for Training Consistency Models", sec. 3.2);
  ``mu > 0`` an EMA copy, ``theta^- <- mu theta^- + (1 - mu) theta`` after every step (Song et
  al. 2023, Algorithm 2), kept in the objective's state (checkpointed).
- **Distance** (``distance``): ``l2``, ``mean_dims (a - b)^2`` (Song et al. 2023), or
  ``pseudo_huber``, ``sqrt(|a - b|^2 + c^2) - c`` with ``c = huber_c sqrt(D)`` (Song & Dhariwal
  2023, sec. 3.3: ``c = 0.00054 sqrt(d)``; no LPIPS, nothing is downloaded).
- **Weighting** (``weighting``): ``uniform`` or ``inverse_gap``, ``1 / (sigma~_hi - sigma~_lo)``
  in the EDM noise level ``sigma~ = sigma / alpha`` (Song & Dhariwal 2023, sec. 3.5; Geng et
  al. 2024's ``1 / (t - r)``).
- **Discretisation** (discrete pairs): ``N(k) + 1`` Karras times ``sigma~_0 > ... > sigma~_N``
  between ``sigma~(T)`` and ``sigma~(t_min)`` (``rho = 7``, the ``edm`` grid of
  :func:`~scoregen.sampling.grid.time_grid`), with ``N(k) = min(n_min 2^floor(k / K'), n_max)``,
  ``K' = floor(K / (floor(log2(n_max / n_min)) + 1))`` at step ``k`` of ``K = total_steps``
  (Song & Dhariwal 2023, eq. 8; constant ``N`` when ``n_min = n_max``, Song et al. 2023's
  distillation). The interval ``j`` is drawn uniformly (``index_sampling: uniform``) or with
  ``p(j) ∝ erf((ln sigma~_j - P_mean) / (sqrt 2 P_std)) - erf((ln sigma~_{j+1} - P_mean) /
  (sqrt 2 P_std))`` (``lognormal``, their eq. 10, ``P_mean = -1.1``, ``P_std = 2``).

``consistency_distillation`` (Song et al. 2023, Algorithm 2): ``x_hi = alpha x + sigma eps`` at
``t_hi``, and ``x_lo`` one step of the *teacher's* probability-flow ODE from ``x_hi`` to
``t_lo`` by any registered deterministic sampler (``sampler`` with ``sampler_options``, Heun in
the paper; counted, see :mod:`._teacher`).

``consistency_training`` needs no teacher: ``x_lo`` shares the noise of ``x_hi`` (``x_lo =
alpha_lo x + sigma_lo eps``). ``schedule: ict`` takes the discrete pairs above (Song & Dhariwal
2023); ``schedule: ect`` is easy consistency tuning (Geng et al. 2024, "Consistency Models Made
Easy"): ``sigma~_hi ~ lognormal(P_mean, P_std)`` and ``sigma~_lo = r(sigma~_hi)`` with::

    r(t) = max(0, t (1 - q^-(s + 1) (1 + k sigmoid(-b t)))),   s = floor(step / stage_steps),

the gap ``t - r`` shrinking by ``q`` every ``stage_steps`` steps; ``r <= sigma~(t_min)`` targets
the boundary ``f(x, t_min)``, so the first stage is close to denoising score matching and a
model initialised from a DSM checkpoint is tuned into a consistency model.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from scoregen.models.prediction import Model, predict_pair
from scoregen.sampling.grid import time_grid
from scoregen.sde.base import SDE
from scoregen.training.batches import Batch
from scoregen.training.objectives._teacher import TeacherSolver, missing_teacher
from scoregen.training.objectives.base import Objective, register

DISTANCES = ("l2", "pseudo_huber")
CM_WEIGHTINGS = ("uniform", "inverse_gap")
INDEX_SAMPLINGS = ("uniform", "lognormal")
SCHEDULES = ("ect", "ict")


def discretization(step: int, total_steps: int, n_min: int, n_max: int) -> int:
    """``N(k)``, the number of intervals at step ``k`` (module docstring; Song & Dhariwal 2023,
    eq. 8)."""
    if n_min >= n_max or total_steps <= 0:
        return n_min
    per = max(total_steps // (int(math.log2(n_max // n_min)) + 1), 1)
    return min(n_min * 2 ** (step // per), n_max)


def _lognormal_cdf(log_sigma: Tensor, p_mean: float, p_std: float) -> Tensor:
    return 0.5 * (1 + torch.erf((log_sigma - p_mean) / (math.sqrt(2) * p_std)))


class _Consistency(Objective):
    """Shared by both objectives: the target network, the distance, the weighting and the
    loss (module docstring); a subclass gives the pairs (:meth:`pairs`)."""

    def __init__(self, sde: SDE, *, distance: str, huber_c: float, weighting: str,
                 target_ema: float) -> None:
        super().__init__(sde)
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
        if weighting not in CM_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(CM_WEIGHTINGS)}, got "
                             f"{weighting!r}")
        if not 0 <= target_ema < 1:
            raise ValueError(f"target_ema must lie in [0, 1) (0: stop-gradient of the online "
                             f"network), got {target_ema!r}")
        if not huber_c > 0:
            raise ValueError(f"huber_c must be > 0, got {huber_c!r}")
        self.distance, self.huber_c, self.weighting = distance, float(huber_c), weighting
        self.target_ema = float(target_ema)
        self.target: nn.Module | None = None

    def bind(self, model: Model) -> None:
        if self.target_ema > 0 and isinstance(model, nn.Module):
            self.target = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def after_step(self, model: Model, step: int) -> None:
        if self.target is not None:
            for p_target, p in zip(self.target.parameters(), model.parameters(), strict=True):
                p_target.lerp_(p, 1 - self.target_ema)

    def sigma_edm(self, t: Tensor) -> Tensor:
        """``sigma~ = sigma / alpha`` (float64)."""
        t = t.to(torch.float64)
        return self.sde.sigma(t) / self.sde.alpha(t)

    def time_of(self, sigma_edm: Tensor) -> Tensor:
        """The time of noise level ``sigma~`` on this SDE, within ``[t_min, T]``."""
        t = self.sde.t_from_log_snr(-torch.log(sigma_edm.to(torch.float64)))
        return t.clamp(self.sde.t_min, self.sde.T)

    def pairs(self, model: Model, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x_hi, t_hi, x_lo, t_lo)`` with the times float64 on the CPU."""
        raise NotImplementedError

    def loss(self, model: Model, batch: Batch) -> Tensor:
        x_hi, t_hi, x_lo, t_lo = self.pairs(model, batch)
        x0 = batch.x0
        f_hi = predict_pair(model, x_hi, t_hi.to(x0), batch.cond).x0
        target = model if self.target is None else self.target
        with torch.no_grad():
            f_lo = predict_pair(target, x_lo, t_lo.to(x0), batch.cond).x0
        diff = (f_hi - f_lo).flatten(1)
        if self.distance == "l2":
            d = diff.pow(2).mean(1)
        else:
            c = self.huber_c * math.sqrt(diff.shape[1])
            d = torch.sqrt(diff.pow(2).sum(1) + c**2) - c
        if self.weighting == "inverse_gap":
            gap = (self.sigma_edm(t_hi) - self.sigma_edm(t_lo)).clamp_min(1e-12)
            d = d / gap.to(d)
        return d.mean()

    # -- discrete pairs ------------------------------------------------------------------------
    def discrete_times(self, batch: Batch, n_min: int, n_max: int, total_steps: int,
                       index_sampling: str, p_mean: float, p_std: float
                       ) -> tuple[Tensor, Tensor]:
        """``(t_hi, t_lo)``: each example's interval of the Karras grid of ``N(k)`` intervals,
        drawn from its ``u`` (module docstring)."""
        n = discretization(batch.step, total_steps, n_min, n_max)
        grid = time_grid(self.sde, n, "edm", denoise=False)  # n + 1 times, T .. t_min
        u = batch.u.to(torch.float64).cpu()
        if index_sampling == "uniform":
            j = (u * n).floor().clamp(0, n - 1).to(torch.int64)
        else:
            cdf = _lognormal_cdf(torch.log(self.sigma_edm(grid)), p_mean, p_std)  # descending
            mass = (cdf[:-1] - cdf[1:]).clamp_min(0)
            cum = torch.cumsum(mass, 0) / mass.sum()
            j = torch.searchsorted(cum, u).clamp(0, n - 1)
        return grid[j], grid[j + 1]


def _check_discrete(n_min: int, n_max: int, index_sampling: str, p_std: float) -> None:
    if not (isinstance(n_min, int) and isinstance(n_max, int) and 1 <= n_min <= n_max):
        raise ValueError(f"need integers 1 <= n_min <= n_max (intervals of the discretisation), "
                         f"got n_min={n_min!r}, n_max={n_max!r}")
    if index_sampling not in INDEX_SAMPLINGS:
        raise ValueError(f"index_sampling must be one of {', '.join(INDEX_SAMPLINGS)}, got "
                         f"{index_sampling!r}")
    if not p_std > 0:
        raise ValueError(f"p_std must be > 0, got {p_std!r}")


@register("consistency_distillation", teacher=True, student="consistency")
class ConsistencyDistillation(_Consistency):
    """Consistency distillation (Song et al. 2023, Algorithm 2; module docstring): the low
    point is one step of the teacher's ODE by the registered deterministic ``sampler``."""

    def __init__(self, sde: SDE, *, teacher: Model | None = None, sampler: str = "heun",
                 sampler_options: dict | None = None, n_min: int = 18, n_max: int = 18,
                 total_steps: int = 0, index_sampling: str = "uniform", p_mean: float = -1.1,
                 p_std: float = 2.0, distance: str = "l2", huber_c: float = 0.00054,
                 weighting: str = "uniform", target_ema: float = 0.95) -> None:
        super().__init__(sde, distance=distance, huber_c=huber_c, weighting=weighting,
                         target_ema=target_ema)
        _check_discrete(n_min, n_max, index_sampling, p_std)
        self.n_min, self.n_max, self.total_steps = n_min, n_max, int(total_steps)
        self.index_sampling, self.p_mean, self.p_std = index_sampling, float(p_mean), p_std
        self.solver = None if teacher is None else TeacherSolver(teacher, sde, sampler,
                                                                  sampler_options)

    def pairs(self, model: Model, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.solver is None:
            raise missing_teacher(self.name)
        t_hi, t_lo = self.discrete_times(batch, self.n_min, self.n_max, self.total_steps,
                                         self.index_sampling, self.p_mean, self.p_std)
        x_hi = self.sde.perturb(batch.x0, t_hi.to(batch.x0), batch.eps)
        x_lo = self.solver.solve(x_hi, torch.stack([t_hi, t_lo], 1))
        return x_hi, t_hi, x_lo, t_lo


@register("consistency_training", student="consistency")
class ConsistencyTraining(_Consistency):
    """Consistency training (module docstring): the low point shares the high point's noise;
    ``schedule`` ``ect`` (Geng et al. 2024) or ``ict`` (Song & Dhariwal 2023)."""

    def __init__(self, sde: SDE, *, schedule: str = "ect", stage_steps: int = 1000,
                 q: float = 2.0, k: float = 8.0, b: float = 1.0, n_min: int = 10,
                 n_max: int = 1280, total_steps: int = 0, index_sampling: str = "lognormal",
                 p_mean: float = -1.1, p_std: float = 2.0, distance: str = "pseudo_huber",
                 huber_c: float = 0.00054, weighting: str = "inverse_gap",
                 target_ema: float = 0.0) -> None:
        super().__init__(sde, distance=distance, huber_c=huber_c, weighting=weighting,
                         target_ema=target_ema)
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if not (isinstance(stage_steps, int) and stage_steps >= 1):
            raise ValueError(f"stage_steps must be an integer >= 1, got {stage_steps!r}")
        if not q > 1:
            raise ValueError(f"q must be > 1 (the gap shrinks by q per stage), got {q!r}")
        _check_discrete(n_min, n_max, index_sampling, p_std)
        self.schedule, self.stage_steps = schedule, stage_steps
        self.q, self.k, self.b = float(q), float(k), float(b)
        self.n_min, self.n_max, self.total_steps = n_min, n_max, int(total_steps)
        self.index_sampling, self.p_mean, self.p_std = index_sampling, float(p_mean), p_std

    def r_of(self, sigma: Tensor, step: int) -> Tensor:
        """ECT's ``r(t)`` in the EDM noise level (module docstring), before the boundary."""
        decay = self.q ** -(step // self.stage_steps + 1)
        return (sigma * (1 - decay * (1 + self.k * torch.sigmoid(-self.b * sigma)))).clamp_min(0)

    def pairs(self, model: Model, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.schedule == "ict":
            t_hi, t_lo = self.discrete_times(batch, self.n_min, self.n_max, self.total_steps,
                                             self.index_sampling, self.p_mean, self.p_std)
        else:
            z = torch.special.ndtri(batch.u.to(torch.float64).cpu())
            t_hi = self.time_of(torch.exp(self.p_mean + self.p_std * z))
            t_lo = self.time_of(self.r_of(self.sigma_edm(t_hi), batch.step).clamp_min(
                float(self.sigma_edm(torch.tensor(self.sde.t_min)))))
            t_lo = torch.minimum(t_lo, t_hi)
        x0, eps = batch.x0, batch.eps
        return (self.sde.perturb(x0, t_hi.to(x0), eps), t_hi,
                self.sde.perturb(x0, t_lo.to(x0), eps), t_lo)


__all__ = ["CM_WEIGHTINGS", "DISTANCES", "INDEX_SAMPLINGS", "SCHEDULES",
           "ConsistencyDistillation", "ConsistencyTraining", "discretization"]
