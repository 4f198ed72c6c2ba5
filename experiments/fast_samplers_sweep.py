"""Fast samplers x time-grid spacing at low NFE, on exact mixture scores.

For each oracle preset and SDE, every fast sampler (and DDIM as the first-order baseline) runs
on each grid spacing at every NFE budget, from the same ``x_T``, through
:func:`scoregen.evaluation.compare.run_comparison` (honest budgets: the step count whose
*counted* NFE is the largest within the budget); the adaptive SDE solver runs at tolerances.
Prints one Markdown report per (preset, SDE) and writes it, with CSV and JSON, to
``--out/<preset>-<sde>/`` plus ``--out/summary.md`` (all reports). Each report ends with the
metrics of a *perfect* solver: exact samples of ``x_{t_min}`` followed by the same final
denoising step, the best any sampler on these grids can do.

``--orders`` instead measures convergence orders: the RMS distance of each deterministic
solver's endpoint (logsnr grid to ``t_min``, no denoising step) to the probability-flow ODE
solved by ``ode_dopri5`` at ``rtol = atol = 1e-10``, from the same 24 starts (ring8 with
std 0.3 under VP, the setting of ``tests/test_fast_samplers.py``)::

    python experiments/fast_samplers_sweep.py                 # ring8 + mix64, vp, ve, ve-edm
    python experiments/fast_samplers_sweep.py --presets mix64 --sdes ve --budgets 5 10 -n 500
    python experiments/fast_samplers_sweep.py --orders

``ve-edm`` is the VE SDE over the EDM noise range, sigma 0.002..80 (Karras et al. 2022), where
samplers that step in ``t`` used to diverge (docs/samplers.md). Every registered sampler at
its defaults also runs once per problem (labelled ``name [auto]``), so the report covers the
generic solvers too. Defaults finish in a few minutes on a 2-core CPU (``--orders``: seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import statistics
import time
from pathlib import Path

import torch

import scoregen
from scoregen import sde as sde_lib
from scoregen.evaluation import compare
from scoregen.infra import outputs
from scoregen.models.analytic import preset
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.grid import time_grid

# label: (registered sampler, options)
VARIANTS = {
    "ddim": ("ddim", {}),
    "heun": ("heun", {}),
    "dpm_solver++ (2M)": ("dpm_solver++", {}),
    "dpm_solver++ (3M)": ("dpm_solver++", {"order": 3}),
    "dpm_solver++_single (2S)": ("dpm_solver++_single", {}),
    "dpm_solver++_sde (2M, eta=1)": ("dpm_solver++_sde", {}),
    "unipc (bh2, p=2)": ("unipc", {}),
    "unipc (bh2, p=3)": ("unipc", {"order": 3}),
}


# SDE names beyond the registry: the VE SDE over the EDM range
SDE_ALIASES = {"ve-edm": {"name": "ve", "sigma_min": 0.002, "sigma_max": 80.0}}


def make_sde(name: str):
    """A registered SDE by name, or one of :data:`SDE_ALIASES`."""
    spec = dict(SDE_ALIASES.get(name, {"name": name}))
    return sde_lib.get(spec.pop("name"), **spec)


def methods(spacings: list[str], adaptive: bool) -> list[compare.Method]:
    """Every variant on every spacing (labelled ``variant [spacing]``), every other registered
    sampler at its defaults (``name [auto]``), plus adaptive_sde."""
    out = []
    for name in sde_lib_samplers():
        (m,) = compare.scoregen_methods([name])
        out.append(dataclasses.replace(m, name=f"{name} [auto]"))
    for spacing in spacings:
        for label, (name, opts) in VARIANTS.items():
            (m,) = compare.scoregen_methods([name], spacing=spacing, options={name: opts})
            out.append(dataclasses.replace(m, name=f"{label} [{spacing}]"))
    if adaptive:
        out += compare.scoregen_methods(["adaptive_sde"])
    return out


def sde_lib_samplers() -> list[str]:
    """Registered fixed-step samplers not already among :data:`VARIANTS`."""
    from scoregen import samplers

    covered = {name for name, _ in VARIANTS.values()}
    return [n for n in samplers.applicable(sde_lib.get("vp"))
            if n not in covered and samplers.meta(n)["nfe_per_step"] is not None]


# (sampler, options) whose convergence order --orders measures
ORDER_VARIANTS = [("ddim", {}), ("heun", {}), ("dpm_solver++", {}), ("dpm_solver++", {"order": 3}),
                  ("dpm_solver++_single", {}), ("dpm_solver++_single", {"order": 3}),
                  ("unipc", {"order": 1}), ("unipc", {}), ("unipc", {"order": 3}),
                  ("unipc", {"variant": "bh1"})]


def perfect_solver(problem: compare.Problem, n: int, seed: int) -> dict[str, float]:
    """Metrics of exact ``x_{t_min}`` samples after the final denoising step ``x0_hat``."""
    sde = problem.sde
    g = torch.Generator().manual_seed(20_000 + seed)
    x = problem.mixture.sample_t(n, sde, sde.t_min, g).to(problem.dtype)
    x0_hat = Denoiser(problem.model, sde)(x, torch.tensor(sde.t_min, dtype=problem.dtype)).x0
    return compare.evaluate(x0_hat, problem, seed)


def spacing_summary(comp: compare.Comparison, spacings: list[str], metric: str = "swd") -> str:
    """Markdown: per budget, the median over the variants of ``metric`` on each spacing and
    how many variants each spacing serves best (the evidence for ``SDE.default_spacing``)."""
    by = {}  # (budget, variant) -> {spacing: value}
    for r in comp.records:
        if r.budget is None or " [" not in r.method:
            continue
        variant, spacing = r.method[:-1].split(" [")
        if spacing not in spacings:  # the registered samplers at their defaults
            continue
        by.setdefault((r.budget, variant), {})[spacing] = abs(r.metrics[metric])
    budgets = sorted({b for b, _ in by})
    lines = [f"| budget | {' | '.join(f'median {metric} [{s}]' for s in spacings)} | best for |",
             "|---|" + "---|" * (len(spacings) + 1)]
    for b in budgets:
        cells = {s: [v[s] for (bb, _), v in by.items() if bb == b and s in v] for s in spacings}
        wins = dict.fromkeys(spacings, 0)
        for (bb, _), v in by.items():
            if bb == b:
                wins[min(v, key=v.get)] += 1
        medians = " | ".join(f"{statistics.median(cells[s]):.4g}" for s in spacings)
        best = ", ".join(f"{s} {k}" for s, k in wins.items() if k)
        lines.append(f"| {b} | {medians} | {best} |")
    return "\n".join(lines) + "\n"


def order_table(steps: tuple[int, ...] = (20, 40, 80), n: int = 24) -> str:
    """Markdown: RMS endpoint error against a dopri5 solution and the slopes between steps."""
    sde = sde_lib.get("vp")
    model = preset("ring8", std=0.3).model(sde)
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    span = torch.tensor([sde.T, sde.t_min], dtype=torch.float64)
    ref = scoregen.sample(model, sde, x_T, "ode_dopri5", ts=span, rtol=1e-10, atol=1e-10).x
    head = " | ".join(f"error at {k}" for k in steps)
    slopes = " | ".join(f"slope {a}->{b}" for a, b in itertools.pairwise(steps))
    rule = "|---|---|" + "---|" * (2 * len(steps) - 1)
    lines = [f"| sampler | options | {head} | {slopes} |", rule]
    for name, opts in ORDER_VARIANTS:
        errors = [float((scoregen.sample(model, sde, x_T, name, ts=time_grid(
            sde, k, "logsnr", denoise=False), **opts).x - ref).pow(2).mean().sqrt())
            for k in steps]
        rates = [math.log2(a / b) / math.log2(kb / ka)
                 for a, b, ka, kb in zip(errors, errors[1:], steps, steps[1:], strict=False)]
        lines.append(f"| {name} | {opts or 'defaults'} | "
                     + " | ".join(f"{e:.3g}" for e in errors) + " | "
                     + " | ".join(f"{r:.2f}" for r in rates) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["ring8", "mix64"])
    parser.add_argument("--sdes", nargs="+", default=["vp", "ve", "ve-edm"],
                        help="registered SDE names, or ve-edm (VE on sigma 0.002..80)")
    parser.add_argument("--budgets", nargs="+", type=int, default=[5, 10, 20, 50])
    parser.add_argument("--spacings", nargs="+", default=["edm", "logsnr", "uniform", "data"])
    parser.add_argument("--tolerances", nargs="+", type=float, default=[0.2, 0.1, 0.05],
                        help="rtol = atol of adaptive_sde (none: --tolerances with no value)")
    parser.add_argument("-n", type=int, default=1000, help="samples per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/fast_samplers")
    parser.add_argument("--orders", action="store_true",
                        help="measure convergence orders instead (writes --out/orders.md)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    if args.orders:
        table = order_table()
        out.mkdir(parents=True, exist_ok=True)
        outputs.write_text(out / "orders.md", table)
        print(table)
        return
    reports = []
    entropy: dict[str, float] = {}
    for preset_name in args.presets:
        for sde in args.sdes:
            start = time.perf_counter()
            problem = compare.oracle_problem(preset_name, make_sde(sde), n=args.n,
                                             seed=args.seed)
            if preset_name in entropy:  # H(p_data) does not depend on the SDE
                problem._entropy = entropy[preset_name]
            entropy[preset_name] = problem.entropy()
            comp = compare.run_comparison(
                problem, methods(args.spacings, bool(args.tolerances)), args.budgets,
                args.tolerances, n=args.n, seed=args.seed, max_multi_nfe=None, progress=False)
            best = perfect_solver(problem, args.n, args.seed)
            report = compare.markdown(comp) + (
                "## Time-grid spacing (|metric| over the fixed-step variants)\n\n"
                + spacing_summary(comp, args.spacings)
                + "\n" + spacing_summary(comp, args.spacings, "nll_gap") + "\n" + (
                "Perfect solver (exact samples at t_min, then the same denoising step): "
                + ", ".join(f"{k} {v:.4g}" for k, v in best.items()) + ".\n"))
            seconds = time.perf_counter() - start
            report += f"\n({seconds:.0f} s for this problem.)\n"
            folder = out / f"{preset_name}-{sde}"
            folder.mkdir(parents=True, exist_ok=True)
            outputs.write_text(folder / "results.md", report)
            compare.write_csv(comp, folder / "results.csv")
            raw = {"problem": comp.problem, "settings": comp.settings, "noise_floor": comp.floor,
                   "records": [dataclasses.asdict(r) for r in comp.records]}
            outputs.write_text(folder / "results.json", json.dumps(raw, indent=1, allow_nan=True))
            print(report, flush=True)
            reports.append(report)
    out.mkdir(parents=True, exist_ok=True)
    outputs.write_text(out / "summary.md", "\n\n".join(reports))
    print(f"wrote {out / 'summary.md'} (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
