"""Few-step time grids fitted to a model: teacher trajectories, GITS, then the sampler's own error.

At 4-10 NFE the time grid matters as much as the solver. :func:`tune_grid` fits the grid of
one deterministic fixed-step sampler (with its options) and NFE budget to one model under one
SDE, from teacher trajectories of that model, in two stages:

1. **Teacher** (:func:`teacher_trajectories`): ``n`` probability-flow ODE solves from the
   prior, with UniPC of order 4 (``unipc``, ``order=3``) on ``teacher_steps`` (200) steps
   uniform in log-SNR, recorded at every step and ending, as every sampler here does, with
   its final interval to ``sigma = 0`` solved at its order (``final="solve"``, the default of
   every sampler tuned here). On ring8 under ``ddpm`` its endpoints are within
   2e-7 (median) of the same solver on 400 steps, and ``tests/test_grid_tuning.py`` checks it
   against dopri5; the 5-10 NFE errors being fitted are 1e-3 .. 1e-1.
2. **GITS initialisation** (Chen et al. 2024, "On the Trajectory Regularity of ODE-based
   Diffusion Sampling", sec. 4, dynamic programming over a fine teacher trajectory): on
   ``dp_points`` teacher times ``t_0 = T > ... > t_P = t_min`` the cost of jumping from ``t_i``
   to ``t_j`` is the error of one DDIM step started *on* the teacher, ``c_ij = E_k ||x^_j -
   x_j||`` with ``x^_j = (sigma_j/sigma_i) x_i + alpha_j (1 - e^{-h}) x0_hat(x_i, t_i)``, and
   the last time ``t_j`` pays the denoising step's error ``E_k ||x0_hat(x_j, t_j) - x_end||``.
   Dynamic programming gives the path of ``steps - 1`` jumps of least summed cost: the
   sampler's ``steps`` positive times (the grid then ends in ``0``).
3. **Refinement on the sampler's own endpoint error** (the quantity Align Your Steps,
   Sabour et al. 2024, sec. 3, bounds by a KL divergence and refines iteratively; here it is
   measured directly): the objective is the mean per-sample RMS endpoint error
   ``E_k ||x_sampler(x_T^k; grid) - x_end^k|| / sqrt(dim)`` of the actual sampler (multistep
   history, warm-up and all) against the teacher, on the ``n - held_out`` fitting
   trajectories. The interior times, in log-SNR, move by pattern search: each time moves a
   fraction ``f`` of the way to a neighbour (so the grid stays ordered), a move is kept when
   it lowers the objective, ``f`` halves when a sweep keeps nothing (``1/2 .. 1/64``). The
   search is local, so it runs from three starts, the SDE's default grid, the GITS grid and
   the EDM grid (``rho = 7``), each with up to ``max_evals`` evaluations, and the best
   endpoint on the fitting trajectories is kept (one start alone lands in different local
   minima: mix64, ``unipc`` at 5 NFE, 0.050 from the default grid against 0.02-0.03 from
   another).

**Guided models.** Given class labels ``cond`` (one per trajectory) and a guidance scale,
everything above runs on the guided model (:mod:`scoregen.sampling.guidance`): the teacher
solves the guided probability-flow ODE, and the grid is fitted to the guided sampler's error
on it. The guided field is stiffer as ``w`` grows (the classes pull apart where the noise
level is comparable to their distance), so its best grid differs from the unguided one; the
grid is stored under the guidance it was fitted for
(:func:`scoregen.sampling.tuned_grids.guidance_key`) and ``scoregen.sample`` picks it only
for the same guidance.

The ``held_out`` trajectories are never used for fitting: the returned
:class:`~scoregen.sampling.tuned_grids.TunedGrid` records the objective of the default, GITS and
tuned grids on both sets. Its NFE is counted on the tuned grid. Why not GITS alone: its
cost is a one-step (DDIM) error, so the grid it finds is tuned for DDIM, not for a multistep
sampler whose error does not add up step by step; why not AYS's KL bound: the endpoint error
against the teacher is cheap to measure exactly at these budgets.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scoregen.models.prediction import Model
from scoregen.samplers import SAMPLERS
from scoregen.sampling.api import sample
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.grid import time_grid
from scoregen.sampling.guidance import Guidance, guide
from scoregen.sampling.nfe_budget import check_plannable, count_nfe, plan_steps
from scoregen.sampling.noise import NoiseSource, seeds_for
from scoregen.sampling.tuned_grids import TunedGrid, guidance_key
from scoregen.sde.base import SDE

TEACHER = ("unipc", {"order": 3})
FRACTIONS_MIN = 1 / 64


@dataclass
class Teacher:
    """``n`` teacher trajectories: the starts ``x_start = x_T`` ``(n, *D)``, the fine grid
    ``ts`` (descending, ``ts[-1] = 0``), ``path[i]`` the states at ``ts[i]`` for the positive
    times and ``x_end`` the endpoints (after the final interval to ``sigma = 0``); for a
    guided model, the class ``labels`` ``(n,)`` of the trajectories and the ``guidance``."""

    x_start: Tensor
    ts: Tensor
    path: Tensor
    x_end: Tensor
    seconds: float
    nfe: int
    labels: Tensor | None = None
    guidance: float | Guidance | None = None

    def model(self, model: Model, rows: slice) -> Model:
        """``model`` as the teacher saw it on the trajectories ``rows`` (guided if it was)."""
        if self.labels is None:
            return model
        return guide(model, self.labels[rows], self.guidance)

    def guidance_options(self, rows: slice) -> dict[str, Any]:
        """``cond`` and ``guidance`` for :func:`scoregen.sample` on the trajectories ``rows``."""
        if self.labels is None:
            return {}
        return {"cond": self.labels[rows], "guidance": self.guidance}

    def split(self, held_out: int) -> tuple[slice, slice]:
        n = self.x_start.shape[0]
        if not 0 <= held_out < n:
            raise ValueError(f"held_out must lie in [0, {n}) for {n} teacher trajectories, "
                             f"got {held_out}")
        return slice(0, n - held_out), slice(n - held_out, n)


def teacher_trajectories(model: Model, sde: SDE, shape: tuple[int, ...], n: int = 320, *,
                         seed: int = 0, teacher_steps: int = 200,
                         dtype: torch.dtype = torch.float64,
                         device: torch.device | str | None = None,
                         cond: Tensor | int | None = None,
                         guidance: float | Guidance | None = None) -> Teacher:
    """``n`` high-accuracy probability-flow ODE solves of ``model`` (module docstring, 1);
    ``shape`` is the event shape. Sample ``k`` starts from the prior draw of seed ``seed + k``
    (the ``x_T`` that ``scoregen.sample(..., seed=seed)`` draws). With class labels ``cond``
    (``(n,)`` or one for all) and ``guidance``, the trajectories are the guided model's."""
    if n < 2:
        raise ValueError(f"need at least 2 teacher trajectories, got n={n}")
    labels = None
    if cond is not None:
        labels = torch.as_tensor(cond, dtype=torch.int64)
        labels = labels.expand(n).clone() if labels.ndim == 0 else labels
    elif guidance is not None:
        raise ValueError("guidance needs class labels (cond): the classes of the trajectories")
    states: list[Tensor] = []
    x_T = sde.prior_from_normal(
        NoiseSource(seeds_for(n, seed), sde.state_shape(tuple(shape)), dtype, device).draw(0))
    states.append(x_T)
    name, opts = TEACHER
    guided = {} if labels is None else {"cond": labels, "guidance": guidance}
    res = sample(model, sde, x_T.clone(), name, teacher_steps, spacing="logsnr",
                 seeds=seeds_for(n, seed), callback=lambda i, t, x: states.append(x),
                 **guided, **opts)
    path = torch.stack(states[:-1])  # the positive times; the last state is the endpoint
    return Teacher(x_T, res.ts, path, res.x, res.seconds, res.nfe, labels,
                   None if labels is None else guidance)


def endpoint_error(x: Tensor, ref: Tensor) -> Tensor:
    """Per-sample RMS error ``||x - ref|| / sqrt(dim)``, ``(B,)``."""
    return (x - ref).flatten(1).pow(2).mean(1).sqrt()


def gits_grid(model: Model, sde: SDE, teacher: Teacher, steps: int, rows: slice,
              dp_points: int = 100) -> Tensor:
    """The GITS grid of ``steps`` positive times (then ``0``) on the teacher (module
    docstring, 2), from the trajectories ``rows``."""
    positive = len(teacher.ts) - 1
    idx = torch.linspace(0, positive - 1, min(dp_points, positive)).round().long().unique()
    ts = teacher.ts[idx]
    xs = teacher.path[idx][:, rows]
    x_end = teacher.x_end[rows]
    denoiser = Denoiser(teacher.model(model, rows), sde)
    with torch.no_grad():
        d = torch.stack([denoiser(x, t).x0 for x, t in zip(xs, ts, strict=True)])
    alpha, sigma, lam = sde.alpha(ts), sde.sigma(ts), sde.log_snr(ts)
    P = len(ts)
    cost = torch.full((P, P), math.inf, dtype=torch.float64)
    for i in range(P - 1):
        j = torch.arange(i + 1, P)
        h = (lam[j] - lam[i]).to(xs.dtype)
        shape = (-1,) + (1,) * xs[0].ndim
        x_hat = ((sigma[j] / sigma[i]).to(xs.dtype).view(shape) * xs[i]
                 + (alpha[j].to(xs.dtype) * -torch.expm1(-h)).view(shape) * d[i])
        cost[i, j] = (x_hat - xs[j]).flatten(2).pow(2).mean(2).sqrt().mean(1).double().cpu()
    final = torch.stack([endpoint_error(d[j], x_end).mean() for j in range(P)]).double().cpu()
    # best[k, j]: least cost of reaching point j from point 0 in k jumps
    best = torch.full((steps, P), math.inf, dtype=torch.float64)
    back = torch.zeros((steps, P), dtype=torch.long)
    best[0, 0] = 0.0
    for k in range(1, steps):
        total = best[k - 1][:, None] + cost  # (from i, to j)
        best[k], back[k] = total.min(0)
    j = int(torch.argmin(best[steps - 1] + final))
    chosen = [j]
    for k in range(steps - 1, 0, -1):
        j = int(back[k, j])
        chosen.append(j)
    grid = ts[torch.tensor(chosen[::-1])]
    return torch.cat([grid, grid.new_zeros(1)])


class _Objective:
    """Mean endpoint error of ``sampler`` on a grid, on trajectories ``rows`` (counted)."""

    def __init__(self, model, sde, sampler: str, options: dict[str, Any], teacher: Teacher,
                 rows: slice, seed: int) -> None:
        self.args = (model, sde)
        self.sampler, self.options = sampler, {**options, **teacher.guidance_options(rows)}
        self.x_T, self.ref = teacher.x_start[rows], teacher.x_end[rows]
        start = rows.start or 0
        self.seeds = seeds_for(teacher.x_start.shape[0], seed)[start:rows.stop]
        self.evals = 0

    def __call__(self, ts: Tensor) -> float:
        self.evals += 1
        if not (ts[1:] < ts[:-1]).all():  # positions too close to give distinct times
            return math.inf
        out = sample(*self.args, self.x_T.clone(), self.sampler, None, ts=ts, seeds=self.seeds,
                     **self.options)
        err = endpoint_error(out.x, self.ref)
        return float(err.mean()) if torch.isfinite(err).all() else math.inf


def _grid_from(sde: SDE, lam_T: float, lam_min: float, v: list[float]) -> Tensor:
    """The grid with positive times at log-SNR ``lam_T + v_k (lam_min - lam_T)``, then 0."""
    lam = torch.tensor([lam_T + u * (lam_min - lam_T) for u in v], dtype=torch.float64)
    ts = sde.t_from_log_snr(lam)
    ts[0] = sde.T
    ts = torch.minimum(ts, torch.tensor(sde.T, dtype=torch.float64))
    ts = torch.maximum(ts, torch.tensor(sde.t_min, dtype=torch.float64))
    return torch.cat([ts, ts.new_zeros(1)])


def _positions(sde: SDE, ts: Tensor, lam_T: float, lam_min: float) -> list[float]:
    """Inverse of :func:`_grid_from` (positions in ``[0, 1]``; the first is ``0``)."""
    lam = sde.log_snr(ts[ts > 0].to(torch.float64))
    v = ((lam - lam_T) / (lam_min - lam_T)).clamp(0, 1).tolist()
    v[0] = 0.0
    return v


def refine(objective: _Objective, sde: SDE, ts: Tensor, *, max_evals: int = 400,
           progress: bool = False) -> tuple[Tensor, float]:
    """Pattern search on the interior log-SNR positions (module docstring, 3)."""
    lam_T, lam_min = float(sde.log_snr(torch.tensor(sde.T))), float(sde.log_snr(
        torch.tensor(sde.t_min)))
    v = _positions(sde, ts, lam_T, lam_min)
    best = objective(_grid_from(sde, lam_T, lam_min, v))
    fraction = 0.5
    bar = tqdm(total=max_evals, desc="tune grid", disable=not progress, leave=False)
    while fraction >= FRACTIONS_MIN and objective.evals < max_evals:
        improved = False
        for k in range(1, len(v)):
            upper = v[k + 1] if k + 1 < len(v) else 1.0
            for move in (fraction * (upper - v[k]), -fraction * (v[k] - v[k - 1])):
                if objective.evals >= max_evals or abs(move) < 1e-9:
                    continue
                trial = [*v[:k], v[k] + move, *v[k + 1:]]
                value = objective(_grid_from(sde, lam_T, lam_min, trial))
                bar.update(1)
                if value < best:
                    v, best, improved = trial, value, True
                    break
        bar.set_postfix(error=f"{best:.3g}", fraction=fraction)
        if not improved:
            fraction /= 2
    bar.close()
    return _grid_from(sde, lam_T, lam_min, v), best


def tune_grid(model: Model, sde: SDE, sampler: str, nfe: int, *,
              options: dict[str, Any] | None = None, teacher: Teacher | None = None,
              shape: tuple[int, ...] | None = None, n: int = 320, held_out: int = 64,
              seed: int = 0, dp_points: int = 100, max_evals: int = 400,
              dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
              progress: bool = False, cond: Tensor | int | None = None,
              guidance: float | Guidance | None = None) -> TunedGrid:
    """Fit the grid of ``sampler`` (with ``options``) for a budget of ``nfe`` counted
    evaluations to ``model`` under ``sde`` (module docstring). Give ``teacher`` (from
    :func:`teacher_trajectories`, shared between samplers and budgets; it carries the labels
    and guidance of a guided model) or the event ``shape`` and ``n`` to make one (with
    ``cond`` and ``guidance`` for a guided model)."""
    options = dict(options or {})
    meta = SAMPLERS.meta(sampler)
    per_step = check_plannable(sampler)
    if meta["stochastic"]:
        raise ValueError(f"{sampler} is stochastic: a grid fitted to the probability-flow "
                         "ODE's trajectories does not apply; tune a deterministic sampler")
    start = time.perf_counter()
    if teacher is None:
        if shape is None:
            raise ValueError("give a teacher or the event shape to make one")
        teacher = teacher_trajectories(model, sde, shape, n, seed=seed, dtype=dtype,
                                       device=device, cond=cond, guidance=guidance)
    elif cond is not None or guidance is not None:
        raise ValueError("give cond and guidance to teacher_trajectories: the teacher carries "
                         "them (tune_grid(..., teacher=t) fits to the teacher's model)")
    fit, held = teacher.split(held_out)
    x1 = teacher.x_start[:1]

    def run(k: int) -> int:
        return sample(model, sde, x1.clone(), sampler, k, seed=seed, **options).nfe

    steps = plan_steps(count_nfe(run), nfe, per_step)
    if steps is None:
        raise ValueError(f"no step count of {sampler} fits a budget of {nfe} NFE")
    default = time_grid(sde, steps, dim=teacher.x_start[0].numel())
    objective = _Objective(model, sde, sampler, options, teacher, fit, seed)
    gits = gits_grid(model, sde, teacher, steps, fit, dp_points) if steps > 1 else default
    starts = {"default": default, "gits": gits, "edm": time_grid(sde, steps, "edm")}
    scores = {name: objective(grid) for name, grid in starts.items()}
    tuned, value, refined = default, scores["default"], {}
    if steps > 1:  # every start refined (the search is local), the best kept
        for name, grid in starts.items():
            objective.evals = 0
            found, found_value = refine(objective, sde, grid, max_evals=max_evals,
                                        progress=progress)
            refined[name] = found_value
            if found_value < value:
                tuned, value = found, found_value
    used = sample(model, sde, x1.clone(), sampler, None, ts=tuned, seed=seed, **options).nfe
    info: dict[str, Any] = {
        "objective": "mean per-sample RMS endpoint error against the teacher",
        "fit": {**scores, "tuned": value}, "refined_from": refined,
        "evals_per_start": max_evals, "trajectories": {"fit": fit.stop - fit.start,
                                                   "held_out": held.stop - held.start},
        "teacher": {"sampler": TEACHER[0], **TEACHER[1], "steps": len(teacher.ts) - 1,
                    "seconds": round(teacher.seconds, 2)},
        "gits_ts": gits.tolist(), "seconds": round(time.perf_counter() - start, 2),
    }
    if held.stop > held.start:
        check = _Objective(model, sde, sampler, options, teacher, held, seed)
        info["held_out"] = {"default": check(default), "gits": check(gits), "tuned": check(tuned)}
    key = guidance_key(teacher.labels, teacher.guidance)
    return TunedGrid(sampler, options, sde.config(), int(used), tuned.tolist(), info, key)


__all__ = ["Teacher", "endpoint_error", "gits_grid", "refine", "teacher_trajectories",
           "tune_grid"]
