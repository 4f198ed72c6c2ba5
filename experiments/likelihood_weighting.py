"""Where in log-SNR a digits model's variational bound comes from: eps error per band.

    python experiments/likelihood_weighting.py CKPT[:LABEL] ... [--bands 10] [--out runs/likelihood]

The bound of ``scoregen evaluate`` weights the eps error uniformly in log-SNR
(``L_diff = int |eps - eps_hat|^2 d lambda``, Kingma et al. 2021; docs/metrics.md), while
``sigma2`` training weights it uniformly in ``t``, which puts 1 % of its draws on the least
noisy quarter of the log-SNR range. For each checkpoint (EMA weights) this computes the mean
per-dimension ``|eps - eps_hat|^2`` of the 297 held-out test digits (dequantized uniformly,
as the bound does; the same noise for every checkpoint) at the midpoints of ``--bands``
equal log-SNR bands over ``[lambda(T), lambda(t_min)]``, and each band's share of
``L_diff`` in bits/dim, ``width * error / ln 2``. Writes ``OUT/eps_error_by_logsnr.md``,
``.json`` and ``.png`` (``_grid`` with ``--no-dequantize``: the digits on their 17-level grid,
as the model was trained).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from scoregen.data.digits import digits_with_labels
from scoregen.infra import outputs
from scoregen.infra.plotting import save_figure
from scoregen.models.prediction import predict_pair
from scoregen.training.checkpoint import load_model, read_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="CKPT[:LABEL]")
    parser.add_argument("--bands", type=int, default=10)
    parser.add_argument("--no-dequantize", action="store_true",
                        help="use the test digits on their 17-level grid, as in training")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/likelihood")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    name = "eps_error_by_logsnr" + ("_grid" if args.no_dequantize else "")
    for suffix in (".md", ".json", ".png"):
        outputs.check_target(out / f"{name}{suffix}", what="--out")

    x, _ = digits_with_labels("test")
    g = torch.Generator().manual_seed(0)
    u = torch.rand(x.shape, generator=g) - 0.5
    if not args.no_dequantize:
        x = x + u * (2 / 16)  # 17 levels: spacing 2/16
    eps = torch.randn(x.shape, generator=g)
    rows = []
    for spec in args.checkpoints:
        path, _, label = spec.partition(":")
        model = load_model(path)
        sde = model.sde
        ends = sde.log_snr(torch.tensor([sde.T, sde.t_min], dtype=torch.float64))
        edges = torch.linspace(float(ends[0]), float(ends[1]), args.bands + 1, dtype=torch.float64)
        width = float(edges[1] - edges[0])
        errors = []
        for lam in (0.5 * (edges[1:] + edges[:-1])).tolist():
            t = sde.t_from_log_snr(torch.tensor(lam, dtype=torch.float64)).float()
            x_t = sde.perturb(x, t, eps)
            with torch.no_grad():
                eps_hat = predict_pair(model, x_t, t.expand(len(x))).eps
            errors.append(float((eps_hat - eps).pow(2).mean()))
        share = [width * e / math.log(2) for e in errors]
        rows.append({"checkpoint": path, "label": label or path, "step": read_checkpoint(path).step,
                     "lambda": (0.5 * (edges[1:] + edges[:-1])).tolist(), "eps_mse": errors,
                     "bits_per_dim": share, "total_bits_per_dim": sum(share)})
        print(rows[-1]["label"], [f"{e:.4f}" for e in errors], f"{sum(share):.3f}", flush=True)

    lam = rows[0]["lambda"]
    lines = ["Mean per-dimension |eps - eps_hat|^2 of the 297 dequantized test digits at the "
             "midpoint of each log-SNR band (its share of L_diff in bits/dim in parentheses)", "",
             "| log-SNR | " + " | ".join(r["label"] for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for i, lv in enumerate(lam):
        lines.append(f"| {lv:.2f} | " + " | ".join(
            f"{r['eps_mse'][i]:.4f} ({r['bits_per_dim'][i]:.3f})" for r in rows) + " |")
    lines.append("| sum (bits/dim) | " + " | ".join(f"{r['total_bits_per_dim']:.3f}"
                                                    for r in rows) + " |")
    if args.no_dequantize:
        lines[0] = lines[0].replace("dequantized test digits", "test digits on the 17-level grid")
    outputs.write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    outputs.write_text(out / f"{name}.json", json.dumps(rows, indent=1))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        ax.plot(r["lambda"], r["eps_mse"], "o-", label=r["label"])
    ax.set_yscale("log")
    ax.set_xlabel("log-SNR lambda (less noise to the right)")
    ax.set_ylabel("mean |eps - eps_hat|^2 per dimension")
    ax.set_title("digits: eps error by noise level (the bound weights it uniformly)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / f"{name}.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
