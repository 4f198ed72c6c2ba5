"""Fit few-step time grids to a model (GITS + refinement on teacher trajectories).

``RUN_OR_PRESET`` is a run or checkpoint folder (grids are saved in the checkpoint folder,
next to the weights) or an exact-mixture preset, with parameters if any (ring8, mix16, mix64,
``ring8:classes=2``; grids are saved in ``--out``, default ``runs/tuned_grids/<preset>``;
checked before the fit, written atomically and only over a grid file scoregen wrote). One
teacher is shared by every sampler and budget asked for. Use the grids with ``--spacing
tuned``. With ``--class`` and ``--guidance`` the grids are fitted to the classifier-free
guided model (one teacher per scale) and used when sampling with the same scale. Examples::

    scoregen tune-grid ring8 --sde ddpm --sampler ipndm,unipc --nfe 5,10
    scoregen tune-grid runs/digits --sde ddpm --sampler ipndm --nfe 5,10
    scoregen sample runs/digits --sde ddpm --sampler ipndm --nfe 5 --spacing tuned
    scoregen compare --preset ring8 --sde ddpm --spacing tuned --grids runs/tuned_grids/ring8 \\
        --samplers ipndm,unipc --budgets 5,10
    scoregen tune-grid runs/digits_cond --class all --guidance 2,4 --sampler unipc --nfe 5,10
    scoregen sample runs/digits_cond --class all --guidance 4 --sampler unipc --nfe 5 \\
        --spacing tuned
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scoregen.commands._args import floats as _floats
from scoregen.commands._args import ints as _ints
from scoregen.commands._args import names as _names
from scoregen.commands._args import positive_int, seed_int
from scoregen.commands.sample import sampler_options

PRESET_OUT = Path("runs/tuned_grids")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="RUN_OR_PRESET",
                        help="run/checkpoint folder, or an oracle preset (ring8, mix16, mix64; "
                             "with parameters e.g. ring8:classes=2)")
    parser.add_argument("--sampler", type=_names, required=True,
                        help="deterministic fixed-step sampler(s), comma-separated")
    parser.add_argument("--nfe", type=_ints, required=True, help="NFE budget(s), e.g. 5,10")
    parser.add_argument("--sde", metavar="NAME[:KEY=VALUE,...]", help="SDE, e.g. ddpm or "
                        "ve:sigma_min=0.002,sigma_max=80 (preset default: vp; a run: re-target "
                        "to it)")
    parser.add_argument("--class", dest="classes", metavar="all|Y|Y1,Y2,...",
                        help="fit to the class-conditional model: trajectory k asks for class "
                             "k mod C (all) or for the given label(s) in turn")
    parser.add_argument("--guidance", type=_floats, metavar="W[,W...]",
                        help="classifier-free guidance scale(s) to fit for (needs --class; "
                             "default 1, plain conditional); one teacher per scale")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="sampler option, e.g. order=3 (repeatable; applies to every sampler)")
    parser.add_argument("-n", type=positive_int, default=320,
                        help="teacher trajectories (default 320)")
    parser.add_argument("--held-out", type=int, default=64,
                        help="trajectories kept out of the fit to check it (default 64)")
    parser.add_argument("--teacher-steps", type=positive_int, default=200,
                        help="steps of the teacher solve (default 200)")
    parser.add_argument("--max-evals", type=positive_int, default=400,
                        help="sampler runs per start of the search (default 400; three starts)")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="trajectory k starts from seed + k")
    parser.add_argument("--out", help="folder of tuned_grids.json (default: the checkpoint "
                                      "folder, or runs/tuned_grids/<preset>)")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _problem(args: argparse.Namespace):
    """``(model, sde, event shape, dtype, device, default output folder, description)``."""
    import torch

    from scoregen.models import analytic
    from scoregen.sde.spec import from_spec

    if args.target.partition(":")[0] in analytic.PRESETS.list():
        mixture = analytic.from_spec(args.target)
        process = from_spec(args.sde or "vp")
        out = PRESET_OUT / args.target.replace(":", "_").replace(",", "_")
        return (mixture.model(process), process, mixture.shape, torch.float64, "cpu", out,
                f"preset {args.target}")
    from scoregen.training import resolve_device
    from scoregen.training.checkpoint import find_checkpoint, load_model

    device = resolve_device(args.device)
    folder = find_checkpoint(args.target)  # a clear error when it is neither
    model = load_model(folder, ema=not args.no_ema, device=device)
    process = from_spec(args.sde) if args.sde else model.sde
    return (model.under(process), process, tuple(model.network.spec["shape"]), torch.float32,
            device, folder, f"checkpoint {folder}")


def _labels(args: argparse.Namespace, model, n: int):
    """The class of each of the ``n`` teacher trajectories (``None`` without ``--class``)."""
    import torch

    from scoregen.sampling.guidance import check_labels, num_classes

    if args.classes is None:
        if args.guidance is not None:
            raise ValueError("--guidance needs --class (the classes to guide towards), e.g. "
                             "--class all")
        return None
    classes = num_classes(model)
    if classes is None:
        raise ValueError(f"--class: {args.target} has no classes (a model trained without "
                         "model.num_classes, or a preset without classes)")
    if args.classes == "all":
        wanted = list(range(classes))
    else:
        try:
            wanted = [int(v) for v in args.classes.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--class must be all, a label or labels separated by commas, got "
                             f"{args.classes!r}") from None
    labels = torch.tensor(wanted)[torch.arange(n) % len(wanted)]
    return check_labels(labels, classes, n)


def run(args: argparse.Namespace) -> int:
    from scoregen.infra import outputs
    from scoregen.sampling.grid_tuning import teacher_trajectories, tune_grid
    from scoregen.sampling.tuned_grids import KIND, TunedGrids

    model, process, shape, dtype, device, default_out, what = _problem(args)
    labels = _labels(args, model, args.n)
    if any(w < 0 for w in args.guidance or ()):
        raise ValueError(f"--guidance scales must be >= 0, got {args.guidance}")
    scales = [None] if labels is None else args.guidance or [1.0]
    options = {sampler: sampler_options(sampler, args.opt) for sampler in args.sampler}
    file = TunedGrids.file(args.out or default_out)
    outputs.check_target(file, (".json",), what="--out", kind=KIND)  # before the work
    store = TunedGrids.load(file, missing_ok=True)
    for w in scales:
        guided = "" if w is None else f", class {args.classes}, guidance {w:g}"
        print(f"teacher: {args.n} trajectories of {what} under {process.name}{guided}")
        teacher = teacher_trajectories(model, process, shape, args.n, seed=args.seed,
                                       teacher_steps=args.teacher_steps, dtype=dtype,
                                       device=device, cond=labels, guidance=w)
        for sampler in args.sampler:
            for nfe in args.nfe:
                grid = tune_grid(model, process, sampler, nfe, options=options[sampler],
                                 teacher=teacher, held_out=args.held_out, seed=args.seed,
                                 max_evals=args.max_evals, progress=not args.no_progress)
                store.add(grid)
                fit, held = grid.info["fit"], grid.info.get("held_out", {})
                print(f"{sampler} {nfe} NFE ({grid.nfe} counted{guided}): endpoint error "
                      f"default {fit['default']:.4g} -> tuned {fit['tuned']:.4g} (fit), "
                      f"{held.get('default', float('nan')):.4g} -> "
                      f"{held.get('tuned', float('nan')):.4g} (held out); "
                      f"ts = {[round(t, 5) for t in grid.ts]}")
    path = store.save()
    print(f"wrote {path}")
    return 0
