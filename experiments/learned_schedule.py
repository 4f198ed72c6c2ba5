"""The learned VDM schedule against the fixed VP schedule on the 8x8 digits: bound, variance.

    python experiments/learned_schedule.py --vdm runs/digits_vdm --vp runs/digits [--out DIR]

For each trained model (EMA weights) on the 297 held-out test digits (17 grey levels, uniform
dequantization, so the bits/dim include the ``-log2(1/8) = 3`` of the change of variables):

- the variational bound of its SDE in bits/dim (:func:`scoregen.evaluation.bound.variational_bound`,
  16 stratified log-SNR draws per example, antithetic pairs: the number ``scoregen evaluate
  --metrics bound`` reports);
- the continuous-time VDM loss estimate under the model's own schedule
  (:class:`scoregen.training.objectives.vdm.VDMLoss`, ``t`` uniform on ``[t_min, T]``): its mean
  (the same bound) and its variance over draws of ``(t, eps)``, in (bits/dim)^2, per example
  (one ``t`` per estimate, i.i.d.) and for the mean of a batch of 128 with the low-discrepancy
  times of training; the schedule's shape changes only this variance (VDM, sec. 5.2).

Writes ``OUT/learned_schedule.md``, ``OUT/learned_schedule.json`` and ``OUT/schedules.png``
(``gamma(t)`` of both schedules, the log noise-to-signal ratio).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from scoregen.data import load_dataset
from scoregen.evaluation.bound import variational_bound
from scoregen.evaluation.dequantize import Quantization, uniform_from_normal
from scoregen.infra import outputs
from scoregen.sampling.noise import NoiseSource
from scoregen.training.checkpoint import load_model
from scoregen.training.objectives import random_batch
from scoregen.training.objectives.vdm import VDMLoss

LEVELS = 17
BATCH = 128


def bits(nats_per_dim: float) -> float:
    """Bits/dim of the 17-level data from nats/dim of the dequantized density on [-1, 1]."""
    return (nats_per_dim - math.log(2 / (LEVELS - 1))) / math.log(2)


def loss_draws(model, x: torch.Tensor, repeats: int, t_sampling: str) -> torch.Tensor:
    """``(repeats, B)`` per-example VDM loss estimates in nats/dim, one draw of ``(t, eps)``
    each (repeat ``r`` is training step ``r`` of seed 1: its eps, uniforms and offset)."""
    objective = VDMLoss(model.sde, t_sampling=t_sampling, variance=False)
    out = []
    with torch.no_grad():
        for r in range(repeats):
            batch = random_batch(x, seed=1, step=r, sde=model.sde)
            out.append(objective.per_example(model, batch))
    return torch.stack(out)


def study(path: str, x: torch.Tensor, repeats: int) -> dict:
    model = load_model(path).double()
    n = len(x)
    seeds = torch.arange(n)
    bound = variational_bound(model, model.sde, x, n_times=16, seeds=seeds)
    d = x[0].numel()
    iid = loss_draws(model, x, repeats, "uniform")  # (R, n)
    batches = loss_draws(model, x[:BATCH], repeats, "low_discrepancy").mean(1)  # (R,)
    per_example_var = float(iid.var(0).mean()) / math.log(2) ** 2
    return {
        "sde": model.sde.config(),
        "bound_bpd": bits(float(bound.nll.mean()) / d),
        "bound_se_bpd": float(bound.nll.std() / math.sqrt(n)) / d / math.log(2),
        "vdm_loss_bpd": bits(float(iid.mean())),
        "per_example_var_bpd2": per_example_var,
        "batch_mean_var_bpd2": float(batches.var()) / math.log(2) ** 2,
        "gamma": schedule(model.sde),
    }


def schedule(sde) -> dict[str, list[float]]:
    """``gamma(t) = log(sigma^2 / alpha^2) = -2 lambda(t)`` on 101 times of ``[t_min, T]``."""
    t = torch.linspace(sde.t_min, sde.T, 101, dtype=torch.float64)
    return {"t": t.tolist(), "gamma": (-2 * sde.log_snr(t)).detach().tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vdm", default="runs/digits_vdm")
    parser.add_argument("--vp", default="runs/digits")
    parser.add_argument("--repeats", type=int, default=64, help="draws of (t, eps) per example")
    parser.add_argument("--out", default="runs/learned_schedule")
    args = parser.parse_args()
    out = Path(args.out)
    for name in ("learned_schedule.json", "learned_schedule.md", "schedules.png"):
        outputs.check_target(out / name, what="--out")
    torch.manual_seed(0)
    test = load_dataset("digits", "test").to(torch.float64)
    quant = Quantization(LEVELS)
    u = uniform_from_normal(NoiseSource(torch.arange(len(test)), tuple(test.shape[1:]),
                                        torch.float64).draw(0))
    x = quant.dequantize(test, u)
    rows = {"learned (vdm)": study(args.vdm, x, args.repeats),
            "fixed (vp)": study(args.vp, x, args.repeats)}
    outputs.write_text(out / "learned_schedule.json", json.dumps(rows, indent=1))
    lines = ["| schedule | bound (bits/dim) | VDM loss, t uniform (bits/dim) | variance per "
             "example | variance of a batch mean (128, low-discrepancy t) | gamma(t_min) | "
             "gamma(T) |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        g = r["gamma"]["gamma"]
        lines.append(f"| {name} | {r['bound_bpd']:.3f} ± {r['bound_se_bpd']:.3f} | "
                     f"{r['vdm_loss_bpd']:.3f} | {r['per_example_var_bpd2']:.4g} | "
                     f"{r['batch_mean_var_bpd2']:.4g} | {g[0]:.2f} | {g[-1]:.2f} |")
    text = "\n".join(lines) + "\n"
    outputs.write_text(out / "learned_schedule.md", text)
    print(text)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in rows.items():
        ax.plot(r["gamma"]["t"], r["gamma"]["gamma"], label=name)
    ax.set_xlabel("t")
    ax.set_ylabel("gamma(t) = log(sigma^2 / alpha^2)")
    ax.set_title("noise schedules of the digits models")
    ax.legend()
    with outputs.replacing(out / "schedules.png", what="--out") as (tmp,):
        fig.savefig(tmp, dpi=120, bbox_inches="tight")  # save_figure has no bbox_inches
    plt.close(fig)
    print(f"wrote {out / 'learned_schedule.md'} and {out / 'schedules.png'}")


if __name__ == "__main__":
    main()
