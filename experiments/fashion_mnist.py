"""Fashion-MNIST 28x28 end to end: the feature classifier, FD against NFE, a sample grid.

    scoregen train configs/fashion_mnist.yaml --time-limit 45m     # the model (runs/fashion)
    python experiments/fashion_mnist.py [--run runs/fashion]
        [--samplers ddim,dpm_solver++,unipc,heun]
        [--nfe 5,10,20] [--n 500]

Needs the Fashion-MNIST IDX files (``apt-get install dataset-fashion-mnist``, or ``data.root``;
docs/training.md). Trains (or loads from the cache) the Fashion classifier of ``fd_fashion``
and prints its test accuracy; the FD noise floor is ``--n`` train images against the first
2000 test images, the reference of every row. Each sampler runs at each NFE budget from seeds
``0..n-1`` on the run's EMA weights. Writes ``OUT/fashion.md``, ``fashion.json``,
``fd_vs_nfe.png`` and ``samples.png`` (64 samples, ``dpm_solver++`` at 20 NFE).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from scoregen.data import load_dataset
from scoregen.evaluation.fashion_classifier import accuracy, frechet_fashion, get_classifier
from scoregen.evaluation.image_stats import brightness, measure
from scoregen.infra import outputs
from scoregen.infra.plotting import save_figure, save_samples
from scoregen.sampling.api import sample
from scoregen.training.checkpoint import load_model, read_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/fashion")
    parser.add_argument("--samplers", default="ddim,dpm_solver++,unipc,heun")
    parser.add_argument("--nfe", default="5,10,20")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/fashion_eval")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    for name in ("samples.png", "fashion.md", "fashion.json", "fd_vs_nfe.png"):
        outputs.check_target(out / name, what="--out")

    start = time.perf_counter()
    net = get_classifier(progress=True)
    summary: dict[str, object] = {"classifier_test_accuracy": accuracy(net),
                                  "classifier_seconds": round(time.perf_counter() - start, 1)}
    ref = load_dataset("fashion_mnist", "test")[:2000]
    train = load_dataset("fashion_mnist", "train")
    summary["fd_floor"] = frechet_fashion(train[-args.n:], ref)
    summary["data_brightness"] = brightness(ref)
    print(summary, flush=True)

    ckpt = read_checkpoint(args.run)
    model = load_model(args.run)
    summary["run"] = {"checkpoint": str(ckpt.path), "step": ckpt.step}
    rows = []
    for sampler in args.samplers.split(","):
        for nfe in (int(v) for v in args.nfe.split(",")):
            r = measure(model, "fashion_mnist", sampler, nfe, args.n, reference=ref)
            r.pop("samples")
            rows.append({"sampler": sampler, "budget": nfe, **r})
            print(rows[-1], flush=True)
    summary["rows"] = rows
    res = sample(model, model.sde, (64, 1, 28, 28), "dpm_solver++", nfe=20, seed=0)
    save_samples(res.x, out / "samples.png", f"Fashion-MNIST, step {ckpt.step}: dpm_solver++, "
                 f"{res.nfe} NFE")

    budgets = sorted({r["budget"] for r in rows})
    lines = [f"Frechet distance on the Fashion classifier's features (test accuracy "
             f"{summary['classifier_test_accuracy']:.3f}), {args.n} samples against 2000 test "
             f"images; noise floor ({args.n} train images) {summary['fd_floor']:.2f}; "
             f"model {ckpt.path} (step {ckpt.step}, EMA)", "",
             "| sampler | " + " | ".join(f"{b} NFE" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        cells = []
        for b in budgets:
            r = next(r for r in rows if r["sampler"] == sampler and r["budget"] == b)
            cells.append(f"{r['fd']:.2f}" + ("" if r["nfe"] == b else f" ({r['nfe']})"))
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    outputs.write_text(out / "fashion.md", "\n".join(lines) + "\n")
    outputs.write_text(out / "fashion.json", json.dumps(summary, indent=1))
    fig, ax = plt.subplots(figsize=(6, 4))
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        pts = [(r["nfe"], r["fd"]) for r in rows if r["sampler"] == sampler]
        ax.plot(*zip(*pts, strict=True), "o-", label=sampler)
    ax.axhline(summary["fd_floor"], linestyle=":", color="gray", label="noise floor")
    ax.set_xscale("log")
    ax.set_xlabel("counted NFE")
    ax.set_ylabel("Frechet distance (Fashion classifier features)")
    ax.set_title(f"Fashion-MNIST U-Net, {ckpt.step} training steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "fd_vs_nfe.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
