"""Draw samples from a trained run or checkpoint (a PNG plot and an .npz of raw samples).

Uses the EMA weights unless ``--no-ema``; defaults come from the run's ``sample`` config
section. Image samples are clipped to the data range ``[-1, 1]`` (the PNG always; the
``.npz`` unless ``--no-clip``, and it records ``clipped`` and the fraction of values that
fell outside). Non-finite samples are an error (exit 1) and nothing is written; samples far
outside the data range (e.g. from a guidance scale too large for the model) are written with
a warning. The plot and the ``.npz`` are written together, atomically, and only over files
scoregen wrote (docs/outputs.md); ``--out`` is checked before sampling. Under ``torchrun``
the samples are shared out: rank ``r`` draws the samples ``k`` with ``k mod world == r``,
each from its own seed ``seed + k``, and rank 0 gathers them in index order and writes the
files. Sample ``k`` is the same computation whatever the batch or the number of processes;
whether its bits are equal depends on the model's arithmetic (docs/outputs.md,
"Reproducibility"). Examples::

    scoregen sample runs/toy2d --sampler ddim --steps 50 -n 512 --out toy.png
    torchrun --standalone --nproc_per_node=2 -m scoregen sample runs/ddp -n 10000 --out s.npz
    scoregen sample runs/digits_cond --class all --guidance 2 --sampler dpm_solver++ \
        --steps 10 --out grid.png              # one row per class
    scoregen sample runs/digits --inpaint data.npz --mask right-half --out filled.png
    scoregen sample runs/digits_cd --nfe 2 -n 64 --out cd2.png   # a distilled student
    scoregen sample runs/digits --classifier runs/digits_classifier --class 3 --guidance 2

A student's folder (``scoregen distill``) samples with its own sampler and grid at ``--nfe``
(the largest NFE it offers within the budget) or exactly ``--steps`` (default: its smallest NFE).

``--measure OP --y FILE.npz``: posterior samples for a linear inverse problem (``OP`` from
``scoregen list operators``: ``inpaint:right-half``, ``downsample:2``, ``blur:1``,
``project:16``) by ``--method`` (``scoregen list inverse``); the ``.npz`` holds the
measurements ``y`` or the data ``x`` to measure (then ``y = A x`` plus ``--sigma-y`` noise). The
PNG shows the observation ``A^+ y`` above the samples (and the data, when given)::

    scoregen sample runs/digits --measure inpaint:right-half --y obs.npz --method smc \
        --particles 16 --nfe 100 --out fill.png
    scoregen sample runs/digits --measure downsample:2 --y small.npz --method dps --nfe 100

``--class``: ``all`` (one grid row per class, ``-n`` per class), one label, or a
comma-separated list (one row each); ``--guidance w``: 0 unconditional, 1 conditional (the
default), > 1 classifier-free guided (docs/conditioning.md), or guided by the
noise-conditional classifier of ``--classifier CLF_RUN`` (``objective: classifier``), which
also works for an unconditional model. ``--inpaint FILE``: ``.npz``
with the known samples under ``x``; ``--mask`` names the region to fill (right-half,
left-half, top-half, bottom-half, center); the PNG shows the inputs (filled region grey)
above the results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from scoregen.commands._args import positive_int, seed_int
from scoregen.commands._model import add_model_argument, load_source
from scoregen.infra import outputs
from scoregen.infra.npz import check_finite, open_npz, pick_key, read_array, save_npz

FAR = 100.0  # |x| beyond this is far outside the data range [-1, 1] of scoregen's datasets


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
    parser.add_argument("--out", help="output PNG or .npz (both are written, with one stem; "
                        "another image suffix such as .pdf or .svg for the plot)")
    parser.add_argument("--seed", type=seed_int, help="sample k uses seed + k")
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
    cond.add_argument("--classifier", metavar="CLF_RUN",
                      help="a noise-conditional classifier run (objective classifier) for "
                           "classifier guidance instead of classifier-free")
    cond.add_argument("--guidance-interval", metavar="T_LO,T_HI",
                      help="apply the guidance scale only for t in [T_LO, T_HI]")
    cond.add_argument("--threshold", type=float, metavar="P",
                      help="dynamic thresholding of x0_hat at quantile P (e.g. 0.995)")
    cond.add_argument("--inpaint", metavar="FILE.npz", help="known samples to complete")
    cond.add_argument("--mask", default="right-half", help="region to fill with --inpaint "
                      "(right-half, left-half, top-half, bottom-half, center)")
    cond.add_argument("--resample", type=positive_int, default=1,
                      help="RePaint resampling per step with --inpaint or --method repaint "
                           "(default 1: plain replacement; repaint: 5)")
    inv = parser.add_argument_group("inverse problems")
    inv.add_argument("--measure", metavar="OP[:ARG]", help="a measurement operator "
                     "(inpaint:right-half, downsample:2, blur:1, project:16): sample the "
                     "posterior given --y")
    inv.add_argument("--y", metavar="FILE.npz", help="measurements `y`, or data `x` to measure")
    inv.add_argument("--method", default="smc", help="posterior-sampling method: replacement, "
                     "repaint, ddnm, pigdm, dps, smc (default %(default)s)")
    inv.add_argument("--sigma-y", type=float, default=0.0,
                     help="measurement noise (default 0)")
    inv.add_argument("--particles", type=positive_int,
                     help="particles per sample of the smc method (default 16)")


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
    with open_npz(file, "--inpaint") as data:
        arr = read_array(data, pick_key(data, ("x", "images"), "--inpaint"), "--inpaint")[:n]
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0 * 2 - 1
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"--inpaint: {file} holds {arr.dtype} values, not numbers")
    check_finite(arr, f"--inpaint: {file}")
    x = torch.as_tensor(np.asarray(arr, dtype=np.float64))
    if x.shape[1:] != shape and x.ndim == len(shape) and (1, *x.shape[1:]) == shape:
        x = x[:, None]  # (N, H, W) grey images
    if x.shape[1:] != shape:
        raise ValueError(f"--inpaint: samples in {file} have shape {tuple(x.shape[1:])} but "
                         f"the model makes {shape}")
    if len(x) == 0:
        raise ValueError(f"--inpaint: {file} holds no samples")
    if x.abs().max() > 1 + 1e-6:
        raise ValueError(f"--inpaint: values in {file} leave [-1, 1]; store data in [-1, 1]")
    return x.to(torch.float32)


def output_paths(out: Path) -> tuple[Path, Path]:
    """``(plot, npz)`` for ``--out``: one stem, the plot as the suffix says (PNG for
    ``.npz``); an error naming the accepted suffixes for any other."""
    from scoregen.infra.plotting import FORMATS

    outputs.check_target(out, (".npz", *FORMATS), what="--out")
    plot = out.with_suffix(".png") if out.suffix.lower() == ".npz" else out
    npz = out.with_suffix(".npz")
    outputs.check_target(plot if out == npz else npz, what="--out")
    return plot, npz


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


def _student_plan(src: Any, args: argparse.Namespace) -> Any:
    """A student's sampling plan for ``--nfe`` (a budget) or ``--steps`` (exact); default: its
    smallest NFE."""
    given = [f for f, v in (("--sampler", args.sampler), ("--spacing", args.spacing),
                            ("--grids", args.grids), ("--opt", args.opt),
                            ("--inpaint", args.inpaint)) if v]
    if given:
        raise ValueError(f"{', '.join(given)}: the student {src.name} samples with its own "
                         "sampler and grid; give --nfe N (a budget) or --steps N (exact)")
    if args.nfe is not None and args.steps is not None:
        raise ValueError("give --steps or --nfe, not both")
    student = src.model
    if args.nfe is None and args.steps is None:
        return student.sampling_plan(steps=min(student.nfes() or [1]))
    return student.sampling_plan(steps=args.steps, nfe=args.nfe)


def load_guidance_classifier(path: str, sde: Any, event: tuple[int, ...], device: Any) -> Any:
    """The noise-conditional classifier of run ``path`` (EMA weights), checked against the
    model's process and sample shape."""
    from scoregen.training.checkpoint import load_classifier

    clf = load_classifier(path, device=device)
    if clf.sde != sde:
        raise ValueError(f"--classifier {path} was trained under {clf.sde!r} but the model "
                         f"samples under {sde!r}; train the classifier with the model's sde "
                         "section")
    if clf.data_shape is not None and clf.data_shape != event:
        raise ValueError(f"--classifier {path} is for data of shape {clf.data_shape}, the "
                         f"model's samples have shape {event}")
    return clf


def run(args: argparse.Namespace) -> int:
    import torch

    from scoregen.infra import distributed
    from scoregen.infra.plotting import clip_to_range, render, samples_figure
    from scoregen.samplers import SAMPLERS
    from scoregen.sampling.api import NonFiniteSamplesError, sample
    from scoregen.sampling.nfe_budget import check_plannable
    from scoregen.sampling.recommend import AUTO, resolve
    from scoregen.training.config import SampleConfig

    targets = output_paths(Path(args.out)) if args.out else None  # checked before the work
    ctx = distributed.setup(args.device)
    device = ctx.device
    src = load_source(args.path, args.model, ema=not args.no_ema, device=device, sde=args.sde)
    run_dir = src.run_dir or Path(".")
    if targets is None:
        outputs.check_folder(run_dir / "samples", what="sample folder")
    defaults = src.sample or SampleConfig()
    if src.shape is None:
        raise ValueError(f"--model {args.model}: the model needs a `shape` attribute (the "
                         "event shape of one sample, e.g. (2,) or (1, 8, 8))")
    plan = _student_plan(src, args) if hasattr(src.model, "sampling_plan") else None
    if plan is not None:  # a student: its own model, sampler and grid for the NFE asked
        src.model, args.sampler, args.nfe, args.steps = plan.model, plan.sampler, None, None
    if args.nfe is not None and args.steps is not None:
        raise ValueError("give --steps or --nfe, not both")
    steps = defaults.steps if args.steps is None else args.steps
    # an NFE budget without --sampler asks for the sampler measured best at that budget
    sampler = args.sampler or (AUTO if args.nfe is not None else defaults.sampler)
    if args.measure and args.sampler is None:
        from scoregen.sampling.inverse import METHODS

        fits = METHODS.get(args.method).samplers  # smc: a stochastic Gaussian kernel
        sampler = fits[0] if fits else sampler
    opts = dict(defaults.options) if sampler == defaults.sampler else {}
    if sampler == AUTO:
        scale = args.guidance if args.guidance is not None else (
            1.0 if args.classes is not None else None)
        sampler, opts = resolve(AUTO, opts, args.nfe, steps, scale, src.sde)
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
    if plan is None and spacing in ("tuned", "auto"):  # auto: the run's tuned grid if one fits
        from scoregen.training.checkpoint import find_checkpoint

        grids = args.grids or (find_checkpoint(args.path) if args.path else None)
    event = tuple(src.shape)
    labels, per_row = None, 0
    classifier = None if args.classifier is None else load_guidance_classifier(
        args.classifier, src.sde, event, device)
    if args.classes is not None:
        classes = (classifier.num_classes if classifier is not None
                   else getattr(src.model, "num_classes", None))
        labels, per_row = class_labels(args.classes, classes, n, src.name)
        n = len(labels)
    elif args.guidance is not None:
        raise ValueError("--guidance needs --class (the classes to guide towards)")
    elif classifier is not None:
        raise ValueError("--classifier needs --class (the classes to guide towards)")
    cond_opts: dict[str, Any] = {"cond": labels, "guidance": args.guidance}
    if classifier is not None:
        cond_opts["classifier"] = classifier
    if args.guidance_interval:
        lo, _, hi = args.guidance_interval.partition(",")
        try:
            cond_opts["guidance_interval"] = (float(lo), float(hi))
        except ValueError:
            raise ValueError(f"--guidance-interval must be two times T_LO,T_HI such as 0.2,0.8, "
                             f"got {args.guidance_interval!r}") from None
    if args.threshold is not None:
        cond_opts["threshold"] = args.threshold
    scale = 1.0 if args.guidance is None else args.guidance
    what = "" if labels is None else f", guidance {scale:g}"
    truth = None
    if args.measure or args.y:
        if not (args.measure and args.y):
            raise ValueError("--measure and --y go together: the operator and the file of "
                             "measurements")
        if args.inpaint or ctx.world > 1:
            raise ValueError("--measure runs in one process and without --inpaint")
        if "threshold" in cond_opts or "guidance_interval" in cond_opts or spacing == "tuned":
            raise ValueError("--measure takes --class and --guidance; not --threshold, "
                             "--guidance-interval or --spacing tuned")
        res, observed, truth = solve_measurement(args, src.model, src.sde, event, n, sampler,
                                                 steps, seed, spacing, opts, cond_opts, device)
        samples, nfe, n = res.x, res.nfe, len(res.x)
        rows = [observed, samples] + ([] if truth is None else [truth])
        plot, per_row = (torch.cat(rows), n) if samples.ndim == 4 else (samples, 0)
        what += f", {args.method} on {res.info['operator']}"
    elif args.inpaint:
        from scoregen.sampling.inpaint import inpaint, region_mask

        known = load_known(args.inpaint, event, n).to(device)
        n = len(known)
        if labels is not None and len(labels) != n:
            labels = labels[:n] if len(labels) >= n else labels.repeat(n)[:n]
            cond_opts["cond"] = labels
        fill = region_mask(args.mask, event).to(device)
        if "threshold" in cond_opts or "guidance_interval" in cond_opts or classifier:
            raise ValueError("--inpaint takes --class and --guidance; not --threshold, "
                             "--guidance-interval or --classifier")
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
        grid = ({"ts": plan.ts} if plan is not None else
                {"nfe": args.nfe, "spacing": spacing, "grids": grids})
        res = sample(src.model, src.sde, (len(index), *event), sampler, steps, **grid,
                     seeds=seed + index, device=device,
                     progress=not args.no_progress and ctx.is_main, check_finite=False,
                     **cond_opts, **opts)  # checked below, on all samples, before writing
        samples = distributed.gather_ordered(res.x, n)
        nfe = int(distributed.all_reduce(torch.tensor(res.nfe), "max"))  # adaptive: per shard
        if not ctx.is_main:
            return 0
        plot = samples
    steps = len(res.ts) - 1
    x = samples.float().cpu()
    bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
    if bad:  # never written as a result
        why = (f"at guidance scale {scale:g} the guided predictions grew without bound: lower "
               "--guidance" if scale > 1 else "the model's weights may be diverged (check its "
               "checkpoint), or try more steps or another sampler")
        raise NonFiniteSamplesError(f"{sampler} produced NaN or infinite values in {bad} of "
                                    f"{len(x)} samples, so nothing was written; {why}")
    far = float(x.abs().max()) if x.numel() else 0.0
    if far > FAR:
        why = (f"the guidance scale {scale:g} is too large for this model: lower --guidance"
               if scale > 1 else "check the model and try more steps or another sampler")
        print(f"warning: the samples reach |x| = {far:.3g}, far outside the data range "
              f"[-1, 1]; {why}", file=sys.stderr)
    images = x.ndim == 4
    clipped, outside = (clip_to_range(x) if images else (x, 0.0))
    if images:
        plot = clip_to_range(plot.float().cpu())[0]
    name = f"sample_{sampler}" if adaptive else f"sample_{sampler}_{steps}"
    out, npz = targets or output_paths(run_dir / "samples" / f"{name}.png")
    title = (f"{sampler}, {nfe} NFE" if adaptive else
             f"{sampler}, {steps} steps, {nfe} NFE") + what + (
        f", step {src.step}" if src.step is not None else "")
    keep_raw = args.no_clip or not images
    extra = {} if labels is None else {"labels": labels.cpu().numpy()}
    if args.measure:
        extra.update(method=args.method, operator=args.measure, sigma_y=args.sigma_y)
    with outputs.replacing(out, npz, what="--out") as (tmp_plot, tmp_npz):
        render(samples_figure(plot, title, ncol=per_row or None), tmp_plot)
        save_npz(tmp_npz, x=(x if keep_raw else clipped).numpy(), nfe=nfe, ts=res.ts.numpy(),
                 seed=seed, sampler=sampler, clipped=not keep_raw, out_of_range=outside,
                 **extra)
    print(f"{n} samples ({nfe} NFE, {res.seconds:.2f} s) -> {out} and {npz}")
    if images:
        what = "kept raw in the .npz" if args.no_clip else "clipped (--no-clip keeps raw values)"
        print(f"{100 * outside:.2f}% of values fell outside the data range [-1, 1]; {what}")
    return 0


def solve_measurement(args: argparse.Namespace, model: Any, sde: Any, event: tuple[int, ...],
                      n: int, sampler: str, steps: int | None, seed: int, spacing: str,
                      opts: dict, cond_opts: dict, device: Any) -> tuple[Any, Any, Any]:
    """``--measure``: ``(SampleResult, observation A^+ y, data x or None)``."""
    import torch

    from scoregen.sampling.inverse import operator, solve_inverse

    op = operator(args.measure, event)
    file = Path(args.y)
    with open_npz(file, "--y") as data:
        keys = list(data.files)
        raw = read_array(data, "y", "--y") if "y" in keys else None
    truth = None
    if raw is not None:
        check_finite(raw, f"--y: {file}")
        y = torch.as_tensor(np.asarray(raw, dtype=np.float64))
        if tuple(y.shape) == op.out_shape:
            y = y[None]
        y = y[:n]
    else:
        truth = load_known(str(file), event, n).to(torch.float64)
        g = torch.Generator().manual_seed(seed)
        y = op.A(truth) + args.sigma_y * torch.randn(len(truth), *op.out_shape, generator=g,
                                                     dtype=torch.float64)
    dtype = torch.float32
    y = y.to(device=device, dtype=dtype)
    options = dict(opts)
    if args.particles is not None:
        if args.method != "smc":
            raise ValueError("--particles is an option of --method smc")
        options["particles"] = args.particles
    if args.resample != 1:
        if args.method != "repaint":
            raise ValueError("--resample goes with --inpaint or --method repaint")
        options["resample"] = args.resample
    cond = cond_opts["cond"]
    if cond is not None and len(cond) != len(y):
        cond = cond[: len(y)] if len(cond) >= len(y) else cond.repeat(len(y))[: len(y)]
    res = solve_inverse(model, sde, op, y, args.method, sampler,
                        None if args.nfe is not None else steps, nfe=args.nfe,
                        sigma_y=args.sigma_y, shape=event, spacing=spacing, seed=seed,
                        dtype=dtype, cond=cond, guidance=cond_opts["guidance"],
                        progress=not args.no_progress, **options)
    svd = op.svd
    observed = (op.AT(y) if svd is None else svd.v(svd.pinv_coords(y))).float().cpu()
    return res, observed, None if truth is None else truth.float().cpu()
