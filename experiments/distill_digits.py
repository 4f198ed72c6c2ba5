"""Few-step students of the trained digits model against the samplers, by the Frechet gap.

The teacher is ``runs/digits`` (``--teacher``): the 4000-step ``configs/digits.yaml`` U-Net
that ``python experiments/train_digits.py --threads 1 --out runs/digits`` trains. Through the
command line this runs:

1. ``scoregen distill runs/digits --method M --cpu-limit 10m`` for each method of
   :data:`STUDENTS` (its options there), one thread: ten minutes of CPU time of one core each
   (an idle 2-core machine's ten minutes of wall time, whatever else runs here);
2. ``scoregen compare --checkpoint runs/digits --students ...`` at NFE 1, 2, 4, 8, 10 with
   the fast samplers beside the students, ``-n`` (500) samples from the same noise, scored
   by the Frechet distance on the digits classifier's features against the 297 test digits
   (noise floor: 500 train digits against them) and the endpoint error against the
   teacher's ODE map of the same noise (dopri5, ``rtol = atol = 1e-5``);
3. the teacher's converged gap: ``unipc`` at 200 NFE, same noise.

``OUT/summary.md`` gives each student's Frechet gap (distance minus the floor) at 1 and 2 NFE
as a multiple of the teacher's converged gap (targets: at most 1.5x at 1 NFE, 1.15x at 2
NFE; published at 2 steps on CIFAR-10: CD 1.77x, ECT 1.05x) and what each student cost::

    python experiments/distill_digits.py [--teacher runs/digits] [--out runs/distill_digits]

Students already in ``OUT`` are kept (delete their folder to redo one).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
from pathlib import Path

import torch

from scoregen.cli import main
from scoregen.infra import outputs

BUDGETS = (1, 2, 4, 8, 10)
CONVERGED_NFE = 200
SAMPLERS = ("ddim", "heun", "dpm_solver++", "unipc", "ipndm")
STUDENTS: dict[str, list[str]] = {
    "consistency-training": ["--opt", "tune_nfe=4", "--opt", "tune_samples=500",
                             "--opt", "tune_candidates=8"],
    "consistency": ["--opt", "tune_nfe=4", "--opt", "tune_samples=500",
                    "--opt", "tune_candidates=8"],
    "progressive": ["--opt", "start_steps=8"],
    "reflow": ["--opt", "pairs=4000", "--opt", "pair_nfe=16", "--set", "train.steps=1000"],
}


def _run(argv: list[str], log: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = main(argv)
    old = log.read_text() if log.exists() else ""
    outputs.write_text(log, f"{old}$ scoregen {' '.join(argv)}\n{out.getvalue()}\n")
    if rc:
        raise SystemExit(f"scoregen {' '.join(argv)} failed (see {log})")


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="runs/digits")
    parser.add_argument("--cpu-limit", default="10m", help="CPU budget of each student")
    parser.add_argument("-n", type=int, default=500, help="samples per comparison run")
    parser.add_argument("--out", default="runs/distill_digits")
    parser.add_argument("--methods", default=",".join(STUDENTS))
    args = parser.parse_args()
    if not Path(args.teacher).exists():
        raise SystemExit(f"no teacher at {args.teacher}: train it with `python "
                         f"experiments/train_digits.py --threads 1 --out {args.teacher}`")
    torch.set_num_threads(1)
    out = Path(args.out)
    log = out / "log.txt"
    for path in (log, out / "summary.md"):
        outputs.check_target(path, what="--out")
    methods = [m for m in args.methods.split(",") if m]
    for method in methods:
        if not (out / method / "student.json").is_file():
            _run(["distill", args.teacher, "--method", method, "--out", str(out / method),
                  "--cpu-limit", args.cpu_limit, "--threads", "1", "--no-progress",
                  *STUDENTS[method]], log)
    _run(["compare", "--checkpoint", args.teacher, "--students",
          ",".join(str(out / m) for m in methods), "--samplers", ",".join(SAMPLERS),
          "--budgets", ",".join(map(str, BUDGETS)), "-n", str(args.n), "--out",
          str(out / "compare"), "--no-progress"], log)
    _run(["compare", "--checkpoint", args.teacher, "--samplers", "unipc", "--budgets",
          str(CONVERGED_NFE), "-n", str(args.n), "--out", str(out / "converged"),
          "--no-progress"], log)
    raw = json.loads((out / "compare" / "results.json").read_text())
    floor = raw["noise_floor"]["fd_digits"]
    converged = json.loads((out / "converged" / "results.json").read_text())["records"][0]
    conv_gap = converged["metrics"]["fd_digits"] - floor
    records = raw["records"]
    lines = ["# Few-step students of the digits model", "",
             f"Teacher {args.teacher}; machine: {platform.machine()} {platform.system()}, torch "
             f"{torch.__version__}, one thread, shared with other work, so each student's budget "
             f"is CPU time (`--cpu-limit {args.cpu_limit}`). {args.n} samples per run; Frechet "
             f"distance on the digits classifier's features against the 297 test digits; noise "
             f"floor {floor:.3f}; the teacher's converged gap (unipc, {CONVERGED_NFE} NFE): "
             f"{converged['metrics']['fd_digits']:.3f} - {floor:.3f} = {conv_gap:.3f}.", "",
             "| method | NFE | Frechet distance | gap | gap / converged gap | target | met |",
             "|---|---|---|---|---|---|---|"]
    targets = {1: 1.5, 2: 1.15}
    best_sampler = {}
    for budget in targets:
        rows = [r for r in records if r["budget"] == budget]
        for r in sorted(rows, key=lambda r: (r["family"] != "student", r["method"])):
            gap = r["metrics"]["fd_digits"] - floor
            ratio = gap / conv_gap
            target = targets[budget] if r["family"] == "student" else None
            met = "" if target is None else ("yes" if ratio <= target else "no")
            lines.append(f"| {r['method']} | {r['nfe']} | {r['metrics']['fd_digits']:.3f} | "
                         f"{gap:.3f} | {ratio:.2f} | {'' if target is None else f'<= {target}'}"
                         f" | {met} |")
        samplers = [r for r in rows if r["family"] == "scoregen"]
        if samplers:
            best_sampler[budget] = min(samplers, key=lambda r: r["metrics"]["fd_digits"])
    lines += ["", "What each student cost:", "",
              "| student | NFE offered | teacher NFE | steps | CPU s | wall s |",
              "|---|---|---|---|---|---|"]
    for method in methods:
        record = json.loads((out / method / "student.json").read_text())
        spent = [s for s in record["stages"] if s["kind"] != "measure"]
        total = {k: sum(float(s.get(k, 0) or 0) for s in spent)
                 for k in ("teacher_rows", "steps", "cpu_seconds", "seconds")}
        offered = sorted({e["nfe"] for e in record["sampling"]["entries"]})
        rule = record["sampling"].get("rule")
        lines.append(f"| {method} | {', '.join(map(str, offered))}{' and any' if rule else ''} | "
                     f"{total['teacher_rows']:.3g} | {total['steps']:.0f} | "
                     f"{total['cpu_seconds']:.0f} | {total['seconds']:.0f} |")
    outputs.write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main_()
