"""Sampler quality versus NFE: a thin wrapper of ``scoregen compare`` (same code, same options).

    python experiments/compare_samplers.py                       # ring8 under VP, all samplers
    python experiments/compare_samplers.py --preset mix64 --sde ddpm --peers

Every option of ``scoregen compare --help`` is accepted; outputs go to ``--out``
(default ``runs/compare``).
"""

from __future__ import annotations

import sys

from scoregen.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
