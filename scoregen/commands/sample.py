"""Draw samples from a trained run or checkpoint (a PNG plot and an .npz of raw samples).

Uses the EMA weights unless ``--no-ema``; defaults come from the run's ``sample`` config
section. Image samples are clipped to the data range ``[-1, 1]`` (the PNG always; the
``.npz`` unless ``--no-clip``, and it records ``clipped`` and the fraction of values that
fell outside). Non-finite samples are an error (exit 1). Under ``torchrun`` the samples are
shared out: rank ``r`` draws the samples ``k`` with ``k mod world == r``, each from its own
seed ``seed + k``, and rank 0 gathers them in index order and writes the files, which are
then byte for byte those of one process (for samplers with a fixed grid). Examples::

    scoregen sample runs/toy2d --sampler ddim --steps 50 -n 512 --out toy.png
    torchrun --standalone --nproc_per_node=2 -m scoregen sample runs/ddp -n 10000 --out s.npz
    scoregen sample runs/digits_cond --class all --guidance 2 --sampler dpm_solver++ \
        --steps 10 --out grid.png              # one row per class
    scoregen sample runs/digits --inpaint data.npz --mask right-half --out filled.png

``--class``: ``all`` (one grid row per class, ``-n`` per class), one label, or a
comma-separated list (one row each); ``--guidance w``: 0 unconditional, 1 conditional (the
default), > 1 classifier-free guided (docs/conditioning.md). ``--inpaint FILE``: ``.npz``
with the known samples under ``x``; ``--mask`` names the region to fill (right-half,
left-half, top-half, bottom-half, center); the PNG shows the inputs (filled region grey)
above the results.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from scoregen.commands._args import positive_int
from scoregen.commands._model import add_model_argument, load_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", help="run folder or checkpoint folder")
    add_model_argument(parser)
    parser.add_argument("--sampler", help="a name from `scoregen list samplers`, or auto (the "
                        "sampler measured best for the budget and guidance; the default with "
                        "--nfe)")
    parser.add_argument("--steps", type=positive_int,
                        help="sampler steps (not for adaptive samplers: they pick their own)")
    parser.add_argument("--nfe", type=positive_int, help="NFE budget instead of --steps: the "
                        "step count whose counted NFE is the largest <= NFE")
    parser.add_argument("-n", type=positive_int, help="number of samples")
    parser.add_argument("--out", help="output PNG or .npz (both are written, with one stem)")
    parser.add_argument("--seed", type=int, help="sample k uses seed + k")
    parser.add_argument("--spacing", help="time grid: auto (the run's grid fitted by `scoregen "
                        "tune-grid` for this sampler, guidance and budget if there is one, else "
                        "the SDE's default), uniform, quadratic, logsnr, edm, data, or tuned "
                        "(the fitted grid, an error if there is none)")
    parser.add_argument("--grids", help="tuned grids for --spacing tuned (default: the "
                                        "checkpoint folder)")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="sampler option, e.g. eta=1.0 (repeatable)")
    parser.add_argument("--sde", metavar="NAME[:KEY=VALUE,...]", help="sample under another "
                        "SDE (re-targeted by log-SNR), e.g. ve:sigma_min=0.002,sigma_max=80")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights")
    parser.add_argument("--no-clip", action="store_true",
                        help="keep raw image values in the .npz (the PNG is always clipped)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cond = parser.add_argument_group("conditioning")
    cond.add_argument("--class", dest="classes", metavar="all|Y|Y1,Y2,...",
                      help="class labels of a class-conditional model")
    cond.add_argument("--guidance", type=float, help="guidance scale w (0 unconditional, "
                      "1 conditional, >1 guided; needs --class)")
    cond.add_argument("--guidance-interval", metavar="T_LO,T_HI",
                      help="apply the guidance scale only for t in [T_LO, T_HI]")
    cond.add_argument("--threshold", type=float, metavar="P",
                      help="dynamic thresholding of x0_hat at quantile P (e.g. 0.995)")
    cond.add_argument("--inpaint", metavar="FILE.npz", help="known samples to complete")
    cond.add_argument("--mask", default="right-half", help="region to fill with --inpaint "
                      "(right-half, left-half, top-half, bottom-half, center)")
    cond.add_argument("--resample", type=int, default=1,
                      help="RePaint resampling per step with --inpaint (default 1: plain "
                           "replacement)")


def class_labels(spec: str, num_classes: int | None, n: int, path: str) -> tuple[Any, int]:
    """``(labels (n',), images per row)`` for ``--class`` (``all``, ``Y`` or ``Y1,Y2,...``)."""
    import torch

    if num_classes is None:
        raise ValueError(f"--class: the model at {path} has no classes (it was trained "
                         "without model.num_classes); sample it without --class")
    if spec == "all":
        wanted = list(range(num_classes))
    else:
        try:
            wanted = [int(v) for v in spec.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--class must be all, a label or labels separated by commas, "
                             f"got {spec!r}") from None
    for y in wanted:
        if not 0 <= y < num_classes:
            raise ValueError(f"--class: label {y} is outside [0, {num_classes}) for this model")
    if len(wanted) == 1:
        return torch.full((n,), wanted[0], dtype=torch.long), 0
    per = max(1, n // len(wanted))
    return torch.tensor(wanted).repeat_interleave(per), per


def load_known(path: str, shape: tuple[int, ...], n: int) -> Any:
    """The first ``n`` samples of an .npz (key ``x``, ``images`` or its only array) as a
    float tensor ``(n', *shape)`` in ``[-1, 1]`` (uint8 images are rescaled)."""
    import torch

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--inpaint: {file} does not exist")
    with np.load(file, allow_pickle=False) as data:
        keys = list(data.keys())
        key = next((k for k in ("x", "images") if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            raise ValueError(f"--inpaint: {file} holds {keys}; store the samples under 'x'")
        arr = data[key][:n]
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0 * 2 - 1
    x = torch.as_tensor(np.asarray(arr, dtype=np.float64))
    if x.shape[1:] != shape and x.ndim == len(shape) and (1, *x.shape[1:]) == shape:
        x = x[:, None]  # (N, H, W) grey images
    if x.shape[1:] != shape:
        raise ValueError(f"--inpaint: samples in {file} have shape {tuple(x.shape[1:])} but "
                         f"the model makes {shape}")
    if x.abs().max() > 1 + 1e-6:
        raise ValueError(f"--inpaint: values in {file} leave [-1, 1]; store data in [-1, 1]")
    return x.to(torch.float32)


def sampler_options(sampler: str, items: list[str], where: str = "--opt ") -> dict:
    """``key=value`` items as the sampler's options, each checked against its default."""
    import inspect

    from scoregen.samplers import get
    from scoregen.sampling.api import check_options
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
            opts[key] = yaml.safe_load(value)
    check_options(sampler, get(sampler), opts)  # unknown keys: one error naming the known ones
    return opts


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

    from scoregen.infra import distributed
    from scoregen.infra.plotting import clip_to_range, save_samples
    from scoregen.samplers import SAMPLERS
    from scoregen.sampling.api import sample
    from scoregen.sampling.nfe_budget import check_plannable
    from scoregen.sampling.recommend import AUTO, resolve
    from scoregen.training.config import SampleConfig

    ctx = distributed.setup(args.device)
    device = ctx.device
    src = load_source(args.path, args.model, ema=not args.no_ema, device=device, sde=args.sde)
    defaults = src.sample or SampleConfig()
    if src.shape is None:
        raise ValueError(f"--model {args.model}: the model needs a `shape` attribute (the "
                         "event shape of one sample, e.g. (2,) or (1, 8, 8))")
    if args.nfe is not None and args.steps is not None:
        raise ValueError("give --steps or --nfe, not both")
    steps = defaults.steps if args.steps is None else args.steps
    # an NFE budget without --sampler asks for the sampler measured best at that budget
    sampler = args.sampler or (AUTO if args.nfe is not None else defaults.sampler)
    opts = dict(defaults.options) if sampler == defaults.sampler else {}
    if sampler == AUTO:
        scale = args.guidance if args.guidance is not None else (
            1.0 if args.classes is not None else None)
        sampler, opts = resolve(AUTO, opts, args.nfe, steps, scale)
    adaptive = SAMPLERS.meta(sampler).get("nfe_per_step") is None
    if adaptive and args.steps is not None:
        print(f"note: --steps does not apply to the adaptive sampler {sampler}: it chooses its "
              "own steps (set its tolerances with --opt, e.g. --opt rtol=1e-4)", file=sys.stderr)
    opts.update(sampler_options(sampler, args.opt))
    n = defaults.n if args.n is None else args.n
    if adaptive and args.nfe is not None:
        check_plannable(sampler)  # a clear error: the solver picks its own steps
    seed = defaults.seed if args.seed is None else args.seed
    spacing = args.spacing or defaults.spacing
    grids = None
    if spacing in ("tuned", "auto"):  # auto: the run's tuned grid where one fits, else the SDE's
        from scoregen.training.checkpoint import find_checkpoint

        grids = args.grids or (find_checkpoint(args.path) if args.path else None)
    event = tuple(src.shape)
    labels, per_row = None, 0
    if args.classes is not None:
        labels, per_row = class_labels(args.classes, getattr(src.model, "num_classes", None), n,
                                       src.name)
        n = len(labels)
    elif args.guidance is not None:
        raise ValueError("--guidance needs --class (the classes to guide towards)")
    cond_opts: dict[str, Any] = {"cond": labels, "guidance": args.guidance}
    if args.guidance_interval:
        lo, _, hi = args.guidance_interval.partition(",")
        cond_opts["guidance_interval"] = (float(lo), float(hi))
    if args.threshold is not None:
        cond_opts["threshold"] = args.threshold
    scale = 1.0 if args.guidance is None else args.guidance
    what = "" if labels is None else f", guidance {scale:g}"
    if args.inpaint:
        from scoregen.sampling.inpaint import inpaint, region_mask

        known = load_known(args.inpaint, event, n).to(device)
        n = len(known)
        if labels is not None and len(labels) != n:
            labels = labels[:n] if len(labels) >= n else labels.repeat(n)[:n]
            cond_opts["cond"] = labels
        fill = region_mask(args.mask, event).to(device)
        if "threshold" in cond_opts or "guidance_interval" in cond_opts:
            raise ValueError("--inpaint takes --class and --guidance; not --threshold or "
                             "--guidance-interval")
        if args.nfe is not None or spacing == "tuned":
            raise ValueError("--inpaint takes --steps; not --nfe or --spacing tuned")
        if ctx.world > 1:
            raise ValueError("--inpaint runs in one process; run it without torchrun")
        res = inpaint(src.model, src.sde, known, ~fill, sampler, steps,
                      spacing=spacing, seed=seed,
                      resample=args.resample, progress=not args.no_progress,
                      cond=cond_opts["cond"], guidance=cond_opts["guidance"], **opts)
        shown = torch.where(fill, torch.zeros_like(known), known)
        samples, nfe = res.x, res.nfe
        plot, per_row = torch.cat([shown, samples]), n
        what += f", inpaint {args.mask}"
    else:
        if n < ctx.world:
            raise ValueError(f"-n {n} is fewer samples than the {ctx.world} processes; "
                             f"ask for at least {ctx.world}")
        index = distributed.shard(n)  # this rank's samples k (all of them for one process)
        if labels is not None:
            cond_opts["cond"] = labels[index]
        res = sample(src.model, src.sde, (len(index), *event), sampler, steps, nfe=args.nfe,
                     spacing=spacing, grids=grids, seeds=seed + index, device=device,
                     progress=not args.no_progress and ctx.is_main, **cond_opts, **opts)
        samples = distributed.gather_ordered(res.x, n)
        nfe = int(distributed.all_reduce(torch.tensor(res.nfe), "max"))  # adaptive: per shard
        if not ctx.is_main:
            return 0
        plot = samples
    steps = len(res.ts) - 1
    x = samples.float().cpu()
    images = x.ndim == 4
    clipped, outside = (clip_to_range(x) if images else (x, 0.0))
    if images:
        plot = clip_to_range(plot.float().cpu())[0]
    run_dir = src.run_dir or Path(".")
    name = f"sample_{sampler}" if adaptive else f"sample_{sampler}_{steps}"
    out = Path(args.out) if args.out else run_dir / "samples" / f"{name}.png"
    title = (f"{sampler}, {nfe} NFE" if adaptive else
             f"{sampler}, {steps} steps, {nfe} NFE") + what + (
        f", step {src.step}" if src.step is not None else "")
    npz, out = out.with_suffix(".npz"), out.with_suffix(".png" if out.suffix == ".npz"
                                                        else out.suffix)
    save_samples(plot, out, title, ncol=per_row or None)
    keep_raw = args.no_clip or not images
    extra = {} if labels is None else {"labels": labels.cpu().numpy()}
    save_npz(npz, x=(x if keep_raw else clipped).numpy(), nfe=nfe, ts=res.ts.numpy(),
             seed=seed, sampler=sampler, clipped=not keep_raw, out_of_range=outside, **extra)
    print(f"{n} samples ({nfe} NFE, {res.seconds:.2f} s) -> {out} and {npz}")
    if images:
        what = "kept raw in the .npz" if args.no_clip else "clipped (--no-clip keeps raw values)"
        print(f"{100 * outside:.2f}% of values fell outside the data range [-1, 1]; {what}")
    return 0
