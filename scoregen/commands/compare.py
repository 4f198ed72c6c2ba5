"""Compare samplers (and peer libraries) by quality versus counted NFE on one problem.

By default the exact Gaussian-mixture oracle (preset ring8 under VP) with every registered
sampler at NFE budgets 5, 10, 20, 50, 100, 1000 (budgets above 100 only for one-NFE-per-step
samplers); self-stepping samplers run at tolerances. Writes results.md, results.csv,
results.json, quality_vs_nfe.png and samples_nfe<B>.png into --out. Examples::

    scoregen compare
    scoregen compare --preset mix64 --samplers ddim,heun --budgets 10,20,50
    scoregen compare --sde ddpm --peers            # with diffusers and k-diffusion
    scoregen compare --checkpoint runs/toy2d --reference test.npz
    scoregen compare --preset ring8 --guidance 1,2,4,8   # classifier-free guidance, exact
    torchrun --standalone --nproc_per_node=2 -m scoregen compare --checkpoint runs/ddp

With ``--guidance``, every sampler (and peer) runs under classifier-free guidance on the
exact class-conditional oracle, at each scale, against a dopri5 solve of the guided PF-ODE
from the same noise; ``OUT/guidance_<w>/`` holds each scale's tables and ``OUT/guidance.md``
the summary (endpoint error and class accuracy per sampler, scale and budget).

Under ``torchrun`` every run's samples are shared out over the processes (sample ``k`` on
rank ``k mod world``, from its own seed) and gathered on rank 0, which scores and writes.
"""

from __future__ import annotations

import argparse
from typing import Any

from scoregen.commands._args import floats as _floats
from scoregen.commands._args import ints as _ints
from scoregen.commands._args import names as _names

_DTYPES = {"float32": "float32", "float64": "float64"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scoregen.evaluation.compare import DEFAULT_BUDGETS, DEFAULT_TOLERANCES

    src = parser.add_argument_group("problem")
    src.add_argument("--preset", default="ring8", metavar="NAME[:KEY=VALUE,...]",
                     help="oracle mixture: ring8, mix16, mix64, with parameters e.g. "
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
    parser.add_argument("--peers", nargs="?", const="all", type=str,
                        help="also run peer libraries' samplers: all, or a comma-separated list "
                             "(e.g. diffusers/ddim,k-diffusion/euler)")
    parser.add_argument("--budgets", type=_ints, default=list(DEFAULT_BUDGETS),
                        help="NFE budgets (default %(default)s)")
    parser.add_argument("--tolerances", type=_floats,
                        help="tolerances of self-stepping samplers (default: each sampler's "
                             f"registered ones, else {list(DEFAULT_TOLERANCES)})")
    parser.add_argument("--max-multi-nfe", type=int, default=100,
                        help="samplers with >1 NFE per step skip budgets above this "
                             "(0: no limit; default %(default)s)")
    parser.add_argument("-n", type=int, default=2000, help="samples per run (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="sample k uses seed + k")
    parser.add_argument("--spacing", default="auto",
                        help="time grid of scoregen samplers: auto (the SDE's tuned default), "
                             "uniform, quadratic, logsnr, edm, or tuned (grids fitted by "
                             "`scoregen tune-grid`, see --grids)")
    parser.add_argument("--grids", help="tuned grids for --spacing tuned: a folder or .json "
                        "(default for --checkpoint: its checkpoint folder)")
    parser.add_argument("--opt", action="append", default=[], metavar="SAMPLER.KEY=VALUE",
                        help="a sampler option, e.g. ddim.eta=1.0 (repeatable)")
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
    if args.n < 2:
        raise ValueError(f"-n must be at least 2 samples, got {args.n}")
    for flag, value in (("--max-multi-nfe", args.max_multi_nfe), ("--show-nfe", args.show_nfe)):
        if value is not None and value < (0 if flag == "--max-multi-nfe" else 1):
            raise ValueError(f"{flag} must be {'>= 0' if flag == '--max-multi-nfe' else '>= 1'}"
                             f", got {value}")
    if args.tolerances is not None and not all(tol > 0 for tol in args.tolerances):
        raise ValueError(f"--tolerances must be positive numbers, got {args.tolerances}")
    if args.device != "auto":
        from scoregen.training import resolve_device

        resolve_device(args.device)
    ctx = distributed.setup("cpu" if args.device == "auto" and not (args.checkpoint or args.model)
                            else args.device)
    if args.n < ctx.world:
        raise ValueError(f"-n {args.n} is fewer samples than the {ctx.world} processes")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    if args.guidance:
        if args.checkpoint or args.model:
            raise ValueError("--guidance runs on the exact oracle (--preset); it does not take "
                             "--checkpoint or --model")
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
    methods = compare.scoregen_methods(args.samplers, args.spacing, _options(args.opt), grids)
    peer_messages: list[str] = []
    if args.peers:
        from scoregen.evaluation import peers
        names = None if args.peers == "all" else _names(args.peers)
        found, peer_messages = peers.peer_methods(names, problem.sde)
        for line in peer_messages if ctx.is_main else ():
            print(line)
        methods += found
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


def _methods(args: argparse.Namespace, sde: Any) -> list[Any]:
    from scoregen.evaluation import compare

    grids = _tuned_grids(args) if args.spacing == "tuned" else None
    methods = compare.scoregen_methods(args.samplers, args.spacing, _options(args.opt), grids)
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
    summary = Path(args.out) / "guidance.md"
    summary.write_text(compare.guidance_summary(comps))
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
