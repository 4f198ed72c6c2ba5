"""Guided sampling at 5-50 NFE on exact class-conditional mixtures: scoregen's recommended
sampler, on the default grid and on a grid tuned for the guidance, against every peer.

For each preset (``ring8``: 8 classes; ``ring8:classes=2``: two classes whose modes
interleave on the ring; ``mix64:classes=3``) and guidance scale ``w``, classifier-free
guidance on the exact oracle (:func:`scoregen.evaluation.compare.guided_problem`; sample
``k`` asks for class ``k mod C``) from ``-n`` starts (seeds 100000..), scored against a dopri5
solve of the guided probability-flow ODE at ``rtol = atol = 1e-10`` from the same ``x_T``:
``endpoint`` is the mean L2 distance to it, ``class_acc`` the exact classifier's accuracy on
the requested class (the reference's own accuracy is reported too).

Methods: ``auto`` (what ``scoregen.sample(..., cond=y, guidance=w, nfe=N)`` runs by default:
:func:`scoregen.sampling.recommend.recommend` on the default grid), ``auto [tuned]`` (the
same sampler on a grid fitted to the guided model by
:func:`scoregen.sampling.grid_tuning.tune_grid` from ``--teacher-n`` trajectories of seeds
0.., disjoint from the scored starts; what ``scoregen tune-grid RUN --class all --guidance w``
then ``scoregen sample ... --spacing tuned`` does), a few fixed samplers for context, and
every fixed-step peer that runs on the SDE (k-diffusion on ``vp``; diffusers too on
``ddpm``), driven by the same guided model. Writes ``--out/results.md`` (the summary and the
per-method tables), ``--out/results.json`` and ``--out/guided_few_step.png``::

    python experiments/guided_few_step.py                      # about an hour on one core
    python experiments/guided_few_step.py --presets ring8 --scales 8 --budgets 5 10 -n 200
    python experiments/guided_few_step.py --presets mix64:classes=3 --out runs/gfs_mix64 &
    python experiments/guided_few_step.py --presets ring8 ring8:classes=2 --out runs/gfs_ring &
    python experiments/guided_few_step.py --combine runs/gfs_ring/results.json \\
        runs/gfs_mix64/results.json                            # the two halves, one report
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
from scoregen.evaluation import compare, peers
from scoregen.evaluation.compare import Method
from scoregen.infra import outputs
from scoregen.infra.plotting import save_figure
from scoregen.models.analytic import from_spec
from scoregen.sampling.grid_tuning import teacher_trajectories, tune_grid
from scoregen.sampling.recommend import recommend
from scoregen.sampling.tuned_grids import TunedGrids

EVAL_SEED = 100_000
CONTEXT = [("ddim", {}), ("dpm_solver++", {}), ("dpm_solver++_single", {}),
           ("unipc", {"order": 1}), ("unipc", {}), ("unipc", {"order": 3})]


def label(sampler: str, options: dict[str, Any]) -> str:
    return sampler + (f"({', '.join(f'{k}={v}' for k, v in options.items())})" if options
                      else "")


def method(name: str, sampler: str, options: dict[str, Any], grids: TunedGrids | None = None
           ) -> Method:
    """A scoregen sampler as a comparison method (``grids``: on its tuned grid; ``sampler``
    ``"auto"``: the recommended one, resolved for each step count)."""
    per_step = 1 if sampler == "auto" else scoregen.samplers.meta(sampler)["nfe_per_step"]

    def draw(model, sde, x_T, setting, seed, seeds=None):
        seeds = scoregen.sampling.seeds_for(len(x_T), seed) if seeds is None else seeds
        res = scoregen.sample(model, sde, x_T, sampler, setting.steps, seeds=seeds,
                              spacing="tuned" if grids is not None else "auto", grids=grids,
                              check_finite=False, **options)
        return res.x, res.nfe

    return Method(name, "scoregen", per_step, False, draw, per_sample_seeds=True)


def tuned_store(spec: str, sde: Any, w: float, budgets: list[int], teacher_n: int,
                max_evals: int) -> tuple[TunedGrids, list[dict[str, Any]]]:
    """Grids of the recommended sampler at each budget, fitted to the guided model."""
    mixture = from_spec(spec)
    labels = torch.arange(teacher_n) % mixture.num_classes
    model = mixture.model(sde)
    teacher = teacher_trajectories(model, sde, mixture.shape, teacher_n, cond=labels,
                                   guidance=w)
    store, fits = TunedGrids(), []
    for nfe in budgets:
        sampler, options = recommend(nfe, w)
        grid = tune_grid(model, sde, sampler, nfe, options=options, teacher=teacher,
                         held_out=teacher_n // 4, max_evals=max_evals)
        store.add(grid)
        fits.append({"nfe": nfe, "sampler": label(sampler, options),
                     "fit": grid.info["fit"], "held_out": grid.info["held_out"],
                     "seconds": grid.info["seconds"]})
    return store, fits


def run(spec: str, sde_spec: str, w: float, budgets: list[int], tune_budgets: list[int],
        n: int, teacher_n: int, max_evals: int) -> dict[str, Any]:
    problem = compare.guided_problem(spec, sde_spec, w, n, EVAL_SEED)
    ref_acc = compare.evaluate(problem.endpoint_reference, problem)["class_acc"]
    start = time.perf_counter()
    store, fits = tuned_store(spec, problem.sde, w, tune_budgets, teacher_n, max_evals)
    methods = [method("auto", "auto", {})]
    for nfe in tune_budgets:
        sampler, options = recommend(nfe, w)
        methods.append(method(f"auto [tuned] {nfe}", sampler, options, store))
    methods += [method(label(s, o), s, o) for s, o in CONTEXT]
    found, _ = peers.peer_methods(None, problem.sde)
    methods += [m for m in found if not m.adaptive]
    comp = compare.run_comparison(problem, methods, budgets, [], n=n, seed=EVAL_SEED,
                                  progress=False)
    rows = [{"method": r.method, "family": r.family, "budget": r.budget, "nfe": r.nfe,
             **r.metrics} for r in comp.records]
    for row in rows:  # one "auto [tuned]" row per budget, at its own budget
        if row["method"].startswith("auto [tuned] "):
            row["method"], row["tuned_for"] = "auto [tuned]", int(row["method"].split()[-1])
    rows = [r for r in rows if r.get("tuned_for", r["budget"]) == r["budget"]]
    return {"preset": spec, "sde": sde_spec, "w": w, "n": n, "reference_class_acc": ref_acc,
            "rows": rows, "fits": fits, "seconds": round(time.perf_counter() - start, 1)}


def cell(rows: list[dict[str, Any]], name: str, budget: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["method"] == name and r["budget"] == budget), None)


def best_peer(rows: list[dict[str, Any]], budget: int) -> dict[str, Any] | None:
    found = [r for r in rows if r["family"] != "scoregen" and r["budget"] == budget]
    return min(found, key=lambda r: r["endpoint"] if math.isfinite(r["endpoint"]) else math.inf,
               default=None)


def fmt(r: dict[str, Any] | None) -> str:
    if r is None:
        return ""
    return f"{r['endpoint']:.3g} ({100 * r['class_acc']:.1f}%)"


def summary(results: list[dict[str, Any]], budgets: list[int]) -> str:
    lines = ["## Recommended sampler against the best peer", "",
             "Endpoint error (mean L2 distance to the guided reference solve; class accuracy "
             "in parentheses). `auto`: the default of `scoregen.sample(..., cond=y, "
             "guidance=w, nfe=N)` on the default grid; `auto [tuned]`: the same sampler on a "
             "grid fitted to the guided model (`scoregen tune-grid --class all --guidance w`). "
             "Verdict: each against the best peer (ratio peer / ours, ahead when > 1); from "
             "10 NFE, the class accuracy of the default against the reference's (ok within "
             "1 point).", "",
             "| preset | w | NFE | recommended | auto | auto [tuned] | best peer | reference "
             "class acc | auto | tuned |", "|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for b in budgets:
            auto, tuned = cell(res["rows"], "auto", b), cell(res["rows"], "auto [tuned]", b)
            peer = best_peer(res["rows"], b)
            verdicts = []
            for ours in (auto, tuned):
                if ours is None or peer is None:
                    verdicts.append("")
                    continue
                ratio = peer["endpoint"] / ours["endpoint"]
                verdicts.append(("**ahead**" if ratio > 1 else "behind") + f" {ratio:.2f}x")
            if b >= 10 and auto is not None:
                gap = 100 * (res["reference_class_acc"] - auto["class_acc"])
                verdicts[0] += f", class {'ok' if gap <= 1 else 'off'} ({-gap:+.1f} pt)"
            sampler, options = recommend(b, res["w"])
            lines.append(f"| {res['preset']} | {res['w']:g} | {b} | {label(sampler, options)} | "
                         f"{fmt(auto)} | {fmt(tuned)} | {peer['method'] if peer else ''} "
                         f"{fmt(peer)} | {100 * res['reference_class_acc']:.1f}% | "
                         f"{verdicts[0]} | {verdicts[1]} |")
    return "\n".join(lines) + "\n"


def details(results: list[dict[str, Any]], budgets: list[int]) -> str:
    lines = ["## Every method", ""]
    for res in results:
        lines += [f"### {res['preset']}, {res['sde']}, w = {res['w']:g} (reference class "
                  f"accuracy {100 * res['reference_class_acc']:.1f}%)", "",
                  "| method | " + " | ".join(f"{b}" for b in budgets) + " |",
                  "|---|" + "---|" * len(budgets)]
        for name in dict.fromkeys(r["method"] for r in res["rows"]):
            lines.append(f"| {name} | " + " | ".join(fmt(cell(res["rows"], name, b))
                                                     for b in budgets) + " |")
        lines += ["", "Tuned grids (mean per-sample RMS endpoint error against the teacher; "
                  "fit / held-out trajectories): " + "; ".join(
                      f"{f['sampler']} at {f['nfe']} NFE: default {f['fit']['default']:.3g} -> "
                      f"{f['fit']['tuned']:.3g} / {f['held_out']['default']:.3g} -> "
                      f"{f['held_out']['tuned']:.3g}" for f in res["fits"]), ""]
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    presets = list(dict.fromkeys(r["preset"] for r in results))
    scales = sorted({r["w"] for r in results})
    fig, axes = plt.subplots(len(presets), len(scales), figsize=(3.4 * len(scales),
                             2.9 * len(presets)), squeeze=False)
    for res in results:
        ax = axes[presets.index(res["preset"])][scales.index(res["w"])]
        budgets = sorted({r["budget"] for r in res["rows"]})
        for name, style in (("auto", "o-"), ("auto [tuned]", "s-")):
            pts = [(b, cell(res["rows"], name, b)) for b in budgets]
            pts = [(b, r["endpoint"]) for b, r in pts if r is not None]
            if pts:
                ax.loglog(*zip(*pts, strict=True), style, ms=4, label=f"scoregen {name}")
        peer = [(b, best_peer(res["rows"], b)["endpoint"]) for b in budgets]
        ax.loglog(*zip(*peer, strict=True), "x--", color="0.4", label="best peer")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_title(f"{res['preset']}, w={res['w']:g}", fontsize=9)
        ax.set_xlabel("NFE", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("endpoint error", fontsize=8)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+",
                        default=["ring8", "ring8:classes=2", "mix64:classes=3"])
    parser.add_argument("--sde", default="vp")
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--budgets", nargs="+", type=int, default=[5, 10, 20, 50])
    parser.add_argument("--tune-budgets", nargs="+", type=int, default=[5, 10])
    parser.add_argument("-n", type=int, default=500, help="scored samples per cell")
    parser.add_argument("--teacher-n", type=int, default=160, help="tuning trajectories")
    parser.add_argument("--max-evals", type=int, default=150, help="tuning runs per start")
    parser.add_argument("--out", default="runs/guided_few_step")
    parser.add_argument("--combine", nargs="+", metavar="RESULTS.json",
                        help="write the report of earlier runs' results.json (e.g. presets run "
                             "in parallel) instead of running")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    for name in ("results.json", "results.md", "guided_few_step.png"):
        outputs.check_target(out / name, what="--out")
    results = []
    for path in args.combine or ():
        results += json.loads(Path(path).read_text())
    for spec in args.presets if not args.combine else ():
        for w in args.scales:
            results.append(run(spec, args.sde, w, args.budgets, args.tune_budgets, args.n,
                               args.teacher_n, args.max_evals))
            print(f"{spec} w={w:g}: {results[-1]['seconds']} s", flush=True)
            outputs.write_text(out / "results.json", json.dumps(results, indent=1))
    outputs.write_text(out / "results.json", json.dumps(results, indent=1))
    text = (f"# Guided sampling at few steps ({args.sde}, {args.n} samples per cell)\n\n"
            + summary(results, args.budgets) + "\n" + details(results, args.budgets))
    outputs.write_text(out / "results.md", text)
    plot(results, out / "guided_few_step.png")
    print(summary(results, args.budgets))
    print(f"wrote {out / 'results.md'}, results.json and guided_few_step.png")


if __name__ == "__main__":
    main()
