"""The steps-versus-quality sweep of ``docs/results.md``: scoregen and peers side by side.

Exact scores: for each preset (ring8, mix64) it runs ``scoregen compare`` on the discrete
DDPM process (VP, 1000 linear betas), the one every peer supports, with all registered
samplers and all installed peers, and writes ``runs/quality_sweep/<preset>/``.

Trained model: if the digits run exists (``python experiments/train_digits.py`` writes
``runs/digits``), the same comparison runs on it at NFE 5-50 (metrics ``swd`` and
``fd_digits``) into ``runs/quality_sweep/digits/``; otherwise it says how to make one.

Extra arguments are passed to every ``scoregen compare`` (e.g. ``-n 1000`` for a quicker
run)::

    python benchmarks/quality_sweep.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from scoregen.cli import main

PRESETS = ("ring8", "mix64")
DIGITS_RUN = Path("runs/digits")


def sweep(extra: list[str]) -> int:
    for name in PRESETS:
        code = main(["compare", "--preset", name, "--sde", "ddpm", "--peers",
                     "--out", f"runs/quality_sweep/{name}", *extra])
        if code:
            return code
    if not (DIGITS_RUN / "checkpoints" / "LATEST").exists():
        print(f"no trained digits model at {DIGITS_RUN}: run `python experiments/"
              "train_digits.py` first to add it to the sweep")
        return 0
    return main(["compare", "--checkpoint", str(DIGITS_RUN), "--peers", "--budgets",
                 "5,10,20,50", "--out", "runs/quality_sweep/digits", *extra])


if __name__ == "__main__":
    sys.exit(sweep(sys.argv[1:]))
