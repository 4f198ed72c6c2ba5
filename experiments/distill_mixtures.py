"""Few-step students of the exact mixture teacher against every sampler at 1-8 NFE.

For each preset (``--presets``, default ring8 and mix64; the teacher is the exact oracle under
VP, the reflow student's coupling comes from it too) this runs, through the command line:

1. ``scoregen distill PRESET --method M --cpu-limit 3m`` for each method of :data:`STUDENTS`
   (its options there), one thread: each student gets three minutes of CPU time of one core
   (an idle 2-core machine's three minutes of wall time, whatever else runs here);
2. ``scoregen compare --preset PRESET --students ...`` at NFE 1, 2, 4, 5, 8, 10: every
   registered sampler on its default grid beside the students, 2000 samples from the same
   noise, the usual metrics, their noise floors, the endpoint error against the exact map;
3. ``scoregen tune-grid`` and a comparison of the samplers on grids tuned for 5 NFE (the
   reference of the second target);

and writes ``OUT/summary.md``: per preset, the best student and the best training-free sampler
at 1 and 2 NFE on sliced W2 and the NLL gap, the 2-NFE students against the best tuned 5-NFE
sampler with the noise floor, and what each student cost (teacher NFE, steps, CPU and wall
seconds)::

    python experiments/distill_mixtures.py [--presets ring8,mix64] [--out runs/distill_mixtures]

Students already in ``OUT`` are kept (delete their folder to redo one); the summary covers
every preset in ``OUT``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
from pathlib import Path
from typing import Any

import torch

from scoregen.cli import main
from scoregen.infra import outputs

BUDGETS = (1, 2, 4, 5, 8, 10)
TUNED = ("unipc", "dpm_solver++", "ipndm")
# method -> (scoregen distill options); the teacher is the preset under VP
STUDENTS: dict[str, list[str]] = {
    "consistency": ["--opt", "tune_nfe=8"],
    "consistency-training": ["--opt", "tune_nfe=8"],
    "progressive": ["--opt", "start_steps=16", "--opt", "spacing=quadratic"],
    "reflow": ["--opt", "pairs=20000", "--opt", "reflow=false", "--steps", "6000"],
}
METRICS = ("swd", "nll_gap")


def _run(argv: list[str], log: Path) -> None:
    """``scoregen ARGV``, its output appended to ``log``; an error stops the experiment."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = main(argv)
    old = log.read_text() if log.exists() else ""
    outputs.write_text(log, f"{old}$ scoregen {' '.join(argv)}\n{out.getvalue()}\n")
    if rc:
        raise SystemExit(f"scoregen {' '.join(argv)} failed (see {log})")


def _records(folder: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    raw = json.loads((folder / "results.json").read_text())
    return raw["records"], raw["noise_floor"]


def _best(records: list[dict[str, Any]], family: str, budget: int, metric: str
          ) -> dict[str, Any] | None:
    rows = [r for r in records if r["family"] == family and r["budget"] == budget]
    return min(rows, key=lambda r: abs(r["metrics"][metric])) if rows else None


def _named(record: dict[str, Any], metric: str) -> str:
    """``method: value`` with the counted NFE where it is below the budget."""
    below = f" ({record['nfe']} NFE)" if record["nfe"] != record["budget"] else ""
    return f"{record['method']}: {record['metrics'][metric]:.4g}{below}"


def summarize(preset: str, out: Path, cpu_limit: str) -> list[str]:
    records, floor = _records(out / "compare")
    tuned, _ = _records(out / "compare_tuned5")
    lines = [f"## {preset} (exact oracle, vp)", "",
             f"Noise floor (2000 samples): swd {floor['swd']:.4g}, nll_gap "
             f"{floor['nll_gap']:.4g}.", "",
             "| NFE | metric | best student | best sampler | student wins |",
             "|---|---|---|---|---|"]
    for budget in (1, 2):
        for metric in METRICS:
            s, m = _best(records, "student", budget, metric), _best(records, "scoregen", budget,
                                                                      metric)
            if s is None or m is None:
                continue
            win = abs(s["metrics"][metric]) < abs(m["metrics"][metric])
            lines.append(f"| {budget} | {metric} | {_named(s, metric)} | {_named(m, metric)} | "
                         f"{'yes' if win else 'no'} |")
    lines += ["", "Students within a 2-NFE budget against the best sampler on grids tuned for 5 "
              "NFE (within the noise floor: the student's error exceeds the sampler's by at most "
              "the floor):", "",
              "| metric | best tuned 5-NFE sampler | best 2-NFE student | within the floor |",
              "|---|---|---|---|"]
    for metric in METRICS:
        t = min(tuned, key=lambda r: abs(r["metrics"][metric]))
        s = _best(records, "student", 2, metric)
        if s is None:
            continue
        gap = abs(s["metrics"][metric]) - abs(t["metrics"][metric])
        lines.append(f"| {metric} | {_named(t, metric)} | {_named(s, metric)} | "
                     f"{'yes' if gap <= floor[metric] else 'no'} (excess {gap:.3g}, floor "
                     f"{floor[metric]:.3g}) |")
    lines += ["", f"What each student cost (`--cpu-limit {cpu_limit}`, one thread):", "",
              "| student | NFE offered | teacher NFE | steps | CPU s | wall s |",
              "|---|---|---|---|---|---|"]
    for method in STUDENTS:
        record = json.loads((out / method / "student.json").read_text())
        spent = [s for s in record["stages"] if s["kind"] != "measure"]
        total = {k: sum(float(s.get(k, 0) or 0) for s in spent)
                 for k in ("teacher_rows", "steps", "cpu_seconds", "seconds")}
        offered = sorted({e["nfe"] for e in record["sampling"]["entries"]})
        rule = record["sampling"].get("rule")
        lines.append(f"| {method} | {', '.join(map(str, offered))}{' and any' if rule else ''} | "
                     f"{total['teacher_rows']:.3g} | {total['steps']:.0f} | "
                     f"{total['cpu_seconds']:.0f} | {total['seconds']:.0f} |")
    return [*lines, ""]


def run_preset(preset: str, out: Path, cpu_limit: str, n: int) -> None:
    log = out / "log.txt"
    for method, options in STUDENTS.items():
        if not (out / method / "student.json").is_file():
            _run(["distill", preset, "--sde", "vp", "--method", method, "--out",
                  str(out / method), "--cpu-limit", cpu_limit, "--threads", "1",
                  "--no-progress", *options], log)
    students = ",".join(str(out / m) for m in STUDENTS)
    _run(["compare", "--preset", preset, "--sde", "vp", "--students", students, "--budgets",
          ",".join(map(str, BUDGETS)), "-n", str(n), "--out", str(out / "compare"),
          "--no-progress"], log)
    grids = out / "grids"
    _run(["tune-grid", preset, "--sde", "vp", "--sampler", ",".join(TUNED), "--nfe", "5",
          "--out", str(grids)], log)
    _run(["compare", "--preset", preset, "--sde", "vp", "--spacing", "tuned", "--grids",
          str(grids), "--samplers", ",".join(TUNED), "--budgets", "5", "-n", str(n), "--out",
          str(out / "compare_tuned5"), "--no-progress"], log)


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="ring8,mix64")
    parser.add_argument("--cpu-limit", default="3m", help="CPU budget of each student")
    parser.add_argument("-n", type=int, default=2000, help="samples per comparison run")
    parser.add_argument("--out", default="runs/distill_mixtures")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    presets = [p for p in args.presets.split(",") if p]
    for path in [out / "summary.md", *(out / p / "log.txt" for p in presets)]:
        outputs.check_target(path, what="--out")
    lines = ["# Few-step students of the exact mixture teacher", "",
             f"Machine: {platform.machine()} {platform.system()}, torch {torch.__version__}, "
             "one thread; shared with other work, so each student's budget is CPU time "
             f"(`--cpu-limit {args.cpu_limit}`). Tables and plots of each preset: "
             "`OUT/<preset>/compare/`.", ""]
    for preset in presets:
        run_preset(preset, out / preset, args.cpu_limit, args.n)
    for folder in sorted(out.iterdir()):  # every preset done so far, this call's or earlier
        if (folder / "compare_tuned5" / "results.json").is_file():
            lines += summarize(folder.name, folder, args.cpu_limit)
    outputs.write_text(out / "summary.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main_()
