"""What distillation objectives share: the teacher, its ODE by any registered sampler, counted.

A distillation target is a step of the teacher's probability-flow ODE from each example's own
time to another (progressive distillation: two DDIM steps; consistency distillation: one step
of the chosen solver). The registered samplers take one time grid for the whole batch, so
:class:`TeacherSolver` groups the examples by their grid (``torch.unique`` over the rows; a
distillation schedule has a few dozen distinct intervals) and runs the registered sampler on
each group through the NFE-counting :class:`~scoregen.sampling.denoiser.Denoiser`: every
registered deterministic sampler is a teacher solver, with no per-solver code, and its NFE are
counted, not declared. ``rows`` is the teacher's cost: network evaluations summed over
examples (a call on a batch of ``b`` examples counts ``b``), kept in the objective's state
(``teacher_rows``) so it survives resumes and is reported with the student.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from scoregen.models.prediction import Model, check_model
from scoregen.samplers import SAMPLERS, check_applies
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.grid import check_grid
from scoregen.sampling.noise import NoiseSource
from scoregen.sde.base import SDE


def deterministic_sampler(name: str, sde: SDE) -> None:
    """Refuse a sampler that cannot be a teacher's ODE solver (stochastic, unknown, needs a
    consistency function, or not applicable to ``sde``)."""
    meta = SAMPLERS.meta(name)  # a KeyError listing the known samplers
    if meta["stochastic"] or meta.get("model", "denoiser") != "denoiser":
        usable = [n for n in SAMPLERS.list() if not SAMPLERS.meta(n)["stochastic"]
                  and SAMPLERS.meta(n).get("model", "denoiser") == "denoiser"]
        raise ValueError(f"the teacher's ODE step needs a deterministic sampler; {name!r} is "
                         f"not one (deterministic samplers: {', '.join(usable)})")
    check_applies(name, sde)


class TeacherSolver(nn.Module):
    """The teacher's probability-flow ODE from ``x`` along per-example grids.

    Args:
        teacher: any scoregen model of ``sde`` (a run's model, an adapter, the exact oracle).
        sde: the teacher's process.
        sampler: a registered deterministic sampler (e.g. ``heun``, ``ddim``,
            ``dpm_solver++``).
        options: the sampler's options.

    ``solve(x, grids)`` returns each example's state at the last time of its own grid row
    (``grids: (B, k)``, each row a valid descending grid; a final ``0`` is the denoising step).
    The counter ``teacher_rows`` (a buffer, so checkpointed) grows by the NFE of each call
    times the examples in it.
    """

    def __init__(self, teacher: Model, sde: SDE, sampler: str = "heun",
                 options: dict[str, Any] | None = None) -> None:
        super().__init__()
        check_model(teacher, sde)
        deterministic_sampler(sampler, sde)
        object.__setattr__(self, "teacher", teacher)  # not a submodule: never checkpointed
        self.sde, self.sampler, self.options = sde, sampler, dict(options or {})
        self.register_buffer("teacher_rows", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def solve(self, x: Tensor, grids: Tensor) -> Tensor:
        fn = SAMPLERS.get(self.sampler)
        rows, group = torch.unique(grids.detach().to(torch.float64).cpu(), dim=0,
                                   return_inverse=True)
        out = torch.empty_like(x)
        for g, row in enumerate(rows):
            idx = (group == g).nonzero().squeeze(1).to(x.device)
            denoiser = Denoiser(self.teacher, self.sde)
            ts = check_grid(row, self.sde)
            noise = NoiseSource(torch.zeros(len(idx), dtype=torch.int64, device=x.device),
                                tuple(x.shape[1:]), x.dtype, x.device)  # never drawn from
            res = fn(denoiser, self.sde, x[idx], ts, noise=noise, callback=_ignore,
                     **self.options)
            out[idx] = (res[0] if isinstance(res, tuple) else res).to(x.dtype)
            self.teacher_rows += denoiser.nfe * len(idx)
        return out


def _ignore(*_: Any) -> None:
    """A callback that does nothing."""


def missing_teacher(name: str) -> ValueError:
    """The error of a teacher objective asked for a loss without a teacher."""
    return ValueError(f"objective {name!r} distils a teacher and was built without one: run "
                      "`scoregen distill TEACHER ...` or scoregen.distill(...)")


__all__ = ["TeacherSolver", "deterministic_sampler", "missing_teacher"]
