"""Post-hoc EMA on the digits model: Frechet distance at 20 NFE against the EMA width.

    python experiments/posthoc_ema.py [--run runs/digits_phema] [--step 2000]
        [--widths 0.02,0.03,0.05,0.07,0.1,0.15,0.2,0.25] [--sampler ddim] [--nfe 20] [--n 1000]

The run must track power EMAs (``train.ema_sigma_rel``; the digits run of docs/results.md:
``scoregen train configs/digits.yaml --out runs/digits_phema --steps 2000 --set
train.ema_sigma_rel=[0.05,0.1] --set train.ema_snapshot_every=50``). Every width is
reconstructed at ``--step`` with ``scoregen ema`` (as a checkpoint under ``RUN/ema/``) and
scored like the run's own weights at that step: the fixed-decay EMA the trainer keeps
(``train.ema_decay``) and the raw weights. Writes ``OUT/posthoc_ema.md``, ``.json`` and
``posthoc_ema.png`` (FD against width, the fixed-decay EMA and the raw weights as lines).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from scoregen.data import load_dataset
from scoregen.evaluation.image_stats import held_out, measure
from scoregen.evaluation.metrics import METRICS
from scoregen.infra import outputs
from scoregen.infra.plotting import save_figure
from scoregen.training.checkpoint import load_model
from scoregen.training.posthoc_ema import write_reconstruction


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/digits_phema")
    parser.add_argument("--step", type=int, default=2000)
    parser.add_argument("--widths", type=_floats,
                        default=[0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25])
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--nfe", type=int, default=20)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/posthoc_ema")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    for name in ("posthoc_ema.md", "posthoc_ema.json", "posthoc_ema.png"):
        outputs.check_target(out / name, what="--out")
    run = Path(args.run)
    ref = held_out("digits")
    ckpt = run / "checkpoints" / f"step_{args.step:06d}"

    train = load_dataset("digits", "train")
    floor = METRICS.get("fd_digits")(train[:args.n], ref)
    rows = []
    for what, model in (("fixed-decay EMA", load_model(ckpt)),
                        ("raw weights", load_model(ckpt, ema=False))):
        r = measure(model, "digits", args.sampler, args.nfe, args.n, reference=ref)
        rows.append({"weights": what, "sigma_rel": None, "fd": r["fd"], "fit_error": None})
        print(rows[-1], flush=True)
    for width in args.widths:
        path, info = write_reconstruction(run, width, args.step)
        r = measure(load_model(path), "digits", args.sampler, args.nfe, args.n, reference=ref)
        rows.append({"weights": f"post-hoc EMA {width:g}", "sigma_rel": width, "fd": r["fd"],
                     "fit_error": info["fit_error"], "gamma": info["gamma"]})
        print(rows[-1], flush=True)

    lines = [f"step {args.step}, {args.sampler} at {args.nfe} NFE, {args.n} samples against the "
             f"297 test digits; noise floor ({args.n} train digits) {floor:.2f}", "",
             "| weights | sigma_rel | gamma | profile fit error | FD |",
             "|---|---|---|---|---|"]
    for r in rows:
        sr = "" if r["sigma_rel"] is None else f"{r['sigma_rel']:g}"
        gamma = f"{r['gamma']:.2f}" if "gamma" in r else ""
        fit = "" if r["fit_error"] is None else f"{r['fit_error']:.1e}"
        lines.append(f"| {r['weights']} | {sr} | {gamma} | {fit} | {r['fd']:.3f} |")
    outputs.write_text(out / "posthoc_ema.md", "\n".join(lines) + "\n")
    outputs.write_text(out / "posthoc_ema.json", json.dumps({"floor": floor, "rows": rows},
                                                            indent=1))
    fig, ax = plt.subplots(figsize=(6, 4))
    post = [r for r in rows if r["sigma_rel"] is not None]
    ax.plot([r["sigma_rel"] for r in post], [r["fd"] for r in post], "o-",
            label="post-hoc EMA (reconstructed)")
    styles = {"fixed-decay EMA": "--", "raw weights": ":"}
    for r in rows[:2]:
        ax.axhline(r["fd"], linestyle=styles[r["weights"]], color="gray",
                   label=f"{r['weights']} ({r['fd']:.2f})")
    ax.axhline(floor, linestyle="-.", color="lightgray", label=f"noise floor ({floor:.2f})")
    ax.set_xlabel("EMA width sigma_rel")
    ax.set_ylabel(f"Frechet distance ({args.sampler}, {args.nfe} NFE)")
    ax.set_title(f"digits U-Net at step {args.step}: EMA width chosen after training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "posthoc_ema.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
