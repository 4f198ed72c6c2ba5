"""Methods of the comparison: anything that turns ``x_T`` into samples with a counted NFE.

A :class:`Method` is a registered scoregen sampler (:func:`scoregen_methods`) or a peer
library's sampler (:mod:`scoregen.evaluation.peers`), run at a :class:`Setting` (a step count,
or a tolerance for self-stepping solvers). :func:`plan_steps` turns an NFE budget into the
step count whose counted NFE is the largest one within it.
"""

from __future__ import annotations

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

    ``family`` is ``"scoregen"`` or the peer library's name; ``nfe_per_step`` is ``None``
    for solvers that pick their own steps (run at tolerances: ``tolerances`` when the
    sampler registers its own, as SDE solvers do, whose cost grows like ``tol^-2``, else
    :data:`DEFAULT_TOLERANCES`).
    """

    name: str
    family: str
    nfe_per_step: int | None
    stochastic: bool
    draw: DrawFn
    tolerances: tuple[float, ...] = DEFAULT_TOLERANCES
    per_sample_seeds: bool = False  # draw(..., seeds=...) gives sample k its own seed

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
    from scoregen.sampling.api import sample
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

        methods.append(Method(name, "scoregen", meta["nfe_per_step"], meta["stochastic"], draw,
                              tuple(meta.get("tolerances", DEFAULT_TOLERANCES)), True))
    return methods


def plan_steps(method: Method, problem: Problem, budget: int, seed: int = 0) -> int | None:
    """The step count whose counted NFE is the largest ``<= budget`` (``None`` if none):
    :func:`scoregen.sampling.nfe_budget.plan_steps` with the NFE counted on a one-sample batch (the
    NFE of a fixed-step method does not depend on the samples)."""
    from scoregen.sampling.nfe_budget import count_nfe
    from scoregen.sampling.nfe_budget import plan_steps as plan

    x1 = initial_noise(problem, 1, seed)
    model = problem.plan_model or problem.model  # NFE do not depend on the model's values

    def run(steps: int) -> int:
        return method.draw(model, problem.sde, x1, Setting(steps=steps), seed)[1]

    return plan(count_nfe(run), budget, method.nfe_per_step)
