"""Draw samples from a trained run or checkpoint (a PNG plot and an .npz of raw samples).

Uses the EMA weights unless ``--no-ema``; defaults come from the run's ``sample`` config
section. Example::

    scoregen sample runs/toy2d --sampler ddim --steps 50 -n 512 --out toy.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

from scoregen.commands._model import add_model_argument, load_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", help="run folder or checkpoint folder")
    add_model_argument(parser)
    parser.add_argument("--sampler", help="a name from `scoregen list samplers`")
    parser.add_argument("--steps", type=int, help="sampler steps")
    parser.add_argument("-n", type=int, help="number of samples")
    parser.add_argument("--out", help="output PNG (an .npz with the same stem is written too)")
    parser.add_argument("--seed", type=int, help="sample k uses seed + k")
    parser.add_argument("--spacing", help="time grid: auto (the SDE's tuned default), uniform, "
                                          "quadratic, logsnr, edm")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="sampler option, e.g. eta=1.0 (repeatable)")
    parser.add_argument("--sde", help="sample under another SDE (re-targeted by log-SNR)")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from scoregen.plotting import save_samples
    from scoregen.sampling import sample
    from scoregen.training import resolve_device
    from scoregen.training.config import SampleConfig

    device = resolve_device(args.device)
    src = load_source(args.path, args.model, ema=not args.no_ema, device=device, sde=args.sde)
    defaults = src.sample or SampleConfig()
    if src.shape is None:
        raise ValueError(f"--model {args.model}: the model needs a `shape` attribute (the "
                         "event shape of one sample, e.g. (2,) or (1, 8, 8))")
    sampler = args.sampler or defaults.sampler
    opts = dict(defaults.options) if sampler == defaults.sampler else {}
    for item in args.opt:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--opt {item!r} must look like key=value, e.g. eta=1.0")
        opts[key.strip()] = yaml.safe_load(value)
    n = args.n or defaults.n
    steps = args.steps or defaults.steps
    seed = defaults.seed if args.seed is None else args.seed
    shape = (n, *src.shape)
    res = sample(src.model, src.sde, shape, sampler, steps,
                 spacing=args.spacing or defaults.spacing, seed=seed, device=device,
                 progress=not args.no_progress, **opts)
    run_dir = src.run_dir or Path(".")
    out = Path(args.out) if args.out else run_dir / "samples" / f"sample_{sampler}_{steps}.png"
    title = f"{sampler}, {steps} steps, {res.nfe} NFE" + (
        f", step {src.step}" if src.step is not None else "")
    save_samples(res.x, out, title)
    npz = out.with_suffix(".npz")
    np.savez(npz, x=res.x.float().cpu().numpy(), nfe=res.nfe, ts=res.ts.numpy(), seed=seed,
             sampler=sampler)
    print(f"{n} samples ({res.nfe} NFE, {res.seconds:.2f} s) -> {out} and {npz}")
    return 0
