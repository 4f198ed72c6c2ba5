"""Few-step samplers on grids fitted to the model against every peer, at 5, 10 and 20 NFE.

Exact scores (``--presets``, default ring8 and mix64, under the discrete DDPM process, the
one every peer runs on): grids are fitted by :func:`scoregen.sampling.grid_tuning.tune_grid` on 320
teacher trajectories (256 fit, 64 held out; seeds 0..319) and saved in
``runs/tuned_grids/<preset>/`` (what ``scoregen tune-grid <preset> --sde ddpm`` writes).
Every method then starts from 512 *other* starts (seeds 100000..), and its endpoint error is
the median per-sample RMS distance to the teacher's endpoint from the same start (UniPC
order 4 on 200 log-SNR steps, then its final interval solved to ``sigma = 0``, the endpoint every
sampler here targets). Peers: the deterministic fixed-step samplers of diffusers and
k-diffusion on their own grids, step counts planned to the budget by counted NFE.

Trained digits model (``--digits RUN``, default ``runs/digits`` if it exists), under
``ddpm``: the grids of UniPC and DPM-Solver++ (with and without ``lower_order_final``)
fitted on 128 teacher trajectories (32 held out; teacher on 100 steps, the network is the
cost here), then
``--digits-n`` (500) samples per method from the same ``x_T`` scored by the Frechet
distance on the digits classifier's features against the 297 test digits; the gap is that
distance minus the noise floor (as many real train digits against the same test digits).
The starts (seeds 100000..) are disjoint from the fitting ones; the endpoint error against a
teacher solve from each start is reported too, and the gap of a converged sampler (UniPC at
200 NFE), the model's own, which bounds what a sampler can show on the gap.
Peers here: those best at 5-20 NFE in the full digits sweep (``benchmarks/quality_sweep.py``)
and diffusers' ancestral DDPM.

Writes ``runs/tuned_grids_sweep/results.md`` and ``endpoint_error.png`` (with ``--presets
""``, the digits part alone, into ``runs/tuned_grids_sweep/digits/``)::

    python experiments/tuned_grids.py [--presets ring8,mix64] [--digits runs/digits]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

import scoregen
from scoregen import sde as sde_lib
from scoregen.evaluation import compare, peers
from scoregen.infra import outputs
from scoregen.infra.plotting import save_figure
from scoregen.models import analytic
from scoregen.sampling.grid_tuning import endpoint_error, teacher_trajectories, tune_grid
from scoregen.sampling.tuned_grids import TunedGrids

BUDGETS = (5, 10, 20)
TUNED_BUDGETS = (5, 10)
CONVERGED_NFE = 200
DEFAULT_GRID = [("ddim", {}), ("dpm_solver++", {}), ("dpm_solver++", {"order": 3}),
                ("dpm_solver++_single", {}), ("unipc", {}), ("heun", {}), ("ode_midpoint", {}),
                ("ipndm", {}), ("ipndm", {"variable_step": False})]
TUNED = [("ipndm", {}), ("ipndm", {"variable_step": False}), ("unipc", {}),
         ("unipc", {"lower_order_final": False}), ("dpm_solver++", {}),
         ("dpm_solver++", {"lower_order_final": False})]
DIGITS_TUNED = [("unipc", {}), ("unipc", {"lower_order_final": False}), ("dpm_solver++", {}),
                ("dpm_solver++", {"lower_order_final": False})]
DIGITS_DEFAULT = [("dpm_solver++", {}), ("unipc", {}), ("ipndm", {"variable_step": False})]
# the peers best at 5-20 NFE in the full digits sweep of docs/results.md (the network makes
# every extra method expensive on a CPU), and diffusers' ancestral DDPM
DIGITS_PEERS = ("diffusers/dpmsolver_multistep", "diffusers/unipc_multistep",
                "k-diffusion/dpmpp_2m", "k-diffusion/lms", "diffusers/ddpm")


def label(name: str, opts: dict[str, Any], grid: str) -> str:
    extra = ",".join(f"{k}={v}" for k, v in opts.items())
    return f"{name}{f'({extra})' if extra else ''} [{grid}]"


def run_ours(model, sde, x_T, name, opts, budget, grids=None):
    kw = {"spacing": "tuned", "grids": grids} if grids is not None else {}
    try:
        res = scoregen.sample(model, sde, x_T.clone(), name, nfe=budget, **kw, **opts)
    except ValueError:
        return None
    return res.x, res.nfe


def run_peer(method, problem, x_T, budget):
    steps = compare.plan_steps(method, problem, budget)
    if steps is None:
        return None
    return method.draw(problem.model, problem.sde, x_T.clone(), compare.Setting(steps=steps), 0)


def fit_grids(model, sde, shape, choices, store: TunedGrids, n: int, held_out: int,
              max_evals: int, dtype, teacher_steps: int = 200, reuse: bool = False
              ) -> list[str]:
    """Fit every (sampler, budget) of ``choices`` into ``store`` (``reuse``: keep grids the
    store already has for them); one table row per grid fitted."""
    teacher = teacher_trajectories(model, sde, shape, n, dtype=dtype,
                                   teacher_steps=teacher_steps)
    notes = []
    for name, opts in choices:
        for budget in TUNED_BUDGETS:
            if reuse and any(g.nfe == budget for g in store.matching(name, sde, opts)):
                continue
            grid = tune_grid(model, sde, name, budget, options=opts, teacher=teacher,
                             held_out=held_out, max_evals=max_evals)
            store.add(grid)
            fit, held = grid.info["fit"], grid.info["held_out"]
            notes.append(f"| {label(name, opts, 'tuned')} | {budget} | {fit['default']:.3g} | "
                         f"{fit['gits']:.3g} | {fit['tuned']:.3g} | {held['default']:.3g} | "
                         f"{held['tuned']:.3g} | {grid.info['seconds']:.0f} |")
            print(notes[-1], flush=True)
    store.save()
    return notes


def table(rows: dict[str, dict[int, tuple[float, int]]], title: str) -> list[str]:
    lines = [f"| {title} | " + " | ".join(str(b) for b in BUDGETS) + " |",
             "|---|" + "---|" * len(BUDGETS)]
    for name, cells in rows.items():
        text = []
        for b in BUDGETS:
            if b not in cells:
                text.append("")
                continue
            value, nfe = cells[b]
            text.append(f"{value:.3g}" + (f" ({nfe})" if nfe != b else ""))
        lines.append(f"| {name} | " + " | ".join(text) + " |")
    return lines


def verdict(rows, is_peer, is_tuned) -> list[str]:
    """Best tuned scoregen against the best peer at 5 and 10, and tuned-10 against peer-20."""
    def best(pred, b):
        found = [(v[b][0], k) for k, v in rows.items()
                 if pred(k) and b in v and math.isfinite(v[b][0])]
        return min(found) if found else (math.nan, "-")

    out = []
    for b in TUNED_BUDGETS:
        (ours, on), (theirs, tn) = best(is_tuned, b), best(is_peer, b)
        met = "met" if theirs >= 2 * ours else "not met"
        out.append(f"- {b} NFE: best tuned scoregen {on} {ours:.3g}, best peer {tn} "
                   f"{theirs:.3g}: {theirs / ours:.2f}x ({met} for >= 2x)")
    (ours, on), (theirs, tn) = best(is_tuned, 10), best(is_peer, 20)
    out.append(f"- scoregen at 10 NFE ({on} {ours:.3g}) against the best peer at 20 NFE ({tn} "
               f"{theirs:.3g}): {'met' if ours <= theirs else 'not met'}")
    return out


def exact(preset: str, max_evals: int) -> tuple[list[str], dict]:
    mix, sde = analytic.preset(preset), sde_lib.get("ddpm")
    model = mix.model(sde)
    store = TunedGrids.load(Path("runs/tuned_grids") / preset, missing_ok=True)
    start = time.perf_counter()
    notes = fit_grids(model, sde, mix.shape, TUNED, store, 320, 64, max_evals, torch.float64)
    fit_s = time.perf_counter() - start
    evaluation = teacher_trajectories(model, sde, mix.shape, 512, seed=100_000)
    x_T, ref = evaluation.x_start, evaluation.x_end
    problem = compare.oracle_problem(preset, sde, n=16)
    rows: dict[str, dict[int, tuple[float, int]]] = {}

    def score(key, out, b):
        if out is not None:
            rows.setdefault(key, {})[b] = (float(endpoint_error(out[0], ref).median()), out[1])

    for b in BUDGETS:
        for name, opts in DEFAULT_GRID:
            score(label(name, opts, "default"), run_ours(model, sde, x_T, name, opts, b), b)
        for name, opts in TUNED if b in TUNED_BUDGETS else ():
            score(label(name, opts, "tuned"), run_ours(model, sde, x_T, name, opts, b, store), b)
        for m in _peers(sde, stochastic=False):
            score(m.name, run_peer(m, problem, x_T, b), b)
        print(f"{preset}: {b} NFE done", flush=True)
    lines = [f"### {preset} (exact oracle, ddpm): median endpoint error, 512 starts", "",
             *table(rows, "sampler [grid]"), "",
             *verdict(rows, lambda k: "/" in k, lambda k: "[tuned]" in k), "",
             f"Fitting ({fit_s:.0f} s for {len(TUNED) * len(TUNED_BUDGETS)} grids; mean RMS "
             "endpoint error on the 256 fitting and 64 held-out teacher trajectories):", "",
             "| sampler | NFE | default (fit) | GITS (fit) | tuned (fit) | default (held out) "
             "| tuned (held out) | seconds |", "|---|---|---|---|---|---|---|---|", *notes, ""]
    return lines, rows


def digits(run: Path, max_evals: int, n: int, reuse: bool = False) -> tuple[list[str], dict]:
    problem = compare.checkpoint_problem(run, n, sde="ddpm")
    model, sde, shape = problem.model, problem.sde, problem.shape
    from scoregen.training.checkpoint import find_checkpoint

    store = TunedGrids.load(find_checkpoint(run), missing_ok=True)
    start = time.perf_counter()
    notes = fit_grids(model, sde, shape, DIGITS_TUNED, store, 128, 32, max_evals,
                      torch.float32, teacher_steps=100, reuse=reuse)
    fit_s = time.perf_counter() - start
    floor = compare.evaluate(problem.floor_reference[:n], problem)["fd_digits"]
    # starts disjoint from the fitting ones (seeds 0..127), and the teacher's endpoint from each
    evaluation = teacher_trajectories(model, sde, shape, n, seed=100_000, teacher_steps=100,
                                      dtype=problem.dtype)
    x_T, ref = evaluation.x_start, evaluation.x_end
    rows: dict[str, dict[int, tuple[float, int]]] = {}
    errors: dict[str, dict[int, tuple[float, int]]] = {}

    def score(key, out, b):
        if out is not None:
            rows.setdefault(key, {})[b] = (compare.evaluate(out[0], problem)["fd_digits"] - floor,
                                           out[1])
            errors.setdefault(key, {})[b] = (float(endpoint_error(out[0], ref).median()), out[1])

    for b in BUDGETS:
        for name, opts in DIGITS_DEFAULT:
            score(label(name, opts, "default"), run_ours(model, sde, x_T, name, opts, b), b)
        for name, opts in DIGITS_TUNED if b in TUNED_BUDGETS else ():
            score(label(name, opts, "tuned"), run_ours(model, sde, x_T, name, opts, b, store), b)
        for m in _peers(sde, stochastic=True, names=DIGITS_PEERS):
            score(m.name, run_peer(m, problem, x_T, b), b)
        print(f"digits: {b} NFE done", flush=True)
    # what the model itself reaches: the sampler converged (its gap is the model's, not the
    # solver's), which bounds what any sampler can show at 10 NFE
    converged = run_ours(model, sde, x_T, "unipc", {}, CONVERGED_NFE)
    model_gap = compare.evaluate(converged[0], problem)["fd_digits"] - floor
    best_peer_10 = min(v[10][0] for k, v in rows.items() if "/" in k and 10 in v)
    lines = [f"### digits model {run} (ddpm): Frechet distance gap to the noise floor "
             f"({floor:.3g}), {n} samples", "", *table(rows, "sampler [grid]"), "",
             *verdict(rows, lambda k: "/" in k, lambda k: "[tuned]" in k),
             f"- the model's own gap (unipc at {CONVERGED_NFE} NFE, converged): "
             f"{model_gap:.3g}; a 2x lead at 10 NFE needs <= {best_peer_10 / 2:.3g}", "",
             "Median per-sample RMS endpoint error against the teacher (UniPC order 4 on 100 "
             "log-SNR steps) from the same starts: the solver's own error on the trained "
             "model, which the Frechet gap mixes with the model's:", "",
             *table(errors, "sampler [grid]"), "",
             *verdict(errors, lambda k: "/" in k, lambda k: "[tuned]" in k), "",
             f"Fitting ({fit_s:.0f} s; mean RMS endpoint error on 96 fitting / 32 held-out "
             "teacher trajectories of UniPC order 4 on 100 steps):", "",
             "| sampler | NFE | default (fit) | GITS (fit) | tuned (fit) | default (held out) "
             "| tuned (held out) | seconds |", "|---|---|---|---|---|---|---|---|", *notes, ""]
    return lines, rows


def _peers(sde, stochastic: bool, names=None):
    found, _ = peers.peer_methods(names, sde)
    return [m for m in found if not m.adaptive and (stochastic or not m.stochastic)]


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (title, rows) in zip(axes[0], results.items(), strict=True):
        for name, cells in rows.items():
            pts = sorted((nfe, v) for v, nfe in cells.values() if math.isfinite(v) and v > 0)
            if not pts:
                continue
            style = "--" if "/" in name else ("-" if "[tuned]" in name else ":")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls=style, marker="o", ms=3,
                    label=name, lw=2 if "[tuned]" in name else 1)
        ax.set(xscale="log", yscale="log", xlabel="NFE (counted)", title=title,
               ylabel="FD gap" if "digits" in title else "median endpoint error")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="ring8,mix64")
    parser.add_argument("--digits", default="runs/digits")
    parser.add_argument("--max-evals", type=int, default=600)
    parser.add_argument("--digits-max-evals", type=int, default=80)
    parser.add_argument("--digits-n", type=int, default=500)
    parser.add_argument("--reuse-grids", action="store_true",
                        help="digits: keep grids the checkpoint folder already has")
    parser.add_argument("--out", default="runs/tuned_grids_sweep")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tuned", help="comma-separated samplers to tune on the exact "
                        "problems (default: " + ",".join(label(n, o, "") for n, o in TUNED) + ")")
    args = parser.parse_args()
    if args.tuned:
        keep = set(args.tuned.split(","))
        TUNED[:] = [(n, o) for n, o in TUNED if label(n, o, "").removesuffix(" []") in keep]
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text, results = ["# Tuned grids at 5-20 NFE against the peers", ""], {}
    for preset in [p for p in args.presets.split(",") if p]:
        lines, rows = exact(preset, args.max_evals)
        text += lines
        results[preset] = rows
        outputs.write_text(out / "results.md", "\n".join(text))
    if args.digits and Path(args.digits).exists():
        if not args.presets:
            out = out / "digits"
            out.mkdir(parents=True, exist_ok=True)
        lines, rows = digits(Path(args.digits), args.digits_max_evals, args.digits_n,
                             args.reuse_grids)
        text += lines
        results["digits"] = rows
    elif args.digits:
        text += [f"(no digits run at {args.digits}: `python experiments/train_digits.py`)", ""]
    outputs.write_text(out / "results.md", "\n".join(text))
    outputs.write_text(out / "results.json", json.dumps(
        {k: {m: {str(b): v for b, v in c.items()} for m, c in r.items()}
         for k, r in results.items()}, indent=1))
    plot(results, out / "endpoint_error.png")
    print("\n".join(text))
    print(f"wrote {out / 'results.md'}")


if __name__ == "__main__":
    main()
