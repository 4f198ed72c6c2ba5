"""Markdown tables from a pytest-benchmark JSON file (``--benchmark-json=FILE``)::

    pytest benchmarks/ --benchmark-enable --benchmark-json=runs/bench.json
    python benchmarks/summarize.py runs/bench.json

Sampler overhead: best-of-rounds time per model call (us/NFE); networks: examples per second.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def summarize(path: str) -> str:
    data = json.loads(Path(path).read_text())
    overhead: dict[str, dict[str, float]] = defaultdict(dict)
    family: dict[str, str] = {}
    networks = []
    for b in data["benchmarks"]:
        info, params = b["extra_info"], b["params"]
        workload = params["workload"][0] if isinstance(params["workload"], list) else ""
        label = f"{workload} (batch {info['batch']})"
        if "us_per_nfe" in info:
            overhead[params["name"]][label] = info["us_per_nfe"]
            family[params["name"]] = info["family"]
        else:
            networks.append((b["group"], info["network"], label, b["stats"]["min"],
                             info["examples_per_s"]))
    cols = sorted({c for row in overhead.values() for c in row})
    lines = ["| sampler | library | " + " | ".join(f"us/NFE, {c}" for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for name in sorted(overhead, key=lambda n: (family[n] != "scoregen", n)):
        cells = [f"{overhead[name][c]:.0f}" if c in overhead[name] else "" for c in cols]
        lines.append(f"| {name} | {family[name]} | " + " | ".join(cells) + " |")
    if networks:
        lines += ["", "| benchmark | network | workload | best time (ms) | examples/s |",
                  "|---|---|---|---|---|"]
        lines += [f"| {g} | {n} | {w} | {1e3 * s:.1f} | {e:.0f} |"
                  for g, n, w, s, e in networks]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(sys.argv[1] if len(sys.argv) > 1 else "runs/bench.json"))
