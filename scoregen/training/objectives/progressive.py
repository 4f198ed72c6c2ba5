"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of
Diffusion Models", Algorithm 2): one round, a student of ``N`` DDIM steps matching ``2N``.

The student samples with deterministic DDIM on the grid ``t_N = T > t_{N-1} > ... > t_1 > 0``
with ``t_i = g(i / N)`` and the final step to ``0``; ``g(u) = t_min + (T - t_min) u^p``
(``spacing``: ``uniform`` ``p = 1``, the paper's uniform time grid; ``quadratic`` ``p = 2``).
The grids of ``N`` and ``2N`` steps nest (``g(i/N) = g(2i / 2N)``), so a round's teacher grid
halves each student step. For example ``k`` with ``i ~ U{1..N}`` (from its ``u``), ``t = t_i``,
``t' = g((i - 1/2) / N)``, ``t'' = t_{i-1}`` (``0`` for ``i = 1``)::

    z_t   = alpha_t x + sigma_t eps
    z_t'' = two DDIM steps of the teacher, t -> t' -> t''   (the registered ``ddim``)
    x~    = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)
    L     = w(lambda_t) mean_dims (x0_hat_student(z_t, t) - x~)^2

``x~`` is the clean estimate with which one DDIM step of the student from ``z_t`` lands exactly
on the teacher's ``z_t''`` (DDIM: ``z_s = alpha_s x0_hat + (sigma_s / sigma_t)(z_t - alpha_t
x0_hat)``; at ``t'' = 0`` it is the teacher's output). Weighting ``w`` (``weighting``):
``truncated_snr`` ``max(SNR, 1)`` with ``SNR = alpha^2 / sigma^2`` (the paper's "truncated SNR",
equal to ``max(|x - x_hat|^2, |eps - eps_hat|^2)``) or ``snr_plus_one`` ``SNR + 1`` (the
v-loss). The student's prediction type is any (the paper's choices are ``x0`` and ``v``);
the loss reads its ``x0_hat``. The rounds themselves (the student becomes the next teacher
with ``N / 2``) are :mod:`scoregen.training.distill`'s.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.models.prediction import Model, predict_pair
from scoregen.sde.base import SDE
from scoregen.training.batches import Batch
from scoregen.training.objectives._teacher import TeacherSolver, missing_teacher
from scoregen.training.objectives.base import Objective, register

SPACINGS = {"uniform": 1.0, "quadratic": 2.0}
WEIGHTINGS = ("truncated_snr", "snr_plus_one")


def pd_times(sde: SDE, u: Tensor, spacing: str = "uniform") -> Tensor:
    """``g(u) = t_min + (T - t_min) u^p`` for ``u`` in ``(0, 1]`` and ``0`` at ``u = 0``
    (float64): the nested time grids of progressive distillation."""
    u = torch.as_tensor(u, dtype=torch.float64)
    t = sde.t_min + (sde.T - sde.t_min) * u ** SPACINGS[spacing]
    return torch.where(u > 0, t, torch.zeros_like(t))


def pd_grid(sde: SDE, steps: int, spacing: str = "uniform") -> Tensor:
    """The ``steps``-step DDIM grid of a student: ``g(1), g(1 - 1/N), ..., g(1/N), 0``."""
    return pd_times(sde, torch.arange(steps, -1, -1, dtype=torch.float64) / steps, spacing)


@register("progressive", teacher=True)
class ProgressiveDistillation(Objective):
    """One round of progressive distillation (module docstring): a student of ``steps`` DDIM
    steps matching two DDIM steps of ``teacher`` per step."""

    def __init__(self, sde: SDE, *, teacher: Model | None = None, steps: int = 64,
                 spacing: str = "uniform", weighting: str = "truncated_snr") -> None:
        super().__init__(sde)
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"steps must be an integer >= 1 (the student's DDIM steps), got "
                             f"{steps!r}")
        if spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got "
                             f"{weighting!r}")
        self.steps, self.spacing, self.weighting = steps, spacing, weighting
        self.solver = None if teacher is None else TeacherSolver(teacher, sde, "ddim")

    def grid(self) -> Tensor:
        """The student's sampling grid (:func:`pd_grid`)."""
        return pd_grid(self.sde, self.steps, self.spacing)

    def target(self, z_t: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        """``(t, x~)``: each example's time ``t_i`` and the clean estimate that makes one
        student DDIM step equal the teacher's two (module docstring)."""
        if self.solver is None:
            raise missing_teacher(self.name)
        sde, n = self.sde, self.steps
        i64 = i.to(torch.float64).cpu()
        t, t_mid, t_end = (pd_times(sde, (i64 - d) / n, self.spacing) for d in (0.0, 0.5, 1.0))
        z_end = self.solver.solve(z_t, torch.stack([t, t_mid, t_end], 1))
        end = t_end > 0  # at t'' = 0 the teacher's output is the clean sample: x~ = z_t''
        t_pos = torch.where(end, t_end, t)
        ratio = torch.where(end, sde.sigma(t_pos) / sde.sigma(t), torch.zeros_like(t))
        alpha_t = sde.alpha(t)
        alpha_end = torch.where(end, sde.alpha(t_pos), torch.ones_like(t))
        shape = (-1,) + (1,) * (z_t.ndim - 1)
        r = ratio.to(z_t).reshape(shape)
        x_tilde = (z_end - r * z_t) / (alpha_end - ratio * alpha_t).to(z_t).reshape(shape)
        return t.to(z_t), x_tilde

    def loss(self, model: Model, batch: Batch) -> Tensor:
        x0, n = batch.x0, self.steps
        i = (batch.u * n).floor().clamp(0, n - 1).to(torch.int64) + 1  # i ~ U{1..N}
        t = pd_times(self.sde, i.to(torch.float64).cpu() / n, self.spacing).to(x0)
        z_t = self.sde.perturb(x0, t, batch.eps)
        _, x_tilde = self.target(z_t, i)
        x0_hat = predict_pair(model, z_t, t, batch.cond).x0
        snr = torch.exp(2 * self.sde.log_snr(t.to(torch.float64))).to(x0)
        w = snr.clamp_min(1.0) if self.weighting == "truncated_snr" else snr + 1
        return (w * (x0_hat - x_tilde).pow(2).flatten(1).mean(1)).mean()


__all__ = ["SPACINGS", "WEIGHTINGS", "ProgressiveDistillation", "pd_grid", "pd_times"]
