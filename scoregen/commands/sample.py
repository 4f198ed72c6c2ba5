"""Draw samples from a trained run or checkpoint (a PNG plot and an .npz of raw samples).

Uses the EMA weights unless ``--no-ema``; defaults come from the run's ``sample`` config
section. Image samples are clipped to the data range ``[-1, 1]`` (the PNG always; the
``.npz`` unless ``--no-clip``, and it records ``clipped`` and the fraction of values that
fell outside). Non-finite samples are an error (exit 1). Example::

    scoregen sample runs/toy2d --sampler ddim --steps 50 -n 512 --out toy.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="run folder or checkpoint folder")
    parser.add_argument("--sampler", help="a name from `scoregen list samplers`")
    parser.add_argument("--steps", type=positive_int,
                        help="sampler steps (not for adaptive samplers: they pick their own)")
    parser.add_argument("-n", type=positive_int, help="number of samples")
    parser.add_argument("--out", help="output PNG (an .npz with the same stem is written too)")
    parser.add_argument("--seed", type=int, help="sample k uses seed + k")
    parser.add_argument("--spacing", help="time grid: auto (the SDE's tuned default), uniform, "
                                          "quadratic, logsnr, edm")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="sampler option, e.g. eta=1.0 (repeatable)")
    parser.add_argument("--sde", help="sample under another SDE (re-targeted by log-SNR)")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights")
    parser.add_argument("--no-clip", action="store_true",
                        help="keep raw image values in the .npz (the PNG is always clipped)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def sampler_options(sampler: str, items: list[str], where: str = "--opt ") -> dict:
    """``key=value`` items as the sampler's options, each checked against its default."""
    import inspect

    from scoregen.samplers import get
    from scoregen.training.config import check_option

    params = inspect.signature(get(sampler)).parameters
    opts = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--opt {item!r} must look like key=value, e.g. eta=1.0")
        if key in params and params[key].kind is params[key].KEYWORD_ONLY:
            opts[key] = check_option(f"{where}{key}", yaml.safe_load(value), params[key].default)
        else:
            opts[key] = yaml.safe_load(value)  # scoregen.sample names the known options
    return opts


def run(args: argparse.Namespace) -> int:
    from scoregen import sde as sde_lib
    from scoregen.plotting import clip_to_range, save_samples
    from scoregen.samplers import SAMPLERS
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
    adaptive = SAMPLERS.meta(sampler).get("nfe_per_step") is None
    if adaptive and args.steps is not None:
        print(f"note: --steps does not apply to the adaptive sampler {sampler}: it chooses its "
              "own steps (set its tolerances with --opt, e.g. --opt rtol=1e-4)", file=sys.stderr)
    opts = dict(defaults.options) if sampler == defaults.sampler else {}
    opts.update(sampler_options(sampler, args.opt))
    n = defaults.n if args.n is None else args.n
    steps = defaults.steps if args.steps is None else args.steps
    seed = defaults.seed if args.seed is None else args.seed
    shape = (n, *model.data_shape)
    res = sample(model.under(target), target, shape, sampler, steps,
                 spacing=args.spacing or defaults.spacing, seed=seed, device=device,
                 progress=not args.no_progress, **opts)
    x = res.x.float().cpu()
    images = x.ndim == 4
    clipped, outside = (clip_to_range(x) if images else (x, 0.0))
    run_dir = ckpt.path.parent.parent
    name = f"sample_{sampler}" if adaptive else f"sample_{sampler}_{steps}"
    out = Path(args.out) if args.out else run_dir / "samples" / f"{name}.png"
    title = (f"{sampler}, {res.nfe} NFE" if adaptive else
             f"{sampler}, {steps} steps, {res.nfe} NFE") + f", step {ckpt.step}"
    save_samples(clipped, out, title)
    keep_raw = args.no_clip or not images
    npz = out.with_suffix(".npz")
    np.savez(npz, x=(x if keep_raw else clipped).numpy(), nfe=res.nfe, ts=res.ts.numpy(),
             seed=seed, sampler=sampler, clipped=not keep_raw, out_of_range=outside)
    print(f"{n} samples ({res.nfe} NFE, {res.seconds:.2f} s) -> {out} and {npz}")
    if images:
        what = "kept raw in the .npz" if args.no_clip else "clipped (--no-clip keeps raw values)"
        print(f"{100 * outside:.2f}% of values fell outside the data range [-1, 1]; {what}")
    return 0
