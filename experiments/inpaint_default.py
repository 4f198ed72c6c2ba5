"""The default inpainting of every sampler against replacement, judged by the exact conditional.

    python experiments/inpaint_default.py [--n 500] [--points 2] [--steps 50] \\
        [--out runs/inpaint_default]

mix64 under VP with the second half of the coordinates unknown (``inpaint:right-half``),
``--points`` known halves drawn from the mixture; every registered sampler fills in ``--n``
samples per point with ``scoregen.inpaint`` (fixed-step samplers at ``--steps`` steps,
self-stepping ones at their default tolerances) under two known-value noises: ``fresh``
(the replacement method of Song et al. 2021, now the default) and ``auto`` (the former default:
one draw per sample, ``fixed``, for deterministic samplers; the same run as ``fresh`` for
stochastic ones, so it is shown once). Each is judged against the exact conditional
(:meth:`GaussianMixture.condition`): sliced W2 on the unknown half, NLL gap (nats) and the
error of the posterior component weights, means over the points; the exact row is the noise
floor. Writes ``OUT/table.md``, ``OUT/results.json`` and ``OUT/nll_gap.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

from scoregen import samplers
from scoregen import sde as sde_lib
from scoregen.evaluation import metrics
from scoregen.infra import outputs
from scoregen.infra.plotting import save_figure
from scoregen.models import analytic
from scoregen.sampling.inpaint import inpaint, region_mask

MODES = ("fresh", "auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--points", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", default="runs/inpaint_default")
    args = parser.parse_args()
    out = Path(args.out)
    for name in ("table.md", "results.json", "nll_gap.png"):
        outputs.check_target(out / name, what="--out")
    mix, sde = analytic.preset("mix64"), sde_lib.get("vp")
    known = ~region_mask("right-half", mix.shape)
    g = torch.Generator().manual_seed(0)
    points = mix.sample(args.points, g)
    conds = [mix.condition(p, known) for p in points]
    exact = [(c.sample(args.n, g), c.sample(args.n, g)) for c in conds]
    entropy = [c.entropy(100_000, g) for c in conds]

    def score(sets: list[torch.Tensor]) -> dict[str, float]:
        k = len(sets)
        return {"swd": sum(metrics.sliced_wasserstein(u, e[0]) for u, e
                           in zip(sets, exact, strict=True)) / k,
                "nll_gap": sum(metrics.nll_gap(u, c, entropy=h) for u, c, h
                               in zip(sets, conds, entropy, strict=True)) / k,
                "weight_tv": sum(metrics.mode_weight_error(u, c) for u, c
                                 in zip(sets, conds, strict=True)) / k}

    rows = [{"sampler": "exact samples (noise floor)", "mode": "", "nfe": 0, "seconds": 0.0,
             **score([b for _, b in exact])}]
    jobs = [(name, mode) for name in samplers.applicable(sde) for mode in MODES]
    for name, mode in tqdm(jobs, desc="inpaint"):
        if mode == "auto" and samplers.meta(name)["stochastic"]:
            continue  # auto is fresh for stochastic samplers: the same run
        adaptive = samplers.meta(name)["nfe_per_step"] is None
        grid = {"steps": None, "ts": torch.tensor([sde.T, sde.t_min, 0.0], dtype=torch.float64)
                } if adaptive else {"steps": args.steps}
        start, filled, nfe = time.perf_counter(), [], 0
        for i, p in enumerate(points):
            res = inpaint(mix.model(sde), sde, p.expand(args.n, -1), known, name,
                          known_noise=mode, seed=1000 * i, **grid)
            filled.append(res.x[:, ~known])
            nfe = res.nfe
        rows.append({"sampler": name, "mode": mode, "nfe": nfe,
                     "seconds": time.perf_counter() - start, **score(filled)})
        tqdm.write(str(rows[-1]))
    lines = ["| sampler | known noise | NFE | swd | nll_gap (nats) | weight_tv | seconds |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['sampler']} | {r['mode']} | {r['nfe']} | {r['swd']:.4f} | "
              f"{r['nll_gap']:.3f} | {r['weight_tv']:.3f} | {r['seconds']:.3g} |" for r in rows]
    outputs.write_text(out / "table.md", "\n".join(lines) + "\n")
    outputs.write_text(out / "results.json", json.dumps(rows, indent=1))
    names = samplers.applicable(sde)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for j, mode in enumerate(MODES):
        vals = [next((r["nll_gap"] for r in rows if r["sampler"] == n and r["mode"] == mode),
                     next(r["nll_gap"] for r in rows if r["sampler"] == n)) for n in names]
        ax.bar([i + 0.4 * j for i in range(len(names))], [abs(v) for v in vals], 0.4,
               label={"fresh": "fresh (default: replacement)",
                      "auto": "auto (former default)"}[mode])
    ax.axhline(abs(rows[0]["nll_gap"]), color="0.4", ls=":", label="exact samples")
    ax.set_xticks([i + 0.2 for i in range(len(names))], names, rotation=60, ha="right",
                  fontsize=7)
    ax.set(yscale="log", ylabel="|NLL gap| (nats)",
           title="mix64, second half unknown: inpainting by sampler")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "nll_gap.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
