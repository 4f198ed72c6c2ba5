"""Distil a teacher into a few-step student (progressive, consistency, reflow).

The teacher is a run or checkpoint folder, an exact mixture preset (with ``--sde``) or
``--model module:function``. The student is a folder (``--out``) with ``student.json`` and one
run folder per training stage; it follows the rules of a training run (lock, ``--resume``
after a kill, ``--overwrite``, ``--time-limit`` for the whole distillation) and samples at its
own NFE (``scoregen sample STUDENT --nfe 2``, ``scoregen compare --students``). Examples::

    scoregen distill runs/digits --method consistency --out runs/digits_cd --time-limit 10m
    scoregen distill runs/digits --method progressive --out runs/digits_pd  # rounds 64 -> 1
    scoregen distill runs/digits --method consistency-training --out runs/digits_ect
    scoregen distill runs/flow --method reflow --out runs/flow_rf   # pairs, retrain, distil
    scoregen distill ring8 --sde vp --method consistency --out runs/ring8_cd  # exact teacher
    scoregen distill ring8 --method progressive --opt start_steps=32 --set train.steps=500

``--opt key=value`` sets a method option (``scoregen list methods``); ``--set section.key=value``
sets a key of every training stage's config (``train.lr``, ``train.batch_size``,
``model.width``, ``objective.target_ema``, ...). docs/distillation.md has the formulas.
"""

from __future__ import annotations

import argparse
import signal
import sys

import yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scoregen.commands._model import MODEL_HELP

    parser.add_argument("teacher", nargs="?", help="run or checkpoint folder, or an exact "
                        "preset (ring8, mix16, mix64)")
    parser.add_argument("--model", metavar="MODULE:FUNCTION", help=f"the teacher: {MODEL_HELP}")
    parser.add_argument("--method", required=True,
                        help="progressive, consistency, consistency-training or reflow")
    parser.add_argument("--out", required=True, help="the student's folder")
    parser.add_argument("--sde", help="process of a preset teacher (default vp); re-targets "
                        "another teacher")
    parser.add_argument("--steps", type=int, help="optimizer steps of each training stage "
                        "(train.steps)")
    parser.add_argument("--time-limit", metavar="DURATION",
                        help="wall-clock budget of the whole distillation, e.g. 10m; each "
                             "training stage stops at its share")
    parser.add_argument("--cpu-limit", metavar="DURATION",
                        help="the same budget in CPU time of the process (all threads), for a "
                             "machine shared with other work")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="a method option, e.g. start_steps=32 (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        dest="overrides", help="a key of every stage's config, e.g. "
                        "train.lr=1e-4 (repeatable)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (0: OMP_NUM_THREADS when set, else the cores)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue the student in --out (finished stages are kept)")
    mode.add_argument("--overwrite", action="store_true",
                      help="delete the student in --out and start again")
    parser.add_argument("--break-lock", action="store_true",
                        help="take over a stale lock left by a killed distillation")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _options(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--opt {item!r} must look like key=value, e.g. start_steps=32")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from scoregen.commands.train import parse_duration
    from scoregen.training import resolve_device, resolve_threads
    from scoregen.training.distill import distill

    if (args.teacher is None) == (args.model is None):
        raise ValueError("give the teacher: a run folder or preset, or --model "
                         "module:function (exactly one of them)")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    device = str(resolve_device(args.device))
    threads, source = resolve_threads(args.threads)
    torch.set_num_threads(threads)
    limit = parse_duration(args.time_limit) if args.time_limit is not None else None
    cpu = parse_duration(args.cpu_limit) if args.cpu_limit is not None else None
    # SIGTERM unwinds like Ctrl-C, so the student's lock is released
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    print(f"distilling {args.teacher or args.model} by {args.method} into {args.out} on "
          f"{device} with {threads} thread(s) ({source})")
    student = distill(args.teacher or args.model, args.method, args.out, sde=args.sde,
                      options=_options(args.opt), overrides=args.overrides, steps=args.steps,
                      time_limit=limit, cpu_limit=cpu, resume=args.resume, overwrite=args.overwrite,
                      break_lock=args.break_lock, progress=not args.no_progress,
                      device=device)
    spent = [s for s in student.record["stages"] if s["kind"] != "measure"]
    total = {k: sum(float(s.get(k, 0) or 0) for s in spent)
             for k in ("teacher_rows", "steps", "seconds", "cpu_seconds")}
    print(f"done: {total['steps']:.0f} optimizer steps, {total['teacher_rows']:.3g} teacher "
          f"evaluations (summed over examples), {total['seconds']:.0f} s of training and "
          f"generation, {total['cpu_seconds']:.0f} s of CPU; sample it with `scoregen sample "
          f"{args.out} --nfe N`")
    return 0
