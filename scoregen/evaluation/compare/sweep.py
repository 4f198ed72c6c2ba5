"""The sweep: every method at every budget from the same ``x_T``, scored by the same metrics.

:func:`run_comparison` plans each method's step counts for the NFE budgets (tolerances for
self-stepping solvers), draws (sharded under ``torchrun``), scores the samples
(:func:`evaluate`) and returns a :class:`Comparison` of :class:`Record` rows.

:func:`run_inverse` does the same for inverse problems: every posterior-sampling method at
every NFE budget (counted, every particle and RePaint pass included) on every
:class:`~scoregen.evaluation.compare.problems.InverseProblem`, plus the particle method's curve
over the number of particles at a fixed step count, scored by :func:`inverse_metrics`.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scoregen.evaluation.compare.methods import InverseMethod, Method, Setting, plan_steps
from scoregen.evaluation.compare.problems import InverseProblem, Problem, initial_noise
from scoregen.infra import distributed

DEFAULT_BUDGETS = (5, 10, 20, 50, 100, 1000)


@dataclass
class Record:
    """One run: ``budget`` is the NFE budget asked for (``None`` for tolerance runs)."""

    method: str
    family: str
    budget: int | None
    steps: int | None
    tolerance: float | None
    nfe: int
    seconds: float
    metrics: dict[str, float]
    cost: dict[str, float] | None = None  # a student's: teacher NFE, optimizer steps, seconds


@dataclass
class Comparison:
    problem: dict[str, Any]
    settings: dict[str, Any]
    floor: dict[str, float]
    records: list[Record] = field(default_factory=list)
    samples: dict[str, Tensor] = field(default_factory=dict)  # method -> samples at show_nfe
    skipped: list[str] = field(default_factory=list)


def evaluate(x: Tensor, problem: Problem, seed: int = 0) -> dict[str, float]:
    """``swd`` against the reference; ``nll_gap`` and ``mode_tv`` on mixtures; ``fd_digits``
    (Fréchet distance on the digits classifier's features) on 8x8 digit images."""
    from scoregen.evaluation import digits_classifier, metrics
    x = x.detach().to(torch.float64).cpu()
    if not torch.isfinite(x).all():
        return {m: math.nan for m in problem.metric_names()}
    out = {"swd": metrics.sliced_wasserstein(x.flatten(1), problem.reference.to(x).flatten(1),
                                             n_projections=256, seed=seed)}
    if problem.labels is not None:
        ref = problem.endpoint_reference.to(x)
        out["endpoint"] = (x - ref).flatten(1).pow(2).sum(1).sqrt().mean()
        pred = problem.mixture.class_log_probs(x).argmax(1)
        out["class_acc"] = (pred == problem.labels[: len(x)]).to(torch.float64).mean()
        return {k: float(v) for k, v in out.items()}
    if problem.mixture is not None:
        out["nll_gap"] = metrics.nll_gap(x, problem.mixture, entropy=problem.entropy())
        out["mode_tv"] = metrics.mode_weight_error(x, problem.mixture)
    if "fd_digits" in problem.metric_names():
        out["fd_digits"] = digits_classifier.frechet_digits(x, problem.reference.to(x))
    return {k: float(v) for k, v in out.items()}


def shown_budget(budgets: Sequence[int], show_nfe: int | None = None) -> int:
    """The budget whose samples the plot shows: ``show_nfe``, else the budget nearest 20
    (an error for budgets that are not positive integers)."""
    budgets = sorted(set(int(b) for b in budgets))
    if not budgets or budgets[0] < 1:
        raise ValueError(f"NFE budgets must be positive integers, got {budgets}")
    return show_nfe or min(budgets, key=lambda b: abs(math.log(b / 20)))


def endpoint_error(x: Tensor, reference: Tensor) -> float:
    """Mean over samples of ``|x_k - ref_k|`` (Euclidean norm): the distance of a deterministic
    method's samples to the reference ODE map of the same ``x_T`` (NaN for non-finite
    samples)."""
    x = x.detach().to(torch.float64).cpu()
    if not torch.isfinite(x).all():
        return math.nan
    ref = reference[: len(x)].to(x)
    return float((x - ref).flatten(1).norm(dim=1).mean())


@torch.no_grad()  # peers' loops call the model as is: without this each step keeps its graph
def run_comparison(
    problem: Problem,
    methods: Sequence[Method],
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    tolerances: Sequence[float] | None = None,
    *,
    n: int | None = None,
    seed: int = 0,
    max_multi_nfe: int | None = 100,
    show_nfe: int | None = None,
    progress: bool = True,
) -> Comparison:
    """Run every method at every budget (tolerance for self-stepping ones) and score it.

    ``max_multi_nfe``: methods with more than one NFE per step skip budgets above it
    (``None``: no limit). ``show_nfe``: the budget whose samples are kept for the plot
    (default: the budget nearest 20).
    """
    n = n or len(problem.reference)
    budgets = sorted(set(int(b) for b in budgets))
    show = shown_budget(budgets, show_nfe)
    x_T = initial_noise(problem, n, seed)
    jobs: list[tuple[Method, int | None, Setting]] = []
    skipped: list[str] = []
    for m in methods:
        if m.adaptive:
            jobs += [(m, None, Setting(tolerance=float(tol)))
                     for tol in (m.tolerances if tolerances is None else tolerances)]
            continue
        for b in budgets:
            if max_multi_nfe and m.nfe_per_step > 1 and b > max_multi_nfe:
                continue
            steps = plan_steps(m, problem, b, seed)
            if steps is None:
                skipped.append(f"{m.name} at {b} NFE (no step count fits the budget)")
            else:
                jobs.append((m, b, Setting(steps=steps)))
    listed = {m.name: list(m.tolerances if tolerances is None else tolerances)
              for m in methods if m.adaptive}
    comp = Comparison(_describe(problem, n), {"budgets": budgets, "tolerances": listed,
                      "seed": seed, "n": n, "show_nfe": show}, {}, skipped=skipped)
    main = distributed.context().is_main  # under torchrun: rank 0 gathers and scores
    if problem.floor_reference is not None and main:
        comp.floor = evaluate(problem.floor_reference[:n], problem, seed)
    bar = tqdm(jobs, desc="compare", disable=not (progress and main))
    for m, budget, setting in bar:
        bar.set_postfix_str(f"{m.name} {setting.label()}")
        start = time.perf_counter()
        x, nfe = draw_sharded(m, problem, x_T, setting, seed)
        seconds = time.perf_counter() - start
        scores = evaluate(x, problem, seed) if main else {}
        if main and problem.labels is None and problem.endpoint_reference is not None and (
                m.deterministic_at(setting)):
            scores["endpoint"] = endpoint_error(x, problem.endpoint_reference)
        comp.records.append(Record(m.name, m.family, budget, setting.steps, setting.tolerance,
                                   int(nfe), seconds, scores,
                                   None if m.cost is None else m.cost(setting)))
        middle = m.adaptive and setting.tolerance == listed[m.name][len(listed[m.name]) // 2]
        if (budget == show or middle) and main:
            comp.samples[m.name] = x.detach().float().cpu()
    return comp


def draw_sharded(m: Method, problem: Problem, x_T: Tensor, setting: Setting, seed: int
                 ) -> tuple[Tensor | None, int]:
    """``m.draw`` on ``x_T``; under ``torchrun`` each rank draws the samples ``k`` with ``k mod
    world == rank`` (with their own seeds ``seed + k`` where the method takes per-sample
    seeds; a peer's generator is seeded ``seed + rank``) and rank 0 gets them all in index
    order (other ranks: ``None``). The NFE is the largest of the ranks' counts (they differ
    only for self-stepping solvers, whose step control sees their own shard)."""
    ctx = distributed.context()
    if not ctx.distributed:
        return m.draw(problem.model, problem.sde, x_T.clone(), setting, seed)
    index = distributed.shard(len(x_T))
    x_local = x_T[index.to(x_T.device)].clone()
    if m.per_sample_seeds:
        x, nfe = m.draw(problem.model, problem.sde, x_local, setting, seed, seeds=seed + index)
    else:
        x, nfe = m.draw(problem.model, problem.sde, x_local, setting, seed + ctx.rank)
    nfe = int(distributed.all_reduce(torch.tensor(int(nfe)), "max"))
    return distributed.gather_ordered(x.contiguous(), len(x_T)), nfe


def _describe(problem: Problem, n: int) -> dict[str, Any]:
    return {"name": problem.name, "sde": problem.sde.config(), "shape": list(problem.shape),
            "n": n, "dtype": str(problem.dtype).replace("torch.", ""),
            "metrics": list(problem.metric_names()),
            "machine": f"{platform.machine()} {platform.system()}, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads"}


# -- inverse problems ---------------------------------------------------------------------------
@dataclass
class InverseRecord:
    """One run on one inverse problem: ``budget`` is the NFE budget (``None`` on the particle
    curve, which runs ``steps`` steps with ``particles`` particles)."""

    problem: str
    method: str
    budget: int | None
    steps: int
    nfe: int
    seconds: float
    metrics: dict[str, float]
    particles: int | None = None


@dataclass
class InverseComparison:
    settings: dict[str, Any]
    problems: dict[str, dict[str, Any]]  # name -> operator, sigma_y, floor metrics
    records: list[InverseRecord] = field(default_factory=list)
    samples: dict[tuple[str, str], Tensor] = field(default_factory=dict)  # (problem, method)
    skipped: list[str] = field(default_factory=list)


def inverse_metrics(x: Tensor, problem: InverseProblem) -> dict[str, float]:
    """Means over the problem's points of each point's metrics; ``x: (P * n, *shape)``, the
    ``n`` samples of point ``p`` at rows ``p n .. (p + 1) n - 1``.

    On the oracle, in the coordinates of each exact posterior (``LinearPosterior.coords``: the
    affine set ``A x = y`` when ``sigma_y = 0``): ``swd`` (sliced W2 to the exact reference
    set), ``nll_gap`` (``E[-log p(x | y)] - H(x | y)``, nats), ``weight_tv`` (total variation
    of the posterior component weights); everywhere ``residual``: the RMS of ``A x - y`` per
    measured value. On digits: ``label_agreement``, the fraction of samples the digits
    classifier gives the true label of their point.
    """
    from scoregen.evaluation import metrics

    x = x.detach().to(torch.float64).cpu()
    names = problem.metric_names()
    if not torch.isfinite(x).all():
        return {m: math.nan for m in names}
    P = problem.points
    xs = x.reshape(P, -1, *x.shape[1:])
    op = problem.operator
    m = max(1, int(op.rows().sum())) if not getattr(op, "per_sample", False) else 1
    resid = op.A(x) - problem.y.repeat_interleave(xs.shape[1], 0).to(x)
    residual = float(resid.flatten(1).pow(2).sum(1).div(m).mean().sqrt())
    if problem.posteriors is None:
        from scoregen.evaluation.digits_classifier import get_classifier

        net = get_classifier()  # trains on first use: outside no_grad
        with torch.no_grad():
            pred = net(x.to(torch.float32)).argmax(1)
        truth = problem.labels.repeat_interleave(xs.shape[1])
        return {"label_agreement": float((pred == truth).to(torch.float64).mean()),
                "residual": residual}
    swd = gap = tv = 0.0
    for p, post in enumerate(problem.posteriors):
        z = post.coords(xs[p])
        swd += metrics.sliced_wasserstein(z, post.coords(problem.references[p][0]))
        gap += metrics.nll_gap(z, post.mixture, entropy=problem.entropies[p])
        tv += metrics.mode_weight_error(z, post.mixture)
    return {"swd": swd / P, "nll_gap": gap / P, "weight_tv": tv / P, "residual": residual}


def inverse_floor(problem: InverseProblem) -> dict[str, float]:
    """The metrics of exact posterior samples (the second reference sets), and ``nll_se``: the
    standard error of the NLL gap at this sample size (``std log p / sqrt(n)``, mean over the
    points); on digits, ``label_agreement`` of the true images."""
    if problem.posteriors is None:
        return inverse_metrics(problem.truth, problem)
    exact = torch.cat([b for _, b in problem.references])
    out = inverse_metrics(exact, problem)
    se = [float(post.log_prob(b).std() / math.sqrt(len(b)))
          for post, (_, b) in zip(problem.posteriors, problem.references, strict=True)]
    out["nll_se"] = sum(se) / len(se) / math.sqrt(len(se))
    return out


def run_inverse(problems: Sequence[InverseProblem], methods: Sequence[InverseMethod],
                budgets: Sequence[int], *, n: int = 500, curve: Sequence[int] = (),
                curve_steps: int = 100, curve_sampler: str = "dpm_solver++_sde", seed: int = 0,
                show_nfe: int | None = None, progress: bool = True) -> InverseComparison:
    """Every method at every budget on every problem (``n`` samples per point), then the
    particle method with ``curve`` particle counts at ``curve_steps`` steps (with the options of
    the ``smc`` row of ``methods``, if any). ``show_nfe``: the budget whose samples are kept for
    the image grids (default: the largest)."""
    from scoregen.sampling.inverse.solve import solve_inverse

    budgets = sorted(set(int(b) for b in budgets))
    if not budgets or budgets[0] < 1:
        raise ValueError(f"NFE budgets must be positive integers, got {budgets}")
    show = show_nfe or budgets[-1]
    jobs: list[tuple[InverseProblem, InverseMethod, int | None, int | None]] = [
        (p, m, b, None) for p in problems for m in methods for b in budgets]
    curve_opts = next((m.options for m in methods if m.method == "smc"), {})
    jobs += [(p, InverseMethod("smc", curve_sampler, {**curve_opts, "particles": k}), None, k)
             for p in problems for k in curve]
    comp = InverseComparison(
        {"budgets": budgets, "n": n, "seed": seed, "curve": list(curve),
         "curve_steps": curve_steps, "curve_sampler": curve_sampler, "show_nfe": show,
         "machine": _describe_machine()},
        {p.name: {"operator": p.operator.name, "sigma_y": p.sigma_y, "points": p.points,
                  "sde": p.sde.config(), "floor": inverse_floor(p)} for p in problems})
    bar = tqdm(jobs, desc="inverse", disable=not progress)
    for problem, method, budget, k in bar:
        bar.set_postfix_str(f"{problem.operator.name} {problem.sigma_y:g} {method.name} "
                            f"{budget or ''}")
        y = problem.y.repeat_interleave(n, 0)
        plan = {"nfe": budget} if budget is not None else {"steps": curve_steps}
        start = time.perf_counter()
        try:
            res = solve_inverse(problem.model, problem.sde, problem.operator, y, method.method,
                                method.sampler, sigma_y=problem.sigma_y, seed=seed,
                                dtype=problem.dtype, check_finite=False, **plan,
                                **method.options)
        except ValueError as err:
            comp.skipped.append(f"{problem.name} {method.name} at {budget} NFE: {err}")
            continue
        seconds = time.perf_counter() - start
        comp.records.append(InverseRecord(problem.name, method.name, budget, len(res.ts) - 1,
                                          res.nfe, seconds, inverse_metrics(res.x, problem), k))
        if budget == show:
            comp.samples[problem.name, method.name] = res.x.detach().float().cpu()
    return comp


def _describe_machine() -> str:
    return (f"{platform.machine()} {platform.system()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")
