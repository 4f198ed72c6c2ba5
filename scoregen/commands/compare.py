"""Compare samplers (and peer libraries) by quality versus counted NFE on one problem.

By default the exact Gaussian-mixture oracle (preset ring8 under VP) with every registered
sampler at NFE budgets 5, 10, 20, 50, 100, 1000 (budgets above 100 only for one-NFE-per-step
samplers); self-stepping samplers run at tolerances. Writes results.md, results.csv,
results.json, quality_vs_nfe.png and samples_nfe<B>.png into --out (checked before the work;
written together, atomically, and only over files scoregen wrote: docs/outputs.md).
Examples::

    scoregen compare
    scoregen compare --preset mix64 --samplers ddim,heun --budgets 10,20,50
    scoregen compare --sde ddpm --peers            # with diffusers and k-diffusion
    scoregen compare --sde cld                     # the samplers that run on CLD, exact scores
    scoregen compare --sde blur --preset mix8x8    # blurring diffusion needs image samples
    scoregen compare --checkpoint runs/toy2d --reference test.npz
    scoregen compare --preset ring8 --guidance 1,2,4,8   # classifier-free guidance, exact
    scoregen compare --checkpoint runs/digits --students runs/digits_cd,runs/digits_pd \
        --budgets 1,2,4,8,10                     # distilled students beside the samplers
    torchrun --standalone --nproc_per_node=2 -m scoregen compare --checkpoint runs/ddp

With ``--inverse``, posterior-sampling methods are compared on linear inverse problems: on the
exact oracle (``--preset``) against the exact posterior of each measured point, or on a
trained digits model (``--checkpoint``) by the digits classifier's label agreement, with
image grids of observation / samples / truth::

    scoregen compare --preset mix64 --inverse inpaint:right-half,downsample:4,project:16 \
        --sigma-y 0,0.05 --methods replacement,repaint,ddnm,pigdm,dps,smc \
        --budgets 20,50,100,200 --curve 1,4,16,64 -n 500 --out runs/inverse
    scoregen compare --checkpoint runs/digits --inverse inpaint:right-half,downsample:2 \
        --points 200 -n 1 --budgets 100 --out runs/inverse_digits

With ``--guidance``, every sampler (and peer) runs under classifier-free guidance on the
exact class-conditional oracle, at each scale, against a dopri5 solve of the guided PF-ODE
from the same noise; ``OUT/guidance_<w>/`` holds each scale's tables and ``OUT/guidance.md``
the summary (endpoint error and class accuracy per sampler, scale and budget).

With ``--students``, each distilled student (``scoregen distill``) is a row of its own, at the
largest NFE it offers within each budget, from the same noise; the tables add the endpoint
error of every deterministic method against the teacher's ODE map of the same noise (exact on
the oracle; the student's teacher must be the comparison's model) and what each student cost.
Without ``--budgets`` the budgets are then 1, 2, 4, 8 and the usual ones.

Under ``torchrun`` every run's samples are shared out over the processes (sample ``k`` on
rank ``k mod world``, from its own seed) and gathered on rank 0, which scores and writes.
"""

from __future__ import annotations

import argparse
from typing import Any

from scoregen.commands._args import floats as _floats
from scoregen.commands._args import ints as _ints
from scoregen.commands._args import names as _names
from scoregen.commands._args import seed_int

_DTYPES = {"float32": "float32", "float64": "float64"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scoregen.evaluation.compare import DEFAULT_BUDGETS, DEFAULT_TOLERANCES

    src = parser.add_argument_group("problem")
    src.add_argument("--preset", default="ring8", metavar="NAME[:KEY=VALUE,...]",
                     help="oracle mixture: ring8, mix16, mix64, mix8x8, with parameters e.g. "
                          "ring8:classes=2 (component k in class k mod 2)")
    src.add_argument("--sde", metavar="NAME[:KEY=VALUE,...]", help="SDE with its parameters, "
                     "e.g. vp or ve:sigma_min=0.002,sigma_max=80 (oracle default: vp; for a "
                     "checkpoint: re-target to it)")
    src.add_argument("--checkpoint", help="run or checkpoint folder instead of the oracle")
    src.add_argument("--model", metavar="MODULE:FUNCTION", help="a Python callable that "
                     "returns a scoregen model (package.module:function or file.py:function)")
    src.add_argument("--reference", help="reference samples (.npz) for --checkpoint or --model "
                     "(default: the test split of the run's dataset, or the model's `dataset`)")
    src.add_argument("--no-ema", action="store_true", help="use the raw weights")
    src.add_argument("--guidance", type=_floats, help="classifier-free guidance scales on the "
                     "exact oracle, e.g. 1,2,4,8 (0: unconditional, 1: conditional)")
    parser.add_argument("--samplers", type=_names, help="comma-separated scoregen samplers "
                        "(default: every registered one; `scoregen list samplers`)")
    inv = parser.add_argument_group("inverse problems")
    inv.add_argument("--inverse", type=_names, metavar="OP[:ARG],...",
                     help="compare posterior-sampling methods on these measurement operators "
                          "(e.g. inpaint:right-half,downsample:4,project:16)")
    inv.add_argument("--sigma-y", type=_floats, default=[0.0],
                     help="measurement noise levels (default 0)")
    inv.add_argument("--methods", type=_names,
                     default=["replacement", "repaint", "ddnm", "pigdm", "dps", "smc"],
                     help="METHOD or METHOD@SAMPLER, comma-separated (default: every method "
                          "on its default sampler)")
    inv.add_argument("--particles", type=int, default=4,
                     help="particles of smc in the budget sweep (default %(default)s)")
    inv.add_argument("--resample", type=int, default=5,
                     help="RePaint passes per step (default %(default)s)")
    inv.add_argument("--curve", type=_ints, default=[],
                     help="particle counts of the particle method's curve, e.g. 1,4,16,64")
    inv.add_argument("--curve-steps", type=int, default=100,
                     help="steps of the particle curve (default %(default)s)")
    inv.add_argument("--curve-sampler", default="dpm_solver++_sde",
                     help="kernel of the particle curve (default %(default)s)")
    inv.add_argument("--points", type=int,
                     help="measured points per problem (default 2 on a preset, 200 digits)")
    parser.add_argument("--peers", nargs="?", const="all", type=str,
                        help="also run peer libraries' samplers: all, or a comma-separated list "
                             "(e.g. diffusers/ddim,k-diffusion/euler)")
    parser.add_argument("--budgets", type=_ints,
                        help=f"NFE budgets (default {list(DEFAULT_BUDGETS)}; with --students "
                             f"also 1, 2, 4, 8; with --inverse 20,50,100,200)")
    parser.add_argument("--students", type=_names, metavar="DIR,DIR",
                        help="distilled students (folders of `scoregen distill`) to compare "
                             "beside the samplers; their teacher must be the compared model")
    parser.add_argument("--tolerances", type=_floats,
                        help="tolerances of self-stepping samplers (default: each sampler's "
                             f"registered ones, else {list(DEFAULT_TOLERANCES)})")
    parser.add_argument("--max-multi-nfe", type=int, default=100,
                        help="samplers with >1 NFE per step skip budgets above this "
                             "(0: no limit; default %(default)s)")
    parser.add_argument("-n", type=int, default=2000, help="samples per run (default 2000; "
                        "with --inverse: per measured point)")
    parser.add_argument("--seed", type=seed_int, default=0, help="sample k uses seed + k")
    parser.add_argument("--spacing", default="auto",
                        help="time grid of scoregen samplers: auto (the SDE's tuned default), "
                             "uniform, quadratic, logsnr, edm, or tuned (grids fitted by "
                             "`scoregen tune-grid`, see --grids)")
    parser.add_argument("--grids", help="tuned grids for --spacing tuned: a folder or .json "
                        "(default for --checkpoint: its checkpoint folder)")
    parser.add_argument("--opt", action="append", default=[], metavar="SAMPLER.KEY=VALUE",
                        help="a sampler option, e.g. ddim.eta=1.0 (repeatable); with --inverse "
                             "a method option, e.g. dps.zeta=0.1")
    parser.add_argument("--show-nfe", type=int, help="budget of the sample plot (default ~20)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES),
                        help="sampling precision (default: float64 oracle, float32 checkpoint)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto")
    parser.add_argument("--out", default="runs/compare", help="output folder (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _options(items: list[str]) -> dict[str, dict[str, Any]]:
    from scoregen.commands.sample import sampler_options
    from scoregen.samplers import get
    from scoregen.sampling.api import check_options

    opts: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, opt = key.strip().rpartition(".")
        if not sep or not dot:
            raise ValueError(f"--opt {item!r} must look like sampler.key=value, e.g. ddim.eta=1.0")
        opts.setdefault(name, {}).update(sampler_options(name, [f"{opt}={value}"],
                                                         f"--opt {name}."))
    for name, found in opts.items():
        check_options(name, get(name), found)
    return opts


def run(args: argparse.Namespace) -> int:
    import torch

    from scoregen.evaluation import compare
    from scoregen.infra import distributed
    if args.inverse:
        return _run_inverse(args)
    if args.budgets is None:
        args.budgets = list(compare.DEFAULT_BUDGETS)
    if args.n < 2:
        raise ValueError(f"-n must be at least 2 samples, got {args.n}")
    for flag, value in (("--max-multi-nfe", args.max_multi_nfe), ("--show-nfe", args.show_nfe)):
        if value is not None and value < (0 if flag == "--max-multi-nfe" else 1):
            raise ValueError(f"{flag} must be {'>= 0' if flag == '--max-multi-nfe' else '>= 1'}"
                             f", got {value}")
    if args.tolerances is not None and not all(tol > 0 for tol in args.tolerances):
        raise ValueError(f"--tolerances must be positive numbers, got {args.tolerances}")
    _check_outputs(args)  # before the work
    if args.device != "auto":
        from scoregen.training import resolve_device

        resolve_device(args.device)
    ctx = distributed.setup("cpu" if args.device == "auto" and not (args.checkpoint or args.model)
                            else args.device)
    if args.n < ctx.world:
        raise ValueError(f"-n {args.n} is fewer samples than the {ctx.world} processes")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    if args.budgets is None:
        args.budgets = sorted({*compare.DEFAULT_BUDGETS, *((1, 2, 4, 8) if args.students else ())})
    if args.guidance:
        if args.checkpoint or args.model or args.students:
            raise ValueError("--guidance runs on the exact oracle (--preset); it does not take "
                             "--checkpoint, --model or --students")
        return _run_guided(args, dtype or torch.float64)
    if args.model:
        from scoregen.adapters import load_model_spec

        model = load_model_spec(args.model)
        if getattr(model, "shape", None) is None:
            raise ValueError(f"--model {args.model}: the model needs a `shape` attribute "
                             "(the event shape of one sample, e.g. (2,) or (1, 8, 8))")
        problem = compare.model_problem(model, args.n, shape=tuple(model.shape),
                                        name=args.model, dataset=getattr(model, "dataset", None),
                                        reference=args.reference, sde=args.sde,
                                        device=ctx.device)
        problem.dtype = dtype or torch.float32
    elif args.checkpoint:
        problem = compare.checkpoint_problem(args.checkpoint, args.n, reference=args.reference,
                                             sde=args.sde, ema=not args.no_ema,
                                             device=ctx.device)
        problem.dtype = dtype or torch.float32
    else:
        problem = compare.oracle_problem(args.preset, args.sde or "vp", args.n, args.seed,
                                         dtype or torch.float64)
        problem.device = ctx.device
    grids = _tuned_grids(args) if args.spacing == "tuned" else None
    methods = compare.scoregen_methods(_sampler_names(args, problem.sde), args.spacing,
                                       _options(args.opt), grids)
    peer_messages: list[str] = []
    if args.peers:
        from scoregen.evaluation import peers
        names = None if args.peers == "all" else _names(args.peers)
        found, peer_messages = peers.peer_methods(names, problem.sde)
        for line in peer_messages if ctx.is_main else ():
            print(line)
        methods += found
    if args.students:
        methods += _students(args, problem, ctx.is_main)
    comp = compare.run_comparison(
        problem, methods, args.budgets, args.tolerances, n=args.n, seed=args.seed,
        max_multi_nfe=args.max_multi_nfe or None, show_nfe=args.show_nfe,
        progress=not args.no_progress)
    if not ctx.is_main:
        return 0
    comp.settings["spacing"] = args.spacing
    for line in comp.skipped:
        print(f"skipped: {line}")
    comp.skipped += peer_messages  # the written tables say which peers did not run, and why
    paths = compare.write_outputs(comp, args.out, problem.reference)
    print(f"{len(comp.records)} runs on {problem.name}; wrote:")
    for path in paths.values():
        print(f"  {path}")
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Where the comparison will write, checked as outputs (docs/outputs.md)."""
    from pathlib import Path

    from scoregen.evaluation import compare
    from scoregen.infra import outputs

    show = compare.shown_budget(args.budgets, args.show_nfe)
    if not args.guidance:
        compare.check_outputs(args.out, show)
        return
    for w in args.guidance:
        compare.check_outputs(Path(args.out) / f"guidance_{w:g}", show)
    outputs.check_target(Path(args.out) / "guidance.md", what="--out")


def _sampler_names(args: argparse.Namespace, sde: Any) -> list[str]:
    """``--samplers`` (each must run on the process: a clear error names what it lacks), by
    default every sampler that runs on it (`scoregen list sdes`)."""
    from scoregen.samplers import applicable, check_applies

    names = args.samplers or applicable(sde)
    for name in names:
        check_applies(name, sde)
    return names


def _students(args: argparse.Namespace, problem: Any, main: bool) -> list[Any]:
    """The students as methods, and the teacher's ODE map of the comparison's noise as the
    problem's endpoint reference."""
    from scoregen.evaluation.compare.students import student_methods, teacher_flow
    from scoregen.training.distill import resolve_teacher

    source = args.model or args.checkpoint or args.preset
    identity = resolve_teacher(source, sde=args.sde or (None if args.model or args.checkpoint
                                                        else "vp")).identity
    methods = student_methods(args.students, problem, identity)
    if main:
        print(f"teacher's ODE map of the {args.n} starts (the endpoint reference) ...")
    problem.endpoint_reference = teacher_flow(problem, args.n, args.seed)
    return methods


def _methods(args: argparse.Namespace, sde: Any) -> list[Any]:
    from scoregen.evaluation import compare

    grids = _tuned_grids(args) if args.spacing == "tuned" else None
    methods = compare.scoregen_methods(_sampler_names(args, sde), args.spacing,
                                       _options(args.opt), grids)
    if args.peers:
        from scoregen.evaluation import peers
        names = None if args.peers == "all" else _names(args.peers)
        found, messages = peers.peer_methods(names, sde)
        for line in messages:
            print(line)
        methods += found
    return methods


def _run_guided(args: argparse.Namespace, dtype: Any) -> int:
    from pathlib import Path

    from scoregen.evaluation import compare
    from scoregen.infra import outputs

    comps = {}
    for w in args.guidance:
        if w < 0:
            raise ValueError(f"--guidance scales must be >= 0, got {w}")
        problem = compare.guided_problem(args.preset, args.sde or "vp", w, args.n, args.seed,
                                         dtype)
        comp = compare.run_comparison(
            problem, _methods(args, problem.sde), args.budgets, args.tolerances, n=args.n,
            seed=args.seed, max_multi_nfe=args.max_multi_nfe or None, show_nfe=args.show_nfe,
            progress=not args.no_progress)
        comp.settings.update(spacing=args.spacing, guidance=w)
        compare.write_outputs(comp, Path(args.out) / f"guidance_{w:g}", problem.reference)
        comps[w] = comp
    summary = outputs.write_text(Path(args.out) / "guidance.md", compare.guidance_summary(comps))
    print(f"guided comparison at scales {', '.join(f'{w:g}' for w in comps)} -> {summary}")
    return 0


def _tuned_grids(args: argparse.Namespace):
    """The tuned grids of ``--grids``, else of the ``--checkpoint``'s folder."""
    from scoregen.sampling.tuned_grids import TunedGrids

    if args.grids:
        return TunedGrids.load(args.grids)
    if args.checkpoint:
        from scoregen.training.checkpoint import find_checkpoint

        return TunedGrids.load(find_checkpoint(args.checkpoint))
    raise ValueError("--spacing tuned on a preset needs --grids FOLDER (the --out of "
                     "`scoregen tune-grid`)")


INVERSE_BUDGETS = (20, 50, 100, 200)


def _run_inverse(args: argparse.Namespace) -> int:
    """``--inverse``: every method at every budget on every operator and noise level."""
    import torch

    from scoregen.evaluation import compare

    if args.model or args.guidance or args.peers:
        raise ValueError("--inverse runs on --preset (the exact oracle) or --checkpoint (a "
                         "digits model); not with --model, --guidance or --peers")
    if args.n < 1:
        raise ValueError(f"-n must be at least 1 sample per point, got {args.n}")
    if any(s < 0 for s in args.sigma_y):
        raise ValueError(f"--sigma-y must be >= 0, got {args.sigma_y}")
    for flag in ("particles", "resample", "curve_steps"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1")
    if any(k < 1 for k in args.curve):
        raise ValueError(f"--curve particle counts must be >= 1, got {args.curve}")
    budgets = args.budgets or list(INVERSE_BUDGETS)
    methods = compare.inverse_methods(args.methods, args.particles, args.resample,
                                      _method_options(args.opt))
    problems, images = [], {}
    if args.checkpoint:
        from scoregen import sde as sde_lib
        from scoregen.training.checkpoint import load_model

        model = load_model(args.checkpoint, ema=not args.no_ema)
        process = sde_lib.get(args.sde) if args.sde else None
        for spec in args.inverse:
            for sigma_y in args.sigma_y:
                p = compare.digits_inverse_problem(model, spec, sigma_y, args.points or 200,
                                                   args.seed, process)
                problems.append(p)
                images[p.name] = (_observed(p), p.truth.float())
    else:
        for spec in args.inverse:
            for sigma_y in args.sigma_y:
                problems.append(compare.oracle_inverse_problem(
                    args.preset, args.sde or "vp", spec, sigma_y, args.points or 2, args.n,
                    args.seed))
    from scoregen.evaluation.compare.report import grid_key, inverse_output_paths
    from scoregen.infra import outputs

    keys = [grid_key({"operator": p.operator.name, "sigma_y": p.sigma_y}) for p in problems
            if p.name in images]
    for path in inverse_output_paths(args.out, bool(args.checkpoint), keys).values():
        outputs.check_target(path, what="--out")  # before the work (docs/outputs.md)
    comp = compare.run_inverse(problems, methods, budgets, n=args.n, curve=args.curve,
                               curve_steps=args.curve_steps, curve_sampler=args.curve_sampler,
                               seed=args.seed, show_nfe=args.show_nfe,
                               progress=not args.no_progress)
    comp.settings["torch_threads"] = torch.get_num_threads()
    paths = compare.write_inverse_outputs(comp, args.out, images)
    for line in comp.skipped:
        print(f"skipped: {line}")
    print(f"{len(comp.records)} runs on {len(problems)} inverse problems; wrote:")
    for path in paths.values():
        print(f"  {path}")
    return 0


def _method_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--opt METHOD.KEY=VALUE`` items as method options (checked against the method's)."""
    import yaml

    from scoregen.sampling.inverse import METHODS

    opts: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, opt = key.strip().rpartition(".")
        if not sep or not dot:
            raise ValueError(f"--opt {item!r} must look like method.key=value, e.g. "
                             "dps.zeta=0.1")
        known = METHODS.get(name).options
        if opt not in known:
            raise ValueError(f"--opt {item!r}: method {name} has no option {opt!r}; its "
                             f"options: {', '.join(known) or '(none)'}")
        opts.setdefault(name, {})[opt] = yaml.safe_load(value)
    return opts


def _observed(problem):
    """The observation as an image: ``A^+ y`` (``A^T y`` without an SVD)."""
    op = problem.operator
    svd = op.svd
    if svd is None:
        return op.AT(problem.y).float()
    return svd.v(svd.pinv_coords(problem.y)).float()
