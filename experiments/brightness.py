"""Brightness and Frechet distance of trained image runs: zero terminal SNR and offset noise.

    python experiments/brightness.py RUN[:LABEL[:SPACING]] ... [--sampler ddim] [--nfe 20]
        [--n 1000] [--out runs/brightness]

For each run (its EMA weights; ``SPACING`` overrides the sampler grid, e.g. ``trailing``)
draws ``--n`` samples at ``--nfe`` and reports the Frechet distance on the dataset's
classifier features against the test split and the per-image mean brightness statistics
(:mod:`scoregen.evaluation.image_stats`), with the same statistics of the test split as the
first row. Writes ``OUT/brightness.md``, ``brightness.json`` and ``brightness.png`` (the
histograms of per-image mean brightness). The commands of docs/results.md:

    python experiments/brightness.py runs/digits_phema/checkpoints/step_001000:eps \\
        runs/digits_v_plain:v runs/digits_v_plain:v,trailing:trailing \\
        runs/digits_v_zts:v,zero-terminal-SNR runs/digits_offset:eps,offset-0.1 \\
        --out runs/brightness
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from scoregen.evaluation.image_stats import brightness, held_out, measure
from scoregen.infra import outputs
from scoregen.infra.plotting import save_figure
from scoregen.training.checkpoint import load_model, read_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="RUN[:LABEL[:SPACING]]")
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--nfe", type=int, default=20)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/brightness")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    for name in ("brightness.md", "brightness.json", "brightness.png"):
        outputs.check_target(out / name, what="--out")

    rows, hists, data = [], {}, None
    for spec in args.runs:
        path, _, rest = spec.partition(":")
        label, _, spacing = rest.partition(":")
        ckpt = read_checkpoint(path)
        name = ckpt.meta["run_config"]["data"]["name"]
        if data is None:
            data = name
            ref = held_out(data)
            rows.append({"run": f"test split ({data}, {len(ref)} images)", **brightness(ref)})
            hists["data"] = ref.flatten(1).mean(1)
        model = load_model(path)
        r = measure(model, data, args.sampler, args.nfe, args.n, spacing or "auto", ref)
        hists[label or path] = r.pop("samples").flatten(1).mean(1)
        rows.append({"run": label or path, "checkpoint": str(ckpt.path), "step": ckpt.step,
                     "spacing": spacing or "auto", **r})
        print(rows[-1], flush=True)

    cols = ["fd", "mean", "std", "p01", "p99", "min", "max"]
    lines = [f"{args.sampler}, {args.nfe} NFE, {args.n} samples per run (seeds 0..{args.n - 1}); "
             "per-image mean pixel value in [-1, 1]", "",
             "| run | step | grid | " + " | ".join(cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for r in rows:
        vals = " | ".join("" if c not in r else f"{r[c]:.4g}" for c in cols)
        lines.append(f"| {r['run']} | {r.get('step', '')} | {r.get('spacing', '')} | {vals} |")
    outputs.write_text(out / "brightness.md", "\n".join(lines) + "\n")
    outputs.write_text(out / "brightness.json", json.dumps(rows, indent=1))
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = torch.linspace(-1, 1, 81)
    for label, m in hists.items():
        ax.hist(m.numpy(), bins=bins.numpy(), density=True, histtype="step", label=label,
                linewidth=2 if label == "data" else 1)
    ax.set_xlabel("per-image mean pixel value")
    ax.set_ylabel("density")
    ax.set_title(f"mean brightness of samples ({args.sampler}, {args.nfe} NFE) and data")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "brightness.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
