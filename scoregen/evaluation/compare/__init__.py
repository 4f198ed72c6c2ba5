"""Sampler quality versus NFE on one problem: every sampler, the same start, the same metrics.

A :class:`Problem` is a model, its SDE, the event shape and reference samples (plus the
mixture itself when the model is the exact oracle of :mod:`scoregen.models.analytic`). A
:class:`Method` is anything that turns ``x_T`` into samples: a registered scoregen sampler
(:func:`scoregen_methods`) or a peer library's sampler (:mod:`scoregen.evaluation.peers`).
Every method starts from the same ``x_T`` (draw 0 of the per-sample
:class:`~scoregen.sampling.noise.NoiseSource`, exactly what :func:`scoregen.sample` draws) and its
NFE is *counted* by :class:`~scoregen.sampling.denoiser.Denoiser`, never estimated.

NFE budgets become step counts honestly (:func:`plan_steps`): start at ``budget //
nfe_per_step``, count the NFE of that grid on a one-sample batch, and move the step count
until the counted NFE is the largest one ``<= budget``. Samplers that choose their own steps
(``nfe_per_step=None``) run at a list of tolerances and are placed at their counted NFE.

Metrics (:mod:`scoregen.evaluation.metrics`): sliced Wasserstein distance to the reference samples
(``swd``), and on mixtures the NLL gap and the total-variation error of the mode weights
(``mode_tv``). The *noise floor* is the same metric between two independent exact sample
sets of the same size: differences below it are not resolved by the sample size.

:func:`run_comparison` returns a :class:`Comparison`; :func:`write_outputs` writes
``results.md`` (tables, best scoregen sampler in **bold** and best peer in _italics_ per
budget), ``results.csv``, ``results.json``, ``quality_vs_nfe.png`` and ``samples_nfe<B>.png``.

:func:`run_inverse` compares posterior-sampling methods on inverse problems
(:class:`InverseProblem`: the oracle with the exact posterior, or a digits model with the true
labels) and :func:`write_inverse_outputs` writes its tables and plots.

The comparison is split by job: :mod:`~scoregen.evaluation.compare.problems`,
:mod:`~scoregen.evaluation.compare.methods`, :mod:`~scoregen.evaluation.compare.sweep` and
:mod:`~scoregen.evaluation.compare.report`; their public names are re-exported here.
"""

from __future__ import annotations

from scoregen.evaluation.compare.methods import (
    DEFAULT_TOLERANCES,
    INVERSE_SAMPLERS,
    DrawFn,
    InverseMethod,
    Method,
    Setting,
    inverse_methods,
    plan_steps,
    scoregen_methods,
    tolerance_options,
)
from scoregen.evaluation.compare.problems import (
    GUIDED_METRICS,
    INVERSE_METRICS,
    MIXTURE_METRICS,
    InverseProblem,
    Problem,
    adaptive_grid,
    checkpoint_problem,
    digits_inverse_problem,
    guided_problem,
    initial_noise,
    model_problem,
    oracle_inverse_problem,
    oracle_problem,
)
from scoregen.evaluation.compare.report import (
    HIGHER_IS_BETTER,
    check_outputs,
    guidance_summary,
    inverse_markdown,
    markdown,
    output_paths,
    plot_inverse,
    plot_quality,
    plot_samples,
    write_csv,
    write_inverse_outputs,
    write_outputs,
)
from scoregen.evaluation.compare.sweep import (
    DEFAULT_BUDGETS,
    Comparison,
    InverseComparison,
    InverseRecord,
    Record,
    draw_sharded,
    evaluate,
    inverse_floor,
    inverse_metrics,
    run_comparison,
    run_inverse,
    shown_budget,
)

__all__ = [
    "DEFAULT_BUDGETS",
    "DEFAULT_TOLERANCES",
    "GUIDED_METRICS",
    "HIGHER_IS_BETTER",
    "INVERSE_METRICS",
    "INVERSE_SAMPLERS",
    "MIXTURE_METRICS",
    "Comparison",
    "DrawFn",
    "InverseComparison",
    "InverseMethod",
    "InverseProblem",
    "InverseRecord",
    "Method",
    "Problem",
    "Record",
    "Setting",
    "adaptive_grid",
    "check_outputs",
    "checkpoint_problem",
    "digits_inverse_problem",
    "draw_sharded",
    "evaluate",
    "guidance_summary",
    "guided_problem",
    "initial_noise",
    "inverse_floor",
    "inverse_markdown",
    "inverse_methods",
    "inverse_metrics",
    "markdown",
    "model_problem",
    "oracle_inverse_problem",
    "oracle_problem",
    "output_paths",
    "plan_steps",
    "plot_inverse",
    "plot_quality",
    "plot_samples",
    "run_comparison",
    "run_inverse",
    "scoregen_methods",
    "shown_budget",
    "tolerance_options",
    "write_csv",
    "write_inverse_outputs",
    "write_outputs",
]
