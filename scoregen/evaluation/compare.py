"""Sampler quality versus NFE on one problem: every sampler, the same start, the same metrics.

A :class:`Problem` is a model, its SDE, the event shape and reference samples (plus the
mixture itself when the model is the exact oracle of :mod:`scoregen.analytic`). A
:class:`Method` is anything that turns ``x_T`` into samples: a registered scoregen sampler
(:func:`scoregen_methods`) or a peer library's sampler (:mod:`scoregen.evaluation.peers`).
Every method starts from the same ``x_T`` (draw 0 of the per-sample
:class:`~scoregen.noise.NoiseSource`, exactly what :func:`scoregen.sample` draws) and its NFE
is *counted* by :class:`~scoregen.param.Denoiser`, never estimated.

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
"""

from __future__ import annotations

import csv
import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scoregen import distributed
from scoregen.analytic import GaussianMixture, preset
from scoregen.noise import NoiseSource, seeds_for
from scoregen.param import Model
from scoregen.sde.base import SDE

DEFAULT_BUDGETS = (5, 10, 20, 50, 100, 1000)
DEFAULT_TOLERANCES = (1e-1, 1e-2, 1e-3)
MIXTURE_METRICS = ("swd", "nll_gap", "mode_tv")
GUIDED_METRICS = ("endpoint", "class_acc", "swd")
HIGHER_IS_BETTER = ("class_acc",)

# draw(model, sde, x_T, setting, seed) -> (samples, counted NFE)
DrawFn = Callable[[Model, SDE, Tensor, "Setting", int], tuple[Tensor, int]]


@dataclass
class Problem:
    """What every method samples: ``model`` under ``sde``, events of shape ``shape``.

    ``reference``/``floor_reference``: two independent sets of true samples ``(n, *shape)``
    (the second gives the metric's noise floor; may be ``None``). ``mixture``: the exact
    data distribution when known (enables ``nll_gap`` and ``mode_tv``).
    """

    name: str
    model: Model
    sde: SDE
    shape: tuple[int, ...]
    reference: Tensor
    floor_reference: Tensor | None = None
    mixture: GaussianMixture | None = None
    dtype: torch.dtype = torch.float64
    device: torch.device | str = "cpu"
    labels: Tensor | None = None
    endpoint_reference: Tensor | None = None
    plan_model: Model | None = None
    _entropy: float | None = field(default=None, repr=False)

    def metric_names(self) -> tuple[str, ...]:
        if self.labels is not None:
            return GUIDED_METRICS
        if self.mixture is not None:
            return MIXTURE_METRICS
        return ("swd", "fd_digits") if self.shape == (1, 8, 8) else ("swd",)

    def entropy(self) -> float:
        """``H(p_data)`` of the mixture (Monte Carlo, computed once; see ``nll_gap``)."""
        if self._entropy is None:
            self._entropy = self.mixture.entropy(200_000, torch.Generator().manual_seed(0))
        return self._entropy


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


@dataclass
class Comparison:
    problem: dict[str, Any]
    settings: dict[str, Any]
    floor: dict[str, float]
    records: list[Record] = field(default_factory=list)
    samples: dict[str, Tensor] = field(default_factory=dict)  # method -> samples at show_nfe
    skipped: list[str] = field(default_factory=list)


# -- problems ------------------------------------------------------------------------------------
def oracle_problem(name: str = "ring8", sde: str | SDE = "vp", n: int = 2000, seed: int = 0,
                   dtype: torch.dtype = torch.float64) -> Problem:
    """The exact mixture ``name`` (see :func:`scoregen.analytic.preset`) under ``sde``."""
    from scoregen import sde as sde_lib

    mixture = preset(name)
    process = sde_lib.get(sde) if isinstance(sde, str) else sde
    g = torch.Generator().manual_seed(10_000 + seed)
    ref, floor = mixture.sample(n, g), mixture.sample(n, g)
    return Problem(f"{name} (exact oracle, {process.name})", mixture.model(process), process,
                   mixture.shape, ref.to(dtype), floor.to(dtype), mixture, dtype)


def guided_problem(name: str = "ring8", sde: str | SDE = "vp", scale: float = 1.0,
                   n: int = 2000, seed: int = 0, dtype: torch.dtype = torch.float64,
                   rtol: float = 1e-10) -> Problem:
    """Classifier-free guidance at ``scale`` on the exact class-conditional oracle.

    Sample ``k`` asks for class ``k mod C`` (each component of the preset is a class). The
    reference is a high-accuracy solve of the guided probability-flow ODE from the same
    ``x_T`` (dopri5 at ``rtol = atol = rtol`` in float64), so ``endpoint`` (RMS distance per
    sample to its own reference endpoint) isolates each method's solver error; ``class_acc``
    is the exact Bayes classifier's accuracy on the requested class and ``swd`` the sliced
    Wasserstein distance to the reference endpoints. Every method, peers included, sees the
    same guided model (:class:`scoregen.guidance.Guided`).
    """
    from scoregen import sde as sde_lib
    from scoregen.guidance import guide
    from scoregen.sampling import sample

    mixture = preset(name)
    process = sde_lib.get(sde) if isinstance(sde, str) else sde
    labels = torch.arange(n) % mixture.num_classes
    oracle = mixture.model(process)
    model = guide(oracle, labels, float(scale))
    noise = NoiseSource(seeds_for(n, seed), mixture.shape, torch.float64)
    x_T = process.prior_std() * noise.draw(0)
    ref = sample(model, process, x_T, "ode_dopri5", None, ts=_adaptive_grid(process),
                 rtol=rtol, atol=rtol).x
    return Problem(f"{name} (exact oracle, {process.name}, CFG scale {scale:g})", model,
                   process, mixture.shape, ref.to(dtype), None, mixture, dtype,
                   labels=labels, endpoint_reference=ref.to(dtype), plan_model=oracle)


def checkpoint_problem(path: str | Path, n: int = 2000, *, reference: str | Path | None = None,
                       sde: str | None = None, ema: bool = True,
                       device: str | torch.device = "cpu") -> Problem:
    """A trained model on the run's dataset (see :func:`model_problem`)."""
    from scoregen.training.checkpoint import load_model, read_checkpoint
    from scoregen.training.config import parse_config

    model = load_model(path, ema=ema, device=device)
    run_cfg = read_checkpoint(path).meta.get("run_config")
    if not run_cfg and reference is None:
        raise ValueError(f"checkpoint {path} holds no run config; give --reference file.npz")
    cfg = parse_config(run_cfg) if run_cfg else None
    return model_problem(model, n, shape=tuple(model.network.spec["shape"]),
                         name=f"checkpoint {path}", dataset=cfg.data.name if cfg else None,
                         data_options=cfg.data.options if cfg else None, reference=reference,
                         sde=sde, device=device)


def model_problem(model: Model, n: int = 2000, *, shape: tuple[int, ...], name: str,
                  dataset: str | None = None, data_options: dict[str, Any] | None = None,
                  reference: str | Path | None = None, sde: str | None = None,
                  device: str | torch.device = "cpu") -> Problem:
    """Any model (a trained run, an adapter, ``--model module:function``); reference samples
    from ``reference`` (an ``.npz``; array ``x`` or the first array) or else the test split of
    ``dataset`` (mixture datasets also give the exact mixture). The noise floor compares a
    second real set with the reference: the rest of the split when it holds ``2n`` samples,
    else the dataset's train split (8x8 digits: the 1500 train images against the 297 test
    images)."""
    import numpy as np

    from scoregen import sde as sde_lib
    from scoregen.data import load_dataset
    from scoregen.param import retarget

    process = sde_lib.get(sde) if sde else model.sde
    options = dict(data_options or {})
    mixture = None
    if reference is not None:
        with np.load(reference, allow_pickle=False) as npz:
            data = torch.as_tensor(npz["x"] if "x" in npz.files else npz[npz.files[0]])
    else:
        if dataset is None:
            raise ValueError(f"{name}: no dataset for the reference samples; give "
                             "--reference file.npz")
        data = load_dataset(dataset, "test", **options)
        if dataset == "mixture":
            mixture = preset(options.get("preset", "ring8"))
    data = data.to(torch.float32)
    if tuple(data.shape[1:]) != tuple(shape):
        raise ValueError(f"reference samples have shape {tuple(data.shape[1:])}, the model "
                         f"makes {tuple(shape)}")
    ref = data[:n]
    floor = data[n:2 * n] if len(data) >= 2 * n else None
    if floor is None and reference is None:  # a small test split: real train data as the floor
        floor = load_dataset(dataset, "train", **options)[:n].to(torch.float32)
    return Problem(f"{name} ({process.name})", retarget(model, process), process, tuple(shape),
                   ref, floor, mixture, torch.float32, device)


# -- methods -------------------------------------------------------------------------------------
def tolerance_options(name: str, tolerance: float) -> dict[str, float]:
    """Options of self-stepping sampler ``name`` for one tolerance: its registered
    ``tolerance_options`` (names of the options set to ``tolerance``), else ``rtol``/``atol``."""
    from scoregen import samplers

    keys = samplers.meta(name).get("tolerance_options", ("rtol", "atol"))
    return {k: tolerance for k in keys}


def scoregen_methods(names: Sequence[str] | None = None, spacing: str = "auto",
                     options: dict[str, dict[str, Any]] | None = None,
                     grids: Any = None) -> list[Method]:
    """Every registered sampler (or ``names``) as a :class:`Method` on a ``spacing`` grid
    (``spacing="tuned"``: the grids fitted to the model, ``grids``, see
    :mod:`scoregen.tuned_grids`)."""
    from scoregen import samplers
    from scoregen.sampling import sample

    methods = []
    for name in names or samplers.list():
        meta = samplers.meta(name)  # raises a KeyError listing the known samplers
        opts = dict((options or {}).get(name, {}))

        def draw(model, sde, x_T, setting, seed, seeds=None, _name=name, _opts=opts):
            seeds = (seeds_for(x_T.shape[0], seed, device=x_T.device) if seeds is None
                     else seeds.to(x_T.device))
            if setting.steps is not None:
                tuned = {} if grids is None else {"grids": grids}
                res = sample(model, sde, x_T, _name, setting.steps, spacing=spacing,
                             seeds=seeds, check_finite=False, **tuned, **_opts)
            else:
                res = sample(model, sde, x_T, _name, None, ts=_adaptive_grid(sde), seeds=seeds,
                             check_finite=False, **tolerance_options(_name, setting.tolerance),
                             **_opts)
            return res.x, res.nfe

        methods.append(Method(name, "scoregen", meta["nfe_per_step"], meta["stochastic"], draw,
                              tuple(meta.get("tolerances", DEFAULT_TOLERANCES)), True))
    return methods


def _adaptive_grid(sde: SDE) -> Tensor:
    """The grid a self-stepping solver is given: ``[T, t_min, 0]`` (it picks its own steps
    in between and ends with the denoising step)."""
    return torch.tensor([sde.T, sde.t_min, 0.0], dtype=torch.float64)


def initial_noise(problem: Problem, n: int, seed: int) -> Tensor:
    """``x_T`` for samples ``seed .. seed+n-1``: exactly the draw :func:`scoregen.sample` makes."""
    noise = NoiseSource(seeds_for(n, seed), problem.shape, problem.dtype, problem.device)
    return problem.sde.prior_std() * noise.draw(0)


def plan_steps(method: Method, problem: Problem, budget: int, seed: int = 0) -> int | None:
    """The step count whose counted NFE is the largest ``<= budget`` (``None`` if none):
    :func:`scoregen.nfe_budget.plan_steps` with the NFE counted on a one-sample batch (the
    NFE of a fixed-step method does not depend on the samples)."""
    from scoregen.nfe_budget import count_nfe
    from scoregen.nfe_budget import plan_steps as plan

    x1 = initial_noise(problem, 1, seed)
    model = problem.plan_model or problem.model  # NFE do not depend on the model's values

    def run(steps: int) -> int:
        return method.draw(model, problem.sde, x1, Setting(steps=steps), seed)[1]

    return plan(count_nfe(run), budget, method.nfe_per_step)


# -- metrics -------------------------------------------------------------------------------------
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


# -- the sweep -----------------------------------------------------------------------------------
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
    if not budgets or budgets[0] < 1:
        raise ValueError(f"NFE budgets must be positive integers, got {budgets}")
    show = show_nfe or min(budgets, key=lambda b: abs(math.log(b / 20)))
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
        comp.records.append(Record(m.name, m.family, budget, setting.steps, setting.tolerance,
                                   int(nfe), seconds, evaluate(x, problem, seed) if main else {}))
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


# -- outputs -------------------------------------------------------------------------------------
def _score(value: float) -> float:
    """Ranking key: the size of the error (``nll_gap`` is signed), NaN ranks last."""
    return math.inf if math.isnan(value) else abs(value)


def _cell(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"


def _oriented(metric: str, value: float) -> float:
    """A value where smaller is better (``1 - v`` for accuracies)."""
    return 1 - value if metric in HIGHER_IS_BETTER else value


def guidance_summary(comps: dict[float, Comparison]) -> str:
    """One markdown table per budget: method x guidance scale, ``endpoint`` error with the
    class accuracy in parentheses (from :func:`guided_problem` comparisons)."""
    scales = sorted(comps)
    first = comps[scales[0]]
    title = first.problem["name"].split(", CFG scale")[0] + ")"
    lines = [f"# Guided sampling on the exact oracle: {title}", "",
             "Classifier-free guidance, scale w (0 unconditional, 1 conditional). Each cell: "
             "RMS endpoint error against a dopri5 solve of the guided PF-ODE at rtol 1e-10 "
             "from the same x_T (class accuracy of the exact classifier in parentheses). "
             "NFE counts guided calls; each is one network call on a doubled batch.", ""]
    budgets = [b for b in first.settings["budgets"]
               if any(r.budget == b for c in comps.values() for r in c.records)]
    for b in budgets:
        lines += [f"## {b} NFE", "", "| sampler | " + " | ".join(f"w={w:g}" for w in scales)
                  + " |", "|---|" + "---|" * len(scales)]
        names = list(dict.fromkeys(r.method for c in comps.values() for r in c.records
                                   if r.budget == b))
        for name in names:
            cells = []
            for w in scales:
                r = next((r for r in comps[w].records if r.method == name and r.budget == b),
                         None)
                cells.append("" if r is None else f"{_cell(r.metrics['endpoint'])} "
                             f"({r.metrics['class_acc']:.3f})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def markdown(comp: Comparison) -> str:
    """Markdown tables: one per metric (sampler x budget) plus wall time and tolerance runs."""
    p, s = comp.problem, comp.settings
    fixed = [r for r in comp.records if r.budget is not None]
    names = list(dict.fromkeys(r.method for r in fixed))
    by_key = {(r.method, r.budget): r for r in fixed}
    budgets = [b for b in s["budgets"] if any(r.budget == b for r in fixed)]
    lines = [f"# Sampler comparison: {p['name']}", "",
             f"{p['n']} samples per run ({p['dtype']}), seed {s['seed']}, machine: {p['machine']}. "
             "NFE is counted; a number in parentheses is the counted NFE where it differs from "
             "the budget. **Bold**: best scoregen sampler at that budget; _italics_: best peer "
             "(by the size of the error).", ""]
    if comp.floor:
        floor = ", ".join(f"{k} {_cell(v)}" for k, v in comp.floor.items())
        lines += ["Noise floor (the metric between two independent sets of real or exact "
                  f"samples): {floor}.", ""]
    for metric in p["metrics"] + ["seconds"]:
        title = ("wall time (s)" if metric == "seconds" else f"{metric} (higher is better)"
                 if metric in HIGHER_IS_BETTER else f"{metric} (closer to 0 is better)")
        lines += [f"## {title}", "", "| sampler | " + " | ".join(f"{b}" for b in budgets) + " |",
                  "|---|" + "---|" * len(budgets)]
        best: dict[tuple[int, bool], str] = {}
        if metric != "seconds":
            for b in budgets:
                for peer in (False, True):
                    rows = [r for r in fixed if r.budget == b and (r.family != "scoregen") == peer]
                    if rows:
                        best[b, peer] = min(rows, key=lambda r: _score(
                            _oriented(metric, r.metrics[metric]))).method
        for name in names:
            cells = []
            for b in budgets:
                r = by_key.get((name, b))
                if r is None:
                    cells.append("")
                    continue
                v = r.seconds if metric == "seconds" else r.metrics[metric]
                text = f"{v:.3g}" if metric == "seconds" else _cell(v)
                if best.get((b, r.family != "scoregen")) == name:
                    text = f"_{text}_" if r.family != "scoregen" else f"**{text}**"
                cells.append(text + (f" ({r.nfe})" if r.nfe != b else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    tol = [r for r in comp.records if r.budget is None]
    if tol:
        lines += ["## self-stepping samplers (tolerance -> counted NFE)", "",
                  "| sampler | tolerance | NFE | seconds | " + " | ".join(p["metrics"]) + " |",
                  "|---|---|---|---|" + "---|" * len(p["metrics"])]
        lines += [f"| {r.method} | {r.tolerance:g} | {r.nfe} | {r.seconds:.3g} | "
                  + " | ".join(_cell(r.metrics[m]) for m in p["metrics"]) + " |" for r in tol]
        lines.append("")
    if comp.skipped:
        lines += ["Skipped: " + "; ".join(comp.skipped) + ".", ""]
    return "\n".join(lines)


def write_csv(comp: Comparison, path: Path) -> None:
    metrics = comp.problem["metrics"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "family", "budget", "steps", "tolerance", "nfe", "seconds", *metrics])
        for r in comp.records:
            w.writerow([r.method, r.family, r.budget, r.steps, r.tolerance, r.nfe,
                        f"{r.seconds:.6g}", *(f"{r.metrics[m]:.6g}" for m in metrics)])


def plot_quality(comp: Comparison, path: Path) -> None:
    """One panel per metric: error size against counted NFE (log-log), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = comp.problem["metrics"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.2), squeeze=False)
    names = list(dict.fromkeys(r.method for r in comp.records))
    colors = plt.get_cmap("tab20")
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, name in enumerate(names):
            rows = sorted((r for r in comp.records if r.method == name), key=lambda r: r.nfe)
            peer = rows[0].family != "scoregen"
            ax.plot([r.nfe for r in rows], [abs(r.metrics[metric]) for r in rows],
                    ls="--" if peer else "-", marker="x" if peer else "o", ms=4,
                    color=colors(i % 20), label=name)
        if metric in comp.floor:
            ax.axhline(abs(comp.floor[metric]), color="0.5", ls=":", label="noise floor")
        ax.set(xscale="log", yscale="log", xlabel="NFE (counted)",
               ylabel=f"|{metric}|" if metric == "nll_gap" else metric, title=metric)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(comp.problem["name"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_samples(comp: Comparison, reference: Tensor, path: Path) -> None:
    """Reference and each method's samples at the shown budget: a scatter of the first two
    coordinates for vectors, an image grid for ``(C, H, W)`` events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scoregen.plotting import image_grid

    panels = {"reference": reference.float().cpu(), **comp.samples}
    cols = min(5, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, x) in zip(axes.flat, panels.items(), strict=False):
        if x.ndim == 4:
            grid = image_grid(x[:64])
            ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
        else:
            pts = x.flatten(1)[:, :2].numpy()
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5)
            ax.set(xlim=(-1.6, 1.6), ylim=(-1.6, 1.6), aspect="equal")
            ax.axis("on")
            ax.tick_params(labelsize=6)
        ax.set_title(name, fontsize=8)
    fig.suptitle(f"samples at {comp.settings['show_nfe']} NFE", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(comp: Comparison, out: str | Path, reference: Tensor) -> dict[str, Path]:
    """Write the Markdown, CSV, JSON and the two PNGs into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "results.md", "csv": out / "results.csv", "json": out / "results.json",
             "plot": out / "quality_vs_nfe.png",
             "samples": out / f"samples_nfe{comp.settings['show_nfe']}.png"}
    paths["md"].write_text(markdown(comp))
    write_csv(comp, paths["csv"])
    raw = {"problem": comp.problem, "settings": comp.settings, "noise_floor": comp.floor,
           "skipped": comp.skipped, "records": [asdict(r) for r in comp.records]}
    paths["json"].write_text(json.dumps(raw, indent=1, allow_nan=True))
    plot_quality(comp, paths["plot"])
    plot_samples(comp, reference, paths["samples"])
    return paths
