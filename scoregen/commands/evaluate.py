"""Evaluate a model: held-out likelihood (bits/dim or nats) by two estimators, and sample metrics.

The likelihood of the held-out split through the probability-flow ODE (exact trace up to
16 dimensions, else Hutchinson with --probes probes; adaptive dopri5 at --rtol/--atol)
and the variational bound of the SDE (--bound-times importance-sampled log-SNR draws per
example), each with its standard error and NFE; image data are dequantized at the
dataset's own bit depth and reported in bits/dim (docs/metrics.md). Sample metrics compare
-n samples of --sampler/--steps with the held-out split. Writes JSON and a markdown table
(--out, default RUN/eval/evaluation.json; checked before the evaluation, both written together,
atomically, and only over files scoregen wrote: docs/outputs.md). Examples::

    scoregen evaluate runs/digits
    scoregen evaluate runs/toy --metrics nll,swd --n 2000 --out runs/toy/eval.json
    scoregen evaluate --model mypkg.models:make_model --data digits --metrics bound,fd_digits
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scoregen.commands._args import names as _names
from scoregen.commands._args import positive_int, seed_int
from scoregen.commands._model import add_model_argument, load_source
from scoregen.commands.sample import sampler_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", help="run or checkpoint folder")
    add_model_argument(parser)
    parser.add_argument("--data", help="dataset of the held-out split (default: the run's)")
    parser.add_argument("--split", default="test", choices=("test", "train"),
                        help="held-out split (default %(default)s)")
    parser.add_argument("--metrics", type=_names,
                        help="comma-separated: nll (ODE), bound, and sample metrics (swd, mmd, "
                             "energy, fd_digits, nll_gap, mode_tv); default: nll,bound,swd,mmd "
                             "plus fd_digits on digits and nll_gap,mode_tv on mixtures")
    parser.add_argument("--n", "-n", type=positive_int, default=1000,
                        help="held-out examples (at most the split) and samples (default "
                             "%(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="default %(default)s")
    parser.add_argument("--levels", type=int,
                        help="grey levels of discrete data (default: the dataset's own, 17 for "
                             "digits, 256 for mnist/images; 0: continuous, nats)")
    lik = parser.add_argument_group("likelihood")
    lik.add_argument("--divergence", default="auto", choices=("auto", "exact", "hutchinson"),
                     help="trace of the ODE's Jacobian (auto: exact up to 16 dimensions)")
    lik.add_argument("--probes", type=positive_int, default=1, help="Hutchinson probes per example")
    lik.add_argument("--rtol", type=float, default=1e-5, help="ODE solver rtol (%(default)s)")
    lik.add_argument("--atol", type=float, default=1e-5, help="ODE solver atol (%(default)s)")
    lik.add_argument("--bound-times", type=positive_int, default=16,
                     help="log-SNR draws per example for the bound (%(default)s)")
    smp = parser.add_argument_group("samples")
    smp.add_argument("--sampler", help="sampler for the sample metrics (default: the run's)")
    smp.add_argument("--steps", type=positive_int,
                     help="sampler steps (default: the run's, else 50)")
    smp.add_argument("--spacing", default="auto", help="time grid (default %(default)s)")
    smp.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                     help="sampler option, e.g. eta=1.0 (repeatable)")
    parser.add_argument("--sde", metavar="NAME[:KEY=VALUE,...]", help="evaluate under another "
                        "SDE (re-targeted by log-SNR), e.g. ve:sigma_min=0.002,sigma_max=80")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="example / sample k uses seed + k")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    parser.add_argument("--out", help="JSON output (a .md table is written beside it)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def report_paths(out: Path) -> tuple[Path, Path]:
    """``(json, md)`` of ``--out``, checked as outputs before the work."""
    from scoregen.infra import outputs

    outputs.check_target(out, (".json",), what="--out")
    md = out.with_suffix(".md")
    outputs.check_target(md, what="--out")
    return out, md


def default_metrics(data: str, kind: str, scalar_kernel: bool = True) -> list[str]:
    """nll, bound (scalar kernels), swd, mmd; plus fd_digits on digits, nll_gap and mode_tv
    on mixtures."""
    extra = {"digits": ["fd_digits"]}.get(data, ["nll_gap", "mode_tv"] if kind == "mixture"
                                                 else [])
    return ["nll", *(["bound"] if scalar_kernel else []), "swd", "mmd", *extra]


def run(args: argparse.Namespace) -> int:
    from scoregen.data import DATASETS, load_dataset
    from scoregen.evaluation.dequantize import levels_for
    from scoregen.evaluation.evaluate import (
        ESTIMATORS,
        LikelihoodOptions,
        SampleSettings,
        run_evaluation,
    )
    from scoregen.evaluation.metrics import METRICS
    from scoregen.models.analytic import preset
    from scoregen.training import resolve_device

    for flag, value in (("--rtol", args.rtol), ("--atol", args.atol)):
        if not value > 0:  # NaN too
            raise ValueError(f"{flag} must be a positive number, got {value}")
    device = resolve_device(args.device)
    if args.out:
        report_paths(Path(args.out))  # checked before the work
    src = load_source(args.path, args.model, ema=not args.no_ema, device=device, sde=args.sde)
    if hasattr(src.model, "sampling_plan"):
        raise ValueError(f"{src.name} is a distilled student: its likelihood is not defined by "
                         "a score; compare its samples with `scoregen compare --checkpoint "
                         "TEACHER --students ...`")
    if args.out:
        out = Path(args.out)
    elif src.run_dir is not None:
        out = src.run_dir / "eval" / "evaluation.json"
    else:
        out = Path("evaluation.json")
    report_paths(out)
    data = args.data or src.data
    if data is None:
        raise ValueError("no dataset to evaluate on: give --data NAME (`scoregen list datasets`)")
    options = src.data_options if data == src.data else {}
    held_out = load_dataset(data, args.split, **options)
    reference2 = load_dataset(data, "train" if args.split == "test" else "test", **options)
    if src.shape is not None and tuple(held_out.shape[1:]) != src.shape:
        raise ValueError(f"dataset {data!r} has examples of shape {tuple(held_out.shape[1:])}, "
                         f"the model makes {src.shape}")
    kind = DATASETS.meta(data)["kind"]
    mixture = preset(options.get("preset", "ring8")) if kind == "mixture" else None
    from scoregen.sde.base import SCALAR_KERNEL

    names = args.metrics or default_metrics(data, kind, SCALAR_KERNEL in src.sde.capabilities)
    known = [*ESTIMATORS, *METRICS.list()]
    unknown = [m for m in names if m not in known]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(known)}")
    defaults = src.sample
    sampler = args.sampler or (defaults.sampler if defaults else "ddim")
    steps = args.steps
    if steps is None:
        steps = defaults.steps if defaults and sampler == defaults.sampler else 50
    opts = dict(defaults.options) if defaults and sampler == defaults.sampler else {}
    opts.update(sampler_options(sampler, args.opt))
    report = run_evaluation(
        src.model, src.sde, held_out, source=src.name,
        data_info={"name": data, "options": options, "split": args.split},
        estimators=tuple(m for m in names if m in ESTIMATORS),
        metrics=tuple(m for m in names if m not in ESTIMATORS), n=args.n,
        batch_size=args.batch_size, quantization=levels_for(data, args.levels),
        options=LikelihoodOptions(divergence=args.divergence, n_probes=args.probes,
                                  rtol=args.rtol, atol=args.atol, bound_times=args.bound_times,
                                  seed=args.seed),
        sampling=SampleSettings(sampler, steps, args.spacing, opts), reference2=reference2,
        mixture=mixture, device=device, progress=not args.no_progress)
    json_path, md_path = report.write(out)
    print(report.markdown())
    print(f"wrote {json_path} and {md_path}")
    return 0
