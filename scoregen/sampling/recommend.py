"""``sampler="auto"``: the sampler and options that measured best for a budget and a guidance.

:func:`recommend` is the table of docs/samplers.md ("which sampler at which budget") as code,
read from the exact-oracle measurements (``experiments/default_grid.py``,
``experiments/guided_few_step.py``). It is UniPC (Zhao et al. 2023) on the default grid
(``spacing="auto"``, the ``data`` spacing of :mod:`scoregen.sampling.grid`), with the order
``p`` of its predictor (the corrector adds one) chosen from the budget ``N`` (NFE) and the
guidance scale ``w`` (``s = max(w - 1, 0)``; ``s = 0`` unguided or plain conditional)::

    p = 1   if N < min(20, 6 s)     (predictor DDIM, corrector UniC-1: second order)
    p = 3   if N >= max(20, 10 s)   (fourth order)
    p = 2   otherwise               (third order)

Why the orders. Unguided, the order-3 predictor's smaller local error wins from 20 NFE
(5-13x lower endpoint error at 50-100 NFE on every measured mixture and process) and the
order-2 one below. Classifier-free guidance makes the probability-flow ODE stiff where the
classes separate: the guided data prediction ``x0_u + w (x0_c - x0_u)`` changes with ``x`` like
``-(w - 1)`` times the between-class posterior variance over ``sigma~^2``, so a multistep
predictor, which extrapolates through that band from predictions made before it, overshoots
unless its steps are short: the budget it needs grows like ``w - 1`` (the blow-ups and lost
classes of dpm-solver issue #50, and the reason users fall back to DDIM at large scales).
The constants are the measured thresholds (ring8 with 8 and with 2 interleaved classes,
mix64 with 3; ``w`` = 2, 4, 8; 5-50 NFE): below ``6 s`` the order-1 predictor, which uses
only the current evaluation, stays bounded where the higher orders do not (``w = 8``, 10
NFE: order 2 reaches an endpoint error of 1.1 on ring8 with two interleaved classes, where
order 1 stays at 0.38; order 3 reaches 21.7 on mix64); from 20 NFE the order-2 predictor is
stable at every measured scale and more accurate (mix64, ``w = 8``: 0.010 against 0.109),
and the order-3 one needs ``10 s``.

A grid fitted to the model for the same guidance (``scoregen tune-grid --class all
--guidance w``) beats every formula grid at 5-10 NFE; ``scoregen.sample(..., grids=RUN)`` uses
it when it exists for the recommended sampler (:func:`scoregen.sampling.api.sample`).
"""

from __future__ import annotations

from typing import Any

from scoregen.samplers import missing
from scoregen.sde.base import SDE

AUTO = "auto"
HIGH_ORDER_FROM = 20  # NFE from which the order-3 predictor can pay off (unguided)
LOW_ORDER_PER_SCALE = 6  # guided: the order-1 predictor below min(20, 6 (w - 1)) NFE
MID_ORDER_PER_SCALE = 10  # guided: the order-3 predictor from 10 (w - 1) NFE


def recommend(nfe: int, guidance: float | None = None) -> tuple[str, dict[str, Any]]:
    """``(sampler, options)`` for a budget of ``nfe`` evaluations (the step count of a
    one-evaluation-per-step sampler) under guidance scale ``guidance`` (``None``: unguided);
    the rule and the measurements behind it are in the module docstring."""
    if not isinstance(nfe, int) or isinstance(nfe, bool) or nfe < 1:
        raise ValueError(f"an NFE budget must be an integer >= 1, got {nfe!r}")
    stiff = max(0.0, (guidance or 0.0) - 1.0)
    if nfe < min(HIGH_ORDER_FROM, LOW_ORDER_PER_SCALE * stiff):
        return "unipc", {"order": 1}
    if nfe >= max(HIGH_ORDER_FROM, MID_ORDER_PER_SCALE * stiff):
        return "unipc", {"order": 3}
    return "unipc", {"order": 2}


def resolve(sampler: str, options: dict[str, Any], nfe: int | None, steps: int | None,
            guidance: float | None = None, sde: SDE | None = None
            ) -> tuple[str, dict[str, Any]]:
    """``(sampler, options)`` with ``"auto"`` replaced by :func:`recommend` for the budget
    ``nfe`` (else ``steps``); options given explicitly override the recommended ones. Where the
    recommended sampler does not run on ``sde`` (a process without the scalar kernel), the
    process's own ``default_sampler``. Any other sampler is returned as is."""
    if sampler != AUTO:
        return sampler, options
    budget = nfe if nfe is not None else steps
    if budget is None:
        raise ValueError("sampler='auto' needs a budget: give nfe= or steps= (or a grid ts=)")
    name, recommended = recommend(int(budget), guidance)
    if sde is not None and missing(name, sde):
        return sde.default_sampler, dict(options)
    return name, {**recommended, **options}


__all__ = ["AUTO", "HIGH_ORDER_FROM", "LOW_ORDER_PER_SCALE", "MID_ORDER_PER_SCALE", "recommend",
           "resolve"]
