"""Training throughput of the digits U-Net at 1 and 2 processes (DDP, gloo on the CPU).

    python benchmarks/ddp_scaling.py [--steps 300] [--config configs/digits.yaml]

Runs ``torchrun --standalone --nproc_per_node=P -m scoregen train CONFIG`` for
``(processes, threads per process)`` in ``--layouts`` (default ``1x1,2x1``: one process on
one core, two processes on one core each; add ``1x2``, one process on two cores, on an idle
machine: intra-op threads stall badly when the cores are shared), the same global batch each
time, and reads examples/s from each run's ``log.csv``
(the first logged interval, which holds the start-up, is left out). Scaling efficiency is
``rate(P x 1) / (P rate(1 x 1))``. Prints a Markdown table and writes it with the raw numbers
to ``OUT/scaling.md`` and ``OUT/scaling.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from scoregen.infra import outputs


def _rate(log: Path, batch: int) -> float:
    """Examples/s between the first and the last row of ``log.csv``."""
    with open(log) as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) < 2:
        raise SystemExit(f"{log}: need at least two logged intervals; raise --steps")
    first, last = rows[0], rows[-1]
    steps = int(last["step"]) - int(first["step"])
    return steps * batch / (float(last["seconds"]) - float(first["seconds"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/digits.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--layouts", default="1x1,2x1",
                        help="processes x threads per process, comma-separated")
    parser.add_argument("--out", default="runs/ddp_scaling")
    args = parser.parse_args()

    from scoregen.training.config import load_config

    batch = load_config(args.config).train.batch_size
    out = Path(args.out)
    rows = []
    for layout in args.layouts.split(","):
        procs, threads = (int(v) for v in layout.split("x"))
        run = out / f"p{procs}_t{threads}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={procs}", "-m", "scoregen", "train", args.config,
               "--out", str(run), "--overwrite", "--steps", str(args.steps), "--no-progress",
               "--set", f"train.threads={threads}", "--set", f"train.log_every={args.log_every}",
               "--set", "train.ckpt_every=0", "--set", "train.sample_every=0"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env=env)
        rows.append({"processes": procs, "threads": threads,
                     "examples_per_s": round(_rate(run / "log.csv", batch), 1)})
    base = next((r["examples_per_s"] for r in rows if (r["processes"], r["threads"]) == (1, 1)),
                None)
    lines = [f"digits U-Net, {args.config}, global batch {batch}, {args.steps} steps, "
             f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs", "",
             "| processes x threads | examples/s | scaling efficiency |", "|---|---|---|"]
    for r in rows:
        eff = ("" if base is None or r["threads"] != 1
               else f"{r['examples_per_s'] / (r['processes'] * base):.2f}")
        lines.append(f"| {r['processes']} x {r['threads']} | {r['examples_per_s']:.0f} | {eff} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    outputs.write_text(out / "scaling.md", text)
    outputs.write_text(out / "scaling.json", json.dumps(
        {"config": args.config, "steps": args.steps, "batch": batch, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
