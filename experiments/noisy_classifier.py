"""A noise-conditional digits classifier: accuracy against noise level, and guidance with it.

    python experiments/noisy_classifier.py [--classifier runs/digits_classifier]
        [--model runs/digits_phema] [--guidance 0,1,2,4] [--per-class 30] [--nfe 20]

The classifier is a run of ``scoregen train configs/digits_classifier.yaml``. Its accuracy on
the 297 held-out test digits noised to ``x_t`` (one noise draw per digit, seed 0) is reported
at 12 times spaced uniformly in log-SNR over ``[t_min, T]``; then the unconditional digits
model ``--model`` is guided by it (``scoregen sample MODEL --classifier CLF --class Y
--guidance w``) with ``--sampler`` at ``--nfe``, ``--per-class`` samples of each class, and
the samples are judged by the separate clean-data digits classifier of ``fd_digits``:
accuracy on the requested class (chance 0.1) and the Frechet distance to the test digits.
Writes ``OUT/noisy_classifier.md``, ``.json``, ``accuracy_vs_logsnr.png`` and
``guided_grid.png`` (rows: classes; one panel per scale).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from scoregen.data.digits import digits_with_labels
from scoregen.evaluation.digits_classifier import digits_quality, get_classifier
from scoregen.infra import outputs
from scoregen.infra.plotting import image_grid, save_figure
from scoregen.sampling.api import sample
from scoregen.sampling.grid import time_grid
from scoregen.training.checkpoint import load_classifier, load_model


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", default="runs/digits_classifier")
    parser.add_argument("--model", default="runs/digits_phema")
    parser.add_argument("--guidance", type=_floats, default=[0.0, 1.0, 2.0, 4.0])
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--sampler", default="dpm_solver++")
    parser.add_argument("--nfe", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/noisy_classifier")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    for name in ("noisy_classifier.md", "noisy_classifier.json", "accuracy_vs_logsnr.png",
                 "guided_grid.png"):
        outputs.check_target(out / name, what="--out")

    clf = load_classifier(args.classifier)
    sde = clf.sde
    x, y = digits_with_labels("test")
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    ts = time_grid(sde, 12, "logsnr", denoise=False).flip(0)
    acc_rows = []
    with torch.no_grad():
        for t in ts.tolist():
            x_t = sde.perturb(x, torch.tensor(t), eps)
            acc = float((clf(x_t, torch.full((len(x),), t)).argmax(1) == y).float().mean())
            lam = float(sde.log_snr(torch.tensor(t, dtype=torch.float64)))
            acc_rows.append({"t": t, "log_snr": lam, "accuracy": acc})
            print(acc_rows[-1], flush=True)

    model = load_model(args.model)
    labels = torch.arange(10).repeat_interleave(args.per_class)
    test, _ = digits_with_labels("test")
    judge = get_classifier()
    guided, panels = [], []
    for w in args.guidance:
        res = sample(model, model.sde, (len(labels), 1, 8, 8), args.sampler, nfe=args.nfe,
                     cond=labels, guidance=w, classifier=clf, seed=0)
        xs = res.x.clamp(-1, 1)
        with torch.no_grad():
            hit = float((judge(xs).argmax(1) == labels).float().mean())
        q = digits_quality(xs, test, judge)
        guided.append({"guidance": w, "accuracy": hit, "fd": q["fd"], "nfe": res.nfe})
        print(guided[-1], flush=True)
        panels.append(xs.reshape(10, args.per_class, 1, 8, 8)[:, :8].reshape(80, 1, 8, 8))

    lines = ["Accuracy of the noise-conditional classifier on the 297 noised test digits", "",
             "| t | log-SNR | accuracy |", "|---|---|---|"]
    lines += [f"| {r['t']:.3f} | {r['log_snr']:.2f} | {r['accuracy']:.3f} |" for r in acc_rows]
    lines += ["", f"Classifier guidance of the unconditional model ({args.sampler}, "
              f"{args.nfe} NFE, {args.per_class} samples per class): accuracy of the clean-data "
              "digits classifier on the requested class, Frechet distance to the test digits",
              "", "| w | accuracy | FD | NFE |", "|---|---|---|---|"]
    lines += [f"| {r['guidance']:g} | {r['accuracy']:.3f} | {r['fd']:.2f} | {r['nfe']} |"
              for r in guided]
    outputs.write_text(out / "noisy_classifier.md", "\n".join(lines) + "\n")
    outputs.write_text(out / "noisy_classifier.json", json.dumps({"accuracy": acc_rows,
                                                                  "guidance": guided}, indent=1))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["log_snr"] for r in acc_rows], [r["accuracy"] for r in acc_rows], "o-")
    ax.axhline(0.1, linestyle=":", color="gray", label="chance")
    ax.set_xlabel("log-SNR lambda(t) (noisier to the left)")
    ax.set_ylabel("test accuracy")
    ax.set_title("noise-conditional digits classifier")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "accuracy_vs_logsnr.png", dpi=120)
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
    for ax, panel, w in zip(list(axes) if len(panels) > 1 else [axes], panels, args.guidance,
                            strict=True):
        ax.imshow(image_grid(panel, ncol=8), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"w = {w:g}")
        ax.axis("off")
    fig.suptitle("classifier guidance, one row per class 0..9")
    fig.tight_layout()
    save_figure(fig, out / "guided_grid.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
