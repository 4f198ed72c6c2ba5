"""The processes beyond a scalar schedule on exact scores, against VP at equal NFE.

    python experiments/processes_exact.py [--n 2000] [--budgets 10,20,50,100,200,500] [--out DIR]

For each problem (the exact Gaussian-mixture oracle: ring8 and mix64 for critically-damped
Langevin ``cld`` and ``vp``, mix64 as 1x8x8 images ``mix8x8`` for blurring ``blur``: the same
distribution as mix64, so its VP row is mix64's) every sampler that runs on the process (on VP:
:data:`VP_SAMPLERS`) draws ``n`` samples at each NFE budget from the same per-sample seeds
(``scoregen compare``'s sweep: counted NFE, sliced W2 against exact samples with its noise floor,
the mixture's NLL gap and mode weights). Each problem's full tables and plots go
to ``OUT/<process>_<preset>/``; ``OUT/summary.md`` puts the best sampler of each process beside
VP's at every budget (the sliced W2 as a multiple of the noise floor), and ``OUT/summary.png``
plots it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from scoregen import samplers
from scoregen.evaluation import compare
from scoregen.infra import outputs
from scoregen.infra.plotting import save_figure

PROBLEMS = (("cld", "ring8"), ("vp", "ring8"), ("cld", "mix64"), ("vp", "mix64"),
            ("blur", "mix8x8"))
# VP's side: the generic samplers, DDIM and the ancestral chain, and the best fast solvers
VP_SAMPLERS = ("ddim", "dpm_solver++", "unipc", "ancestral", "euler_maruyama", "pc", "ode_rk4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--budgets", default="10,20,50,100,200,500")
    parser.add_argument("--problems", default=",".join(f"{s}:{p}" for s, p in PROBLEMS))
    parser.add_argument("--out", default="runs/processes_exact")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    out = Path(args.out)
    problems = [item.split(":") for item in args.problems.split(",")]
    for name in ("summary.md", "summary.json", "summary.png"):
        outputs.check_target(out / name, what="--out")
    for sde_name, preset in problems:
        compare.check_outputs(out / f"{sde_name}_{preset}", compare.shown_budget(budgets))
    best: dict[tuple[str, str], dict[int, tuple[str, float, float]]] = {}
    for sde_name, preset in problems:
        problem = compare.oracle_problem(preset, sde_name, args.n, 0, torch.float64)
        names = list(VP_SAMPLERS) if sde_name == "vp" else samplers.applicable(problem.sde)
        comp = compare.run_comparison(problem, compare.scoregen_methods(names), budgets,
                                      n=args.n, max_multi_nfe=max(budgets))
        compare.write_outputs(comp, out / f"{sde_name}_{preset}", problem.reference)
        floor = comp.floor["swd"]
        rows: dict[int, tuple[str, float, float]] = {}
        for r in comp.records:
            if r.budget is None or r.nfe > r.budget:
                continue
            swd = r.metrics["swd"]
            if r.budget not in rows or swd < rows[r.budget][1]:
                rows[r.budget] = (r.method, swd, swd / floor)
        best[(sde_name, preset)] = rows
        print(f"{sde_name} {preset}: floor {floor:.4g}; best per budget: "
              + ", ".join(f"{b}: {m} {v:.3g}" for b, (m, v, _) in sorted(rows.items())))
    lines = ["| data | process | " + " | ".join(f"{b} NFE" for b in budgets) + " |",
             "|---|---|" + "---|" * len(budgets)]
    for (sde_name, preset), rows in best.items():
        cells = [f"{rows[b][2]:.2f}x ({rows[b][0]})" if b in rows else "" for b in budgets]
        lines.append(f"| {preset} | {sde_name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    outputs.write_text(out / "summary.md", text)
    outputs.write_text(out / "summary.json", json.dumps(
        {f"{s}:{p}": {str(b): v for b, v in rows.items()} for (s, p), rows in best.items()},
        indent=1))
    _plot(best, budgets, out / "summary.png")
    print(text)


def _plot(best: dict, budgets: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = sorted({p for _, p in best})
    fig, axes = plt.subplots(1, len(presets), figsize=(4.5 * len(presets), 3.6), squeeze=False)
    for ax, preset in zip(axes[0], presets, strict=True):
        for (sde_name, p), rows in best.items():
            if p != preset:
                continue
            b = [k for k in budgets if k in rows]
            ax.plot(b, [rows[k][2] for k in b], marker="o", label=sde_name)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel("best sliced W2 / noise floor")
        ax.set_title(preset)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
