"""Methods of the comparison: anything that turns ``x_T`` into samples with a counted NFE.

A :class:`Method` is a registered scoregen sampler (:func:`scoregen_methods`) or a peer
library's sampler (:mod:`scoregen.evaluation.peers`), run at a :class:`Setting` (a step count,
or a tolerance for self-stepping solvers). :func:`plan_steps` turns an NFE budget into the
step count whose counted NFE is the largest one within it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from scoregen.evaluation.compare.problems import Problem, adaptive_grid, initial_noise
from scoregen.models.prediction import Model
from scoregen.sampling.noise import seeds_for
from scoregen.sde.base import SDE

DEFAULT_TOLERANCES = (1e-1, 1e-2, 1e-3)

# draw(model, sde, x_T, setting, seed) -> (samples, counted NFE)
DrawFn = Callable[[Model, SDE, Tensor, "Setting", int], tuple[Tensor, int]]


@dataclass(frozen=True)
class Setting:
    """A fixed step count (``steps``) or, for self-stepping solvers, a ``tolerance``."""

    steps: int | None = None
    tolerance: float | None = None

    def label(self) -> str:
        return f"steps={self.steps}" if self.steps is not None else f"tol={self.tolerance:g}"


@dataclass
class Method:
    """A sampler to compare: ``draw`` maps ``x_T`` to samples and the counted NFE.

    ``family`` is ``"scoregen"``, the peer library's name, or ``"student"`` (a distilled
    student, :mod:`~scoregen.evaluation.compare.students`); ``nfe_per_step`` is ``None``
    for solvers that pick their own steps (run at tolerances: ``tolerances`` when the
    sampler registers its own, as SDE solvers do, whose cost grows like ``tol^-2``, else
    :data:`DEFAULT_TOLERANCES`). ``steps_for(sde, state_shape, budget)`` plans a budget
    without running the model (registered samplers:
    :func:`scoregen.sampling.nfe_budget.steps_for_budget`); without it the NFE of a step
    count is counted by drawing one sample (peers).
    """

    name: str
    family: str
    nfe_per_step: int | None
    stochastic: bool
    draw: DrawFn
    tolerances: tuple[float, ...] = DEFAULT_TOLERANCES
    per_sample_seeds: bool = False  # draw(..., seeds=...) gives sample k its own seed
    steps_for: Callable[[SDE, tuple[int, ...], int], int | None] | None = None
    # a method deterministic at some settings only (a consistency student at 1 step): which
    deterministic: Callable[[Setting], bool] | None = None
    # what a learned method cost to make, at a setting (students: teacher NFE, steps, time)
    cost: Callable[[Setting], dict[str, float]] | None = None

    def deterministic_at(self, setting: Setting) -> bool:
        """Whether the samples at ``setting`` are a deterministic map of ``x_T``."""
        return self.deterministic(setting) if self.deterministic is not None else (
            not self.stochastic)

    @property
    def adaptive(self) -> bool:
        return self.nfe_per_step is None


def tolerance_options(name: str, tolerance: float) -> dict[str, float]:
    """Options of self-stepping sampler ``name`` for one tolerance: its registered
    ``tolerance_options`` (names of the options set to ``tolerance``), else ``rtol``/``atol``."""
    from scoregen import samplers

    keys = samplers.meta(name).get("tolerance_options", ("rtol", "atol"))
    return {k: tolerance for k in keys}


def scoregen_methods(names: Sequence[str] | None = None, spacing: str = "auto",
                     options: dict[str, dict[str, Any]] | None = None,
                     grids: Any = None) -> list[Method]:
    """``auto`` (the sampler :func:`scoregen.sample` picks by default for the budget and the
    guidance, :mod:`scoregen.sampling.recommend`) and every registered sampler (or ``names``)
    as a :class:`Method` on a ``spacing`` grid (``spacing="tuned"``: the grids fitted to the
    model, ``grids``, see :mod:`scoregen.sampling.tuned_grids`)."""
    from scoregen import samplers
    from scoregen.sampling.api import grid_for, sample
    from scoregen.sampling.nfe_budget import steps_for_budget
    from scoregen.sampling.recommend import AUTO

    methods = []
    for name in names or [AUTO, *samplers.list()]:
        # auto resolves to a one-evaluation-per-step sampler for every step count
        meta = ({"nfe_per_step": 1, "stochastic": False} if name == AUTO
                else samplers.meta(name))  # raises a KeyError listing the known samplers
        opts = dict((options or {}).get(name, {}))

        def draw(model, sde, x_T, setting, seed, seeds=None, _name=name, _opts=opts):
            seeds = (seeds_for(x_T.shape[0], seed, device=x_T.device) if seeds is None
                     else seeds.to(x_T.device))
            if setting.steps is not None:
                tuned = {} if grids is None else {"grids": grids}
                res = sample(model, sde, x_T, _name, setting.steps, spacing=spacing,
                             seeds=seeds, check_finite=False, **tuned, **_opts)
            else:
                res = sample(model, sde, x_T, _name, None, ts=adaptive_grid(sde), seeds=seeds,
                             check_finite=False, **tolerance_options(_name, setting.tolerance),
                             **_opts)
            return res.x, res.nfe

        def steps_for(sde, state_shape, budget, _name=name, _opts=opts):
            dim = math.prod(state_shape)
            return steps_for_budget(
                _name, sde, budget,
                lambda k: grid_for(_name, sde, k, spacing, True, grids, _opts, dim=dim),
                state_shape, _opts)

        # planned without the network where the grid is a formula of the SDE; auto and tuned
        # grids (whose choice depends on the budget and the guidance) by counting a run
        by_formula = meta["nfe_per_step"] is not None and name != AUTO and spacing != "tuned"
        methods.append(Method(name, "scoregen", meta["nfe_per_step"], meta["stochastic"], draw,
                              tuple(meta.get("tolerances", DEFAULT_TOLERANCES)), True,
                              steps_for if by_formula else None))
    return methods


def plan_steps(method: Method, problem: Problem, budget: int, seed: int = 0) -> int | None:
    """The step count whose counted NFE is the largest ``<= budget`` (``None`` if none):
    ``method.steps_for`` where the method has it, else
    :func:`scoregen.sampling.nfe_budget.plan_steps` with the NFE counted on a one-sample batch
    (the NFE of a fixed-step method does not depend on the samples)."""
    from scoregen.sampling.nfe_budget import count_nfe
    from scoregen.sampling.nfe_budget import plan_steps as plan

    if method.steps_for is not None:
        return method.steps_for(problem.sde, problem.sde.state_shape(problem.shape), budget)

    x1 = initial_noise(problem, 1, seed)
    model = problem.plan_model or problem.model  # NFE do not depend on the model's values

    def run(steps: int) -> int:
        return method.draw(model, problem.sde, x1, Setting(steps=steps), seed)[1]

    return plan(count_nfe(run), budget, method.nfe_per_step)


# -- inverse problems ---------------------------------------------------------------------------
INVERSE_SAMPLERS = {"replacement": "ancestral", "repaint": "ancestral", "ddnm": "ddim",
                    "pigdm": "ddim", "dps": "ancestral", "smc": "dpm_solver++_sde"}


@dataclass(frozen=True)
class InverseMethod:
    """A posterior-sampling method of :func:`scoregen.solve_inverse` on one sampler, with its
    options; ``name`` is ``method@sampler``."""

    method: str
    sampler: str
    options: dict[str, Any]

    @property
    def name(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.options.items())
        return f"{self.method}@{self.sampler}{extra}"


def inverse_methods(specs: Sequence[str], particles: int = 4, resample: int = 5,
                    options: dict[str, dict[str, Any]] | None = None) -> list[InverseMethod]:
    """``method`` or ``method@sampler`` specs as :class:`InverseMethod` rows; the particle
    method runs ``particles`` particles and RePaint ``resample`` passes (their NFE per step);
    ``options``: method name -> options (e.g. ``{"dps": {"zeta": 0.1}}``)."""
    from scoregen import samplers
    from scoregen.sampling.inverse.methods import METHODS

    out = []
    for spec in specs:
        method, _, sampler = spec.partition("@")
        METHODS.get(method)  # a KeyError listing the methods
        sampler = sampler or INVERSE_SAMPLERS.get(method, "ddim")
        samplers.meta(sampler)
        opts: dict[str, Any] = {}
        if method == "smc":
            opts["particles"] = particles
        if method == "repaint":
            opts["resample"] = resample
        opts.update((options or {}).get(method, {}))
        out.append(InverseMethod(method, sampler, opts))
    return out
