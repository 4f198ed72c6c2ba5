"""The default time grid: endpoint error to sigma = 0 of the ``data`` spacing against uniform
log-SNR (and EDM's rho = 7) on exact mixtures, every shipped process, 5-100 NFE.

For each preset, process and NFE budget, six deterministic solvers (UniPC with predictor
orders 2 and 3, DPM-Solver++ 2M and 3M, iPNDM with the constant weights, DPM-Solver++ 2S) run
on each spacing from the same 64 starts (seeds 7..), and the median L2 distance to the exact
probability-flow ODE solution at ``sigma = 0`` (:func:`scoregen.evaluation.reference.
pf_ode_endpoint`) is recorded. A cell is (preset, process, budget); a spacing's number in a
cell is the error of the best solver on it (what a user who picks the solver for the budget
gets), and the summary counts the cells where ``data`` is worse than ``logsnr``. Also
reported per cell: UniPC of the order ``sampler="auto"`` picks (2 below 20 NFE, 3 from 20).
Writes ``--out/default_grid.md``, ``.json`` and ``default_grid.png``::

    python experiments/default_grid.py                 # about 20 minutes on one core
    python experiments/default_grid.py --presets ring8 --sdes ddpm --budgets 20
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import scoregen
from scoregen.evaluation.reference import pf_ode_endpoint
from scoregen.infra import outputs
from scoregen.infra.plotting import save_figure
from scoregen.models.analytic import from_spec
from scoregen.sampling.grid import time_grid
from scoregen.sampling.noise import NoiseSource, seeds_for
from scoregen.sampling.recommend import recommend
from scoregen.sde.spec import from_spec as sde_from_spec

SOLVERS = [("unipc", {"order": 2}), ("unipc", {"order": 3}), ("dpm_solver++", {}),
           ("dpm_solver++", {"order": 3}), ("ipndm", {"variable_step": False}),
           ("dpm_solver++_single", {})]
SPACINGS = ("logsnr", "data", "edm")
SDES = {"vp": "vp", "ddpm": "ddpm", "cosine": "vp-cosine", "ve": "ve",
        "ve-edm": "ve:sigma_min=0.002,sigma_max=80"}


def label(sampler: str, options: dict) -> str:
    return sampler + (f"({', '.join(f'{k}={v}' for k, v in options.items())})" if options
                      else "")


def run(preset: str, sde_key: str, budgets: list[int], starts: int) -> dict[str, float]:
    """``{"budget|solver|spacing": median endpoint error}`` for one problem."""
    mixture, sde = from_spec(preset), sde_from_spec(SDES[sde_key])
    x_T = sde.prior_std() * NoiseSource(seeds_for(starts, 7), mixture.shape,
                                        torch.float64).draw(0)
    ref = pf_ode_endpoint(mixture, sde, x_T)
    model, out = mixture.model(sde), {}
    for budget in budgets:
        for sampler, options in SOLVERS:
            steps = (budget - 1) // 2 + 1 if sampler == "dpm_solver++_single" else budget
            for spacing in SPACINGS:
                ts = time_grid(sde, steps, spacing, dim=mixture.dim)
                x = scoregen.sample(model, sde, x_T, sampler, ts=ts, check_finite=False,
                                    **options).x
                err = float((x - ref).flatten(1).norm(dim=1).median())
                out[f"{budget}|{label(sampler, options)}|{spacing}"] = err
    return out


def best(errors: dict[str, float], budget: int, spacing: str) -> tuple[str, float]:
    found = {k.split("|")[1]: v for k, v in errors.items()
             if k.startswith(f"{budget}|") and k.endswith(f"|{spacing}") and math.isfinite(v)}
    name = min(found, key=found.get)
    return name, found[name]


def report(results: dict[str, dict[str, float]], budgets: list[int]) -> str:
    lines = ["| preset | process | NFE | best on logsnr | best on data | data / logsnr | "
             "best on edm | auto (UniPC) on data |", "|---|---|---|---|---|---|---|---|"]
    ratios = []
    for key, errors in results.items():
        preset, sde_key = key.split("|")
        for b in budgets:
            (nl, el), (nd, ed), (ne, ee) = (best(errors, b, s) for s in SPACINGS)
            sampler, options = recommend(b)
            auto = errors[f"{b}|{label(sampler, options)}|data"]
            ratios.append(ed / el)
            lines.append(f"| {preset} | {sde_key} | {b} | {el:.2e} ({nl}) | {ed:.2e} ({nd}) | "
                         f"{ed / el:.2f} | {ee:.2e} ({ne}) | {auto:.2e} |")
    geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
    worse = sum(r > 1 for r in ratios)
    head = (f"Best solver per cell, median endpoint error to sigma = 0 over the starts. `data` "
            f"against `logsnr`: geometric mean ratio {geo:.2f}, worst {max(ratios):.2f}, "
            f"best {min(ratios):.2f}; worse in {worse} of {len(ratios)} cells.\n\n")
    compact = ["| preset, process | " + " | ".join(f"{b}" for b in budgets) + " |",
               "|---|" + "---|" * len(budgets)]
    for key, errors in results.items():
        cells = []
        for b in budgets:
            data, logsnr = best(errors, b, "data")[1], best(errors, b, "logsnr")[1]
            cells.append(f"{data:.2g} / {logsnr:.2g} ({data / logsnr:.2f})")
        compact.append(f"| {key.replace('|', ', ')} | " + " | ".join(cells) + " |")
    return (head + "Best solver's error on data / on logsnr (ratio):\n\n" + "\n".join(compact)
            + "\n\nEvery solver's best, per cell:\n\n" + "\n".join(lines) + "\n")


def plot(results: dict[str, dict[str, float]], budgets: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    presets = list(dict.fromkeys(k.split("|")[0] for k in results))
    fig, axes = plt.subplots(1, len(presets), figsize=(5 * len(presets), 4), squeeze=False)
    colors = plt.get_cmap("tab10")
    for key, errors in results.items():
        preset, sde_key = key.split("|")
        ax = axes[0][presets.index(preset)]
        c = colors(list(SDES).index(sde_key))
        for spacing, style in (("logsnr", "--"), ("data", "-")):
            ax.loglog(budgets, [best(errors, b, spacing)[1] for b in budgets], style,
                      marker="o", ms=3, color=c, label=f"{sde_key} {spacing}")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set(title=preset, xlabel="NFE", ylabel="endpoint error (best solver)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["ring8", "mix16", "mix64"])
    parser.add_argument("--sdes", nargs="+", default=list(SDES), choices=list(SDES))
    parser.add_argument("--budgets", nargs="+", type=int, default=[5, 10, 20, 50, 100])
    parser.add_argument("--starts", type=int, default=64)
    parser.add_argument("--out", default="runs/default_grid")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the report and plot from --out/default_grid.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    for suffix in ("md", "png") if args.report_only else ("md", "png", "json"):
        outputs.check_target(out / f"default_grid.{suffix}", what="--out")
    results = json.loads((out / "default_grid.json").read_text()) if args.report_only else {}
    for preset in args.presets if not args.report_only else ():
        for sde_key in args.sdes:
            results[f"{preset}|{sde_key}"] = run(preset, sde_key, args.budgets, args.starts)
            print(f"{preset} {sde_key} done", flush=True)
            outputs.write_text(out / "default_grid.json", json.dumps(results, indent=1))
    text = report(results, args.budgets)
    outputs.write_text(out / "default_grid.md", text)
    plot(results, args.budgets, out / "default_grid.png")
    print(text)
    print(f"wrote {out / 'default_grid.md'}, .json and .png")


if __name__ == "__main__":
    main()
