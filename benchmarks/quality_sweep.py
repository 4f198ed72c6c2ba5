"""The steps-versus-quality sweep of ``docs/results.md``: scoregen and peers side by side.

Exact scores: for each preset (ring8, mix64) it runs ``scoregen compare`` on the discrete
DDPM process (VP, 1000 linear betas), the one every peer supports, with all registered
samplers and all installed peers, and writes ``runs/quality_sweep/<preset>/``.

Trained model: if the digits run exists (``python experiments/train_digits.py`` writes
``runs/digits``), the same comparison runs on it at NFE 5-50 (metrics ``swd`` and
``fd_digits`` against the 297 test digits, 1000 samples per run; noise floor: 1000 train
digits against the same test digits) into
``runs/quality_sweep/digits/``; otherwise it says how to make one. The model, trained on the
continuous VP SDE, is run under the discrete DDPM process (``--sde ddpm``: the network is
conditioned on the noise level, and the two schedules nearly coincide) so that the diffusers
schedulers can run on it too.

Finally ``runs/quality_sweep/wins.md`` puts, for every problem, budget and metric, the best
scoregen sampler next to the best peer (fixed-budget runs; by the size of the error; a gap
below the metric's noise floor counts as a tie).

Extra arguments are passed to every ``scoregen compare`` (e.g. ``-n 1000`` for a quicker
run)::

    python benchmarks/quality_sweep.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scoregen.cli import main
from scoregen.infra import outputs

PRESETS = ("ring8", "mix64")
DIGITS_RUN = Path("runs/digits")
OUT = Path("runs/quality_sweep")


def wins_table(results: Path) -> str:
    """Markdown: per budget and metric, the best scoregen sampler and the best peer; a gap
    smaller than the metric's noise floor (its value between two exact sample sets) is a
    tie, since a finite sample cannot resolve it."""
    data = json.loads(results.read_text())
    best: dict[tuple[int, str, str], tuple[float, str]] = {}
    for r in data["records"]:
        if r["budget"] is None:
            continue
        side = "scoregen" if r["family"] == "scoregen" else "peer"
        for metric, value in r["metrics"].items():
            key = (r["budget"], metric, side)
            if value == value and abs(value) < best.get(key, (float("inf"), ""))[0]:
                best[key] = (abs(value), r["method"])
    lines = [f"### {data['problem']['name']}", "",
             "| NFE | metric | best scoregen | |error| | best peer | |error| | winner |",
             "|---|---|---|---|---|---|---|"]
    for budget, metric in sorted({(b, m) for b, m, _ in best}):
        ours, theirs = best.get((budget, metric, "scoregen")), best.get((budget, metric, "peer"))
        if ours is None or theirs is None:
            continue
        floor = (data.get("noise_floor") or {}).get(metric)
        if floor is not None and abs(ours[0] - theirs[0]) <= abs(floor):
            winner = "tie (gap below the noise floor)"
        else:
            winner = "scoregen" if ours[0] < theirs[0] else "peer"
        lines.append(f"| {budget} | {metric} | {ours[1]} | {ours[0]:.4g} | {theirs[1]} | "
                     f"{theirs[0]:.4g} | {winner} |")
    return "\n".join(lines) + "\n"


def write_wins() -> None:
    tables = [wins_table(f) for f in sorted(OUT.glob("*/results.json"))]
    outputs.write_text(OUT / "wins.md", "\n".join(tables))
    print(f"wrote {OUT / 'wins.md'}")


def sweep(extra: list[str]) -> int:
    for name in PRESETS:
        code = main(["compare", "--preset", name, "--sde", "ddpm", "--peers",
                     "--out", str(OUT / name), *extra])
        if code:
            return code
    if (DIGITS_RUN / "checkpoints" / "LATEST").exists():
        code = main(["compare", "--checkpoint", str(DIGITS_RUN), "--sde", "ddpm", "--peers",
                     "--budgets", "5,10,20,50", "-n", "1000", "--out", str(OUT / "digits"),
                     *extra])
        if code:
            return code
    else:
        print(f"no trained digits model at {DIGITS_RUN}: run `python experiments/"
              "train_digits.py` first to add it to the sweep")
    write_wins()
    return 0


if __name__ == "__main__":
    sys.exit(sweep(sys.argv[1:]))
