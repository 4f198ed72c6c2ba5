"""NFE budgets as step counts: the largest step count whose *counted* NFE fits a budget.

A step count means different NFE for different samplers (``n`` for one-evaluation methods,
``2n - 1`` for EDM Heun on a grid ending in ``0``, ``order (n - 1) + 1`` for single-step
DPM-Solver++, ...). :func:`plan_steps` never relies on a formula: it is given a function
that *counts* the NFE of a step count (by running the sampler on a one-sample batch, whose
NFE is the same as any batch's for a fixed-step sampler) and searches::

    steps = max(1, budget // nfe_per_step)
    while steps > 1 and count(steps) is None or > budget:  steps -= 1
    while count(steps + 1) <= budget:                       steps += 1

``count`` returns ``None`` for a step count the sampler refuses (e.g. a tuned grid that does
not exist). For a registered sampler the count is :func:`sampler_nfe`: the sampler runs on one
sample with a model that predicts ``eps = 0`` and costs nothing (the NFE of a fixed-step
sampler does not depend on the model's values), and :func:`steps_for_budget` is the whole
plan; ``scoregen.sample(..., nfe=N)`` and ``scoregen compare`` both plan through it (peer
libraries' samplers, which do not run through the registry, are counted the same way by
running them).
Self-stepping samplers (``nfe_per_step=None``) have no step count: :func:`check_plannable`
says so and names their tolerance options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from scoregen.samplers import SAMPLERS
from scoregen.samplers._terminal import starts_at_zero_snr
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.grid import check_grid
from scoregen.sampling.noise import NoiseSource
from scoregen.sde.base import SDE

CountFn = Callable[[int], "int | None"]


def plan_steps(count: CountFn, budget: int, nfe_per_step: int | None = 1) -> int | None:
    """The step count whose ``count`` is the largest ``<= budget`` (``None`` if none fits)."""
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ValueError(f"an NFE budget must be an integer >= 1, got {budget!r}")
    steps = max(1, budget // (nfe_per_step or 1))
    used = count(steps)
    while steps > 1 and (used is None or used > budget):
        steps -= 1
        used = count(steps)
    if used is None or used > budget:
        return None
    while (more := count(steps + 1)) is not None and more <= budget:
        steps += 1
    return steps


def check_plannable(sampler: str) -> int:
    """``nfe_per_step`` of ``sampler``; a clear error for self-stepping ones."""
    meta = SAMPLERS.meta(sampler)
    if meta["nfe_per_step"] is None:
        opts = ", ".join(meta.get("tolerance_options", ("rtol", "atol")))
        raise ValueError(f"{sampler} chooses its own steps: a step count or NFE budget does "
                         f"not apply to it; set its tolerance ({opts}) instead")
    return meta["nfe_per_step"]


def count_nfe(run: Callable[[int], int]) -> CountFn:
    """A ``count`` for :func:`plan_steps` from ``run(steps) -> counted NFE`` (one sample);
    a step count the sampler or its grid refuses (``ValueError``/``KeyError``) counts as
    ``None``."""

    def count(steps: int) -> int | None:
        try:
            return int(run(steps))
        except (ValueError, KeyError):
            return None

    return count


class _NoNetwork:
    """A model predicting ``eps = 0`` for every input: no network, the same NFE."""

    prediction = "eps"

    def __init__(self, sde: SDE) -> None:
        self.sde = sde

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(self.sde.data_from_state(x))


def sampler_nfe(sampler: str, sde: SDE, ts: Tensor, state_shape: tuple[int, ...],
                opts: dict[str, Any] | None = None) -> int:
    """The NFE registered ``sampler`` spends on the grid ``ts`` with options ``opts``, counted by
    running it on one sample of states ``state_shape`` with :class:`_NoNetwork`."""
    fn = SAMPLERS.get(sampler)
    denoiser = Denoiser(_NoNetwork(sde), sde)
    noise = NoiseSource(torch.zeros(1, dtype=torch.int64), tuple(state_shape), torch.float64)
    x = sde.prior_from_normal(noise())
    ts = check_grid(ts, sde)
    first = 0
    if starts_at_zero_snr(sde, ts):  # scoregen.sample takes the step from T itself: one NFE
        first, ts = 1, ts[1:]
        if len(ts) < 2:
            return first
    with torch.no_grad():
        fn(denoiser, sde, x, ts, noise=noise, callback=_ignore, **(opts or {}))
    return first + denoiser.nfe


def steps_for_budget(sampler: str, sde: SDE, budget: int, grid_at: Callable[[int], Tensor],
                     state_shape: tuple[int, ...], opts: dict[str, Any] | None = None
                     ) -> int | None:
    """The step count of ``sampler`` whose NFE on the grid ``grid_at(steps)`` is the largest
    ``<= budget`` (``None`` if none fits); self-stepping samplers are refused."""
    per_step = check_plannable(sampler)

    def run(steps: int) -> int:
        return sampler_nfe(sampler, sde, grid_at(steps), state_shape, opts)

    return plan_steps(count_nfe(run), budget, per_step)


def _ignore(*_: Any) -> None:
    """A callback that does nothing."""


__all__ = ["check_plannable", "count_nfe", "plan_steps", "sampler_nfe", "steps_for_budget"]
