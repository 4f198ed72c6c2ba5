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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="run folder or checkpoint folder")
    parser.add_argument("--sampler", help="a name from `scoregen list samplers`")
    parser.add_argument("--steps", type=int, help="sampler steps")
    parser.add_argument("--nfe", type=int, help="NFE budget instead of --steps: the step count "
                        "whose counted NFE is the largest <= NFE")
    parser.add_argument("-n", type=int, help="number of samples")
    parser.add_argument("--out", help="output PNG (an .npz with the same stem is written too)")
    parser.add_argument("--seed", type=int, help="sample k uses seed + k")
    parser.add_argument("--spacing", help="time grid: auto (the SDE's tuned default), uniform, "
                                          "quadratic, logsnr, edm, or tuned (the grid fitted by "
                                          "`scoregen tune-grid`, kept in the checkpoint folder)")
    parser.add_argument("--grids", help="tuned grids for --spacing tuned (default: the "
                                        "checkpoint folder)")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="sampler option, e.g. eta=1.0 (repeatable)")
    parser.add_argument("--sde", help="sample under another SDE (re-targeted by log-SNR)")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from scoregen import samplers
    from scoregen import sde as sde_lib
    from scoregen.nfe_budget import check_plannable
    from scoregen.plotting import save_samples
    from scoregen.sampling import sample
    from scoregen.training import resolve_device
    from scoregen.training.checkpoint import load_model, read_checkpoint
    from scoregen.training.config import SampleConfig, parse_config

    device = resolve_device(args.device)
    ckpt = read_checkpoint(args.path)
    run_cfg = ckpt.meta.get("run_config")
    defaults = parse_config(run_cfg).sample if run_cfg else SampleConfig()
    model = load_model(ckpt.path, ema=not args.no_ema, device=device)
    target = sde_lib.get(args.sde) if args.sde else model.sde
    sampler = args.sampler or defaults.sampler
    opts = dict(defaults.options) if sampler == defaults.sampler else {}
    for item in args.opt:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--opt {item!r} must look like key=value, e.g. eta=1.0")
        opts[key.strip()] = yaml.safe_load(value)
    n = args.n or defaults.n
    if args.nfe is not None and args.steps is not None:
        raise ValueError("give --steps or --nfe, not both")
    if samplers.meta(sampler)["nfe_per_step"] is None and (args.steps or args.nfe):
        check_plannable(sampler)  # a clear error: the solver picks its own steps
    steps = args.steps or defaults.steps
    seed = defaults.seed if args.seed is None else args.seed
    shape = (n, *model.network.spec["shape"])
    spacing = args.spacing or defaults.spacing
    grids = (args.grids or ckpt.path) if spacing == "tuned" else None
    res = sample(model.under(target), target, shape, sampler, steps, nfe=args.nfe,
                 spacing=spacing, grids=grids, seed=seed, device=device,
                 progress=not args.no_progress, **opts)
    steps = len(res.ts) - 1
    run_dir = ckpt.path.parent.parent
    out = Path(args.out) if args.out else run_dir / "samples" / f"sample_{sampler}_{steps}.png"
    title = f"{sampler}, {steps} steps, {res.nfe} NFE, step {ckpt.step}"
    save_samples(res.x, out, title)
    npz = out.with_suffix(".npz")
    np.savez(npz, x=res.x.float().cpu().numpy(), nfe=res.nfe, ts=res.ts.numpy(), seed=seed,
             sampler=sampler)
    print(f"{n} samples ({res.nfe} NFE, {res.seconds:.2f} s) -> {out} and {npz}")
    return 0
