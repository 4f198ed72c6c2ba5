"""The digits models of the processes beyond a scalar schedule beside VP's, at 20 and 100 NFE.

    python experiments/processes_digits.py [--runs vp:runs/digits,cld:runs/digits_cld,...]
                                           [--budgets 20,100] [-n 1000] [--out DIR]

Each run is a U-Net of ``configs/digits.yaml`` trained at the same budget (4000 steps of 128
examples) under its process (``configs/digits_cld.yaml``, ``configs/digits_blur.yaml``,
``configs/digits_vdm.yaml``); its EMA weights draw ``n`` samples with every listed sampler that
runs on the process at each NFE budget, from the same per-sample seeds (``scoregen compare
--checkpoint``'s sweep), scored against the 297 held-out test digits: the Frechet distance on
the digits classifier's features (``fd_digits``) and the sliced Wasserstein distance (``swd``);
the noise floor is the same metric for 1000 real train digits. Writes each run's full tables to
``OUT/<name>/`` and ``OUT/summary.md`` (the best sampler of each process at each budget).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scoregen import samplers
from scoregen.evaluation import compare
from scoregen.infra import outputs

SAMPLERS = {
    "vp": ("ddim", "dpm_solver++", "unipc", "ancestral", "euler_maruyama"),
    "vdm": ("ddim", "dpm_solver++", "unipc", "ancestral", "euler_maruyama"),
    "cld": ("sscs", "euler_maruyama", "pc", "ode_euler", "ode_midpoint", "ode_rk4"),
    "blur": ("ddim", "ancestral", "euler_maruyama", "pc", "ode_midpoint", "ode_rk4"),
}
RUNS = "vp:runs/digits,cld:runs/digits_cld,blur:runs/digits_blur,vdm:runs/digits_vdm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=RUNS)
    parser.add_argument("--budgets", default="20,100")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--out", default="runs/processes_digits")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    out = Path(args.out)
    runs = [item.split(":") for item in args.runs.split(",")]
    outputs.check_target(out / "summary.md", what="--out")
    for name, _ in runs:
        compare.check_outputs(out / name, compare.shown_budget(budgets))
    lines = ["| process | " + " | ".join(f"best at {b} NFE: fd_digits (swd)" for b in budgets)
             + " |", "|---|" + "---|" * len(budgets)]
    floors = {}
    for name, path in runs:
        problem = compare.checkpoint_problem(path, args.n)
        names = [s for s in SAMPLERS[problem.sde.name] if not samplers.missing(s, problem.sde)]
        comp = compare.run_comparison(problem, compare.scoregen_methods(names), budgets,
                                      n=args.n, max_multi_nfe=max(budgets))
        compare.write_outputs(comp, out / name, problem.reference)
        floors = comp.floor
        cells = []
        for b in budgets:
            rows = [r for r in comp.records if r.budget == b and r.nfe <= b]
            best = min(rows, key=lambda r: r.metrics["fd_digits"])
            cells.append(f"{best.metrics['fd_digits']:.2f} (`{best.method}`, {best.nfe} NFE; "
                         f"swd {best.metrics['swd']:.4f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + (f"\n\nNoise floor: fd_digits {floors.get('fd_digits', 0):.2f}, "
                               f"swd {floors.get('swd', 0):.4f}.\n")
    outputs.write_text(out / "summary.md", text)
    print(text)


if __name__ == "__main__":
    main()
