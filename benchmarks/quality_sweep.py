"""The steps-versus-quality sweep of ``docs/results.md``: exact scores, scoregen and peers.

For each preset (ring8, mix64) it runs ``scoregen compare`` on the discrete DDPM process
(VP, 1000 linear betas), the one every peer supports, with all registered samplers and all
installed peers, and writes ``runs/quality_sweep/<preset>/``. Extra arguments are passed to
``scoregen compare`` (e.g. ``-n 1000`` for a quicker run)::

    python benchmarks/quality_sweep.py
"""

from __future__ import annotations

import sys

from scoregen.cli import main

PRESETS = ("ring8", "mix64")


def sweep(extra: list[str]) -> int:
    for name in PRESETS:
        code = main(["compare", "--preset", name, "--sde", "ddpm", "--peers",
                     "--out", f"runs/quality_sweep/{name}", *extra])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(sweep(sys.argv[1:]))
