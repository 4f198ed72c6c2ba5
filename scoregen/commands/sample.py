"""Draw samples from a trained run or checkpoint (a PNG plot and an .npz of raw samples).

Uses the EMA weights unless ``--no-ema``; defaults come from the run's ``sample`` config
section. Under ``torchrun`` the samples are shared out: rank ``r`` draws the samples ``k``
with ``k mod world == r``, each from its own seed ``seed + k``, and rank 0 gathers them in
index order and writes the files, which are then byte for byte those of one process (for
samplers with a fixed grid). Examples::

    scoregen sample runs/toy2d --sampler ddim --steps 50 -n 512 --out toy.png
    torchrun --standalone --nproc_per_node=2 -m scoregen sample runs/ddp -n 10000 --out s.npz
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="run folder or checkpoint folder")
    parser.add_argument("--sampler", help="a name from `scoregen list samplers`")
    parser.add_argument("--steps", type=int, help="sampler steps")
    parser.add_argument("-n", type=int, help="number of samples")
    parser.add_argument("--out", help="output PNG or .npz (both are written, with one stem)")
    parser.add_argument("--seed", type=int, help="sample k uses seed + k")
    parser.add_argument("--spacing", help="time grid: auto (the SDE's tuned default), uniform, "
                                          "quadratic, logsnr, edm")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="sampler option, e.g. eta=1.0 (repeatable)")
    parser.add_argument("--sde", help="sample under another SDE (re-targeted by log-SNR)")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def save_npz(path: Path, **arrays: Any) -> None:
    """``numpy.savez`` with a fixed timestamp in the zip headers: equal arrays, equal bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                        buf.getvalue())


def run(args: argparse.Namespace) -> int:
    import torch

    from scoregen import distributed
    from scoregen import sde as sde_lib
    from scoregen.plotting import save_samples
    from scoregen.sampling import sample
    from scoregen.training.checkpoint import load_model, read_checkpoint
    from scoregen.training.config import SampleConfig, parse_config

    ctx = distributed.setup(args.device)
    device = ctx.device
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
    steps = args.steps or defaults.steps
    seed = defaults.seed if args.seed is None else args.seed
    if n < ctx.world:
        raise ValueError(f"-n {n} is fewer samples than the {ctx.world} processes; "
                         f"ask for at least {ctx.world}")
    index = distributed.shard(n)  # this rank's samples k (all of them for one process)
    shape = (len(index), *model.network.spec["shape"])
    res = sample(model.under(target), target, shape, sampler, steps,
                 spacing=args.spacing or defaults.spacing, seeds=seed + index, device=device,
                 progress=not args.no_progress and ctx.is_main, **opts)
    x = distributed.gather_ordered(res.x, n)
    nfe = int(distributed.all_reduce(torch.tensor(res.nfe), "max"))  # adaptive: per shard
    if not ctx.is_main:
        return 0
    run_dir = ckpt.path.parent.parent
    out = Path(args.out) if args.out else run_dir / "samples" / f"sample_{sampler}_{steps}.png"
    npz, out = out.with_suffix(".npz"), out.with_suffix(".png" if out.suffix == ".npz"
                                                        else out.suffix)
    title = f"{sampler}, {steps} steps, {nfe} NFE, step {ckpt.step}"
    save_samples(x, out, title)
    save_npz(npz, x=x.float().cpu().numpy(), nfe=nfe, ts=res.ts.numpy(), seed=seed,
             sampler=sampler)
    print(f"{n} samples ({nfe} NFE, {res.seconds:.2f} s) -> {out} and {npz}")
    return 0
