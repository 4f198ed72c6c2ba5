"""Train the class-conditional 8x8-digits model (configs/digits_cond.yaml) and measure it.

    python experiments/train_digits_cond.py [--steps N] [--out runs/digits_cond] [--threads 2]
    python experiments/train_digits_cond.py --skip-train --out runs/digits_cond   # measure only

For every guidance scale ``w`` in ``--guidance`` (default 0, 1, 2, 4) and NFE in ``--nfe``
(default 10, 20) it draws ``--per-class`` samples of every class with ``--sampler`` (default
dpm_solver++) from the EMA weights and reports: the digits classifier's accuracy on the
requested class (``acc``; chance is 0.1), its mean confidence, and the Frechet distance on
its features to the 297 held-out test digits (``fd``). Writes ``OUT/cond_result.json``,
``OUT/cond_table.md`` and ``OUT/cond_grid.png`` (one row per class; one panel per scale and
NFE).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from scoregen.data import load_dataset
from scoregen.evaluation.digits_classifier import digits_quality, get_classifier
from scoregen.infra import outputs
from scoregen.infra.plotting import image_grid, save_figure
from scoregen.sampling.api import sample
from scoregen.training import build_trainer
from scoregen.training.checkpoint import load_model, read_checkpoint
from scoregen.training.config import load_config


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/digits_cond.yaml")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--out", default="runs/digits_cond")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-train", action="store_true", help="measure the run's latest "
                        "checkpoint without training")
    parser.add_argument("--sampler", default="dpm_solver++")
    parser.add_argument("--guidance", type=_floats, default=[0.0, 1.0, 2.0, 4.0])
    parser.add_argument("--nfe", type=_floats, default=[10, 20])
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    summary: dict[str, object] = {}
    if not args.skip_train:
        overrides = [f"train.out={args.out}", f"train.threads={args.threads}"]
        if args.steps:
            overrides.append(f"train.steps={args.steps}")
        trainer = build_trainer(load_config(args.config, overrides), progress=True)
        start = time.perf_counter()
        result = trainer.fit()
        summary.update(train_seconds=round(time.perf_counter() - start, 1),
                       examples_per_s=round(result.examples_per_s, 1))
    model = load_model(out)
    step = read_checkpoint(out).step
    classes = model.num_classes
    if classes is None:
        raise SystemExit(f"{out} holds an unconditional model; train configs/digits_cond.yaml")
    labels = torch.arange(classes).repeat_interleave(args.per_class)
    test = load_dataset("digits", "test")
    classifier = get_classifier()
    rows, panels = [], {}
    for nfe in args.nfe:
        for w in args.guidance:
            res = sample(model, model.sde, (len(labels), 1, 8, 8), args.sampler, int(nfe),
                         seed=0, cond=labels, guidance=w, progress=True)
            with torch.no_grad():
                pred = classifier(res.x.clamp(-1, 1)).argmax(1)
            q = digits_quality(res.x.clamp(-1, 1), test, classifier)
            rows.append({"guidance": w, "nfe": res.nfe, "acc": float((pred == labels).float()
                         .mean()), "confidence": q["confidence"], "fd": q["fd"],
                         "seconds": round(res.seconds, 2)})
            print(rows[-1])
            pick = torch.cat([res.x[labels == c][:6] for c in range(classes)])
            panels[(nfe, w)] = image_grid(pick, ncol=6)
    fig, axes = plt.subplots(len(args.nfe), len(args.guidance),
                             figsize=(2.2 * len(args.guidance), 3.6 * len(args.nfe)),
                             squeeze=False)
    for i, nfe in enumerate(args.nfe):
        for j, w in enumerate(args.guidance):
            axes[i, j].imshow(panels[(nfe, w)], cmap="gray", vmin=0, vmax=1,
                              interpolation="nearest")
            axes[i, j].set_title(f"w={w:g}, {int(nfe)} NFE", fontsize=9)
            axes[i, j].axis("off")
    fig.suptitle(f"digits_cond ({args.sampler}, step {step}): one row per class 0-9",
                 fontsize=10)
    fig.tight_layout()
    grid = out / "cond_grid.png"
    save_figure(fig, grid, dpi=100)
    table = ["| guidance w | NFE | accuracy on requested class | confidence | fd_digits |",
             "|---|---|---|---|---|"]
    table += [f"| {r['guidance']:g} | {r['nfe']} | {r['acc']:.3f} | {r['confidence']:.3f} | "
              f"{r['fd']:.2f} |" for r in rows]
    outputs.write_text(out / "cond_table.md", "\n".join(table) + "\n")
    summary.update(step=step, sampler=args.sampler, per_class=args.per_class, rows=rows,
                   grid=str(grid), threads=args.threads)
    outputs.write_text(out / "cond_result.json", json.dumps(summary, indent=1))
    print("\n".join(table))
    print(f"grid -> {grid}")


if __name__ == "__main__":
    main()
