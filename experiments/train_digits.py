"""Train the 8x8-digits model of configs/digits.yaml and save a sample grid.

    python experiments/train_digits.py [--steps N] [--out runs/digits] [--threads 2]

Prints the wall time, the training throughput (examples/s) and the sample grid's path;
writes ``OUT/result.json`` and ``OUT/digits_grid.png`` (64 samples, DDIM, 100 steps).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from scoregen.infra import outputs
from scoregen.infra.plotting import save_samples
from scoregen.sampling.api import sample
from scoregen.training import build_trainer
from scoregen.training.checkpoint import load_model
from scoregen.training.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/digits.yaml")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--out", default="runs/digits")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--sample-steps", type=int, default=100)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    overrides = [f"train.out={args.out}", f"train.threads={args.threads}"]
    if args.steps:
        overrides.append(f"train.steps={args.steps}")
    cfg = load_config(args.config, overrides)
    trainer = build_trainer(cfg, progress=True, overwrite=True)
    start = time.perf_counter()
    result = trainer.fit()
    train_s = time.perf_counter() - start

    model = load_model(args.out)
    res = sample(model, model.sde, (64, 1, 8, 8), args.sampler, args.sample_steps, seed=0)
    grid = save_samples(res.x, Path(args.out) / "digits_grid.png",
                        f"digits: {args.sampler}, {res.nfe} NFE, {result.step} training steps")
    summary = {
        "steps": result.step,
        "batch_size": cfg.train.batch_size,
        "train_seconds": round(train_s, 1),
        "examples_per_s": round(result.examples_per_s, 1),
        "sampler": args.sampler,
        "nfe": res.nfe,
        "sample_seconds": round(res.seconds, 2),
        "threads": args.threads,
        "grid": str(grid),
    }
    outputs.write_text(Path(args.out) / "result.json", json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
