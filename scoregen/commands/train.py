"""Train a score model from a config file (YAML, TOML or JSON).

Writes into the run folder (``train.out``, or ``--out``): ``config.yaml``, ``log.csv``,
``checkpoints/`` and ``samples/``. A run folder holds one run: a fresh run refuses a folder
that already holds one (``--resume`` continues it, ``--overwrite`` deletes what scoregen wrote
in it and starts again), a folder scoregen did not make a run folder is never used as one,
and a lock keeps a second process out (docs/training.md, "Run folders"; docs/outputs.md).
Examples::

    scoregen train configs/toy2d.yaml
    scoregen train configs/toy2d.yaml --steps 200 --out runs/try --set train.lr=1e-3
    scoregen train configs/toy2d.yaml --out runs/try --steps 400 --resume
    scoregen train configs/digits.yaml --time-limit 10m
    torchrun --standalone --nproc_per_node=2 -m scoregen train configs/digits.yaml --out runs/ddp
"""

from __future__ import annotations

import argparse
import re
import signal
import sys

from scoregen.commands._args import seed_int
from scoregen.training.config import load_config

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``10m``, ``1.5h`` (a ``ValueError`` otherwise)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(s|m|min|h)?\s*", text,
                         re.IGNORECASE)
    if match is None:
        raise ValueError(f"--time-limit {text!r} is not a duration; use e.g. 90s, 10m or 1.5h")
    seconds = float(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    if not seconds > 0:
        raise ValueError(f"--time-limit must be > 0, got {text!r}")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config file (.yaml, .toml, .json)")
    parser.add_argument("--steps", type=int, help="training steps (train.steps)")
    parser.add_argument("--out", help="run folder (train.out)")
    parser.add_argument("--device", help="auto, cpu, cuda[:N] (train.device)")
    parser.add_argument("--seed", type=seed_int, help="seed (train.seed)")
    parser.add_argument("--time-limit", metavar="DURATION",
                        help="stop cleanly with a checkpoint after this wall time, e.g. 10m "
                             "(train.max_seconds)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        dest="overrides", help="override a config key, e.g. train.lr=1e-3 "
                        "(repeatable)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue the run in the folder from its latest checkpoint (a "
                           "folder without one starts fresh)")
    mode.add_argument("--overwrite", action="store_true",
                      help="delete the files scoregen wrote for the run already in the folder "
                           "(nothing else) and start fresh")
    parser.add_argument("--break-lock", action="store_true",
                        help="take over a stale lock left by a run that was killed")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from scoregen.training import build_trainer, resolve_threads

    overrides = list(args.overrides)
    for key, value in (("steps", args.steps), ("out", args.out), ("device", args.device),
                       ("seed", args.seed)):
        if value is not None:
            overrides.append(f"train.{key}={value}")
    if args.time_limit is not None:
        overrides.append(f"train.max_seconds={parse_duration(args.time_limit)}")
    cfg = load_config(args.config, overrides)
    # SIGTERM (kill, a job scheduler) unwinds like Ctrl-C, so the run folder's lock is released
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    threads, source = resolve_threads(cfg.train.threads)
    trainer = build_trainer(cfg, progress=not args.no_progress, resume=args.resume,
                            overwrite=args.overwrite, break_lock=args.break_lock)
    out = cfg.train.out
    main = trainer.ctx.is_main  # under torchrun, rank 0 reports
    say = print if main else (lambda *_, **__: None)
    if trainer.kept:
        names = ", ".join(str(p) for p in trainer.kept[:5])
        more = f" and {len(trainer.kept) - 5} more" if len(trainer.kept) > 5 else ""
        say(f"--overwrite kept {len(trainer.kept)} file(s) scoregen did not write: {names}{more}")
    if trainer.step:
        say(f"resuming {out} from step {trainer.step}")
        for line in trainer.resume_changes:
            say(f"  changed on resume: {line}")
    elif args.resume:
        say(f"nothing to resume in {out}: starting fresh")
    if trainer.step >= cfg.train.steps:
        trainer.lock.release()
        say(f"{out} is already at step {trainer.step} (checkpoint {trainer.last_checkpoint});"
              f" --steps {cfg.train.steps} is not beyond it, so nothing was trained. Give "
              f"--steps > {trainer.step} to train further.")
        return 0
    say(f"training {out} to step {cfg.train.steps} on {trainer.device} with {threads} "
          f"thread(s) ({source})")
    result = trainer.fit()
    trained = result.step - result.start_step
    how = (f"stopped at the time limit ({cfg.train.max_seconds:g} s) at step {result.step} of "
           f"{cfg.train.steps}; continue with --resume" if result.stopped else
           f"reached step {result.step}")
    say(f"trained {trained} steps in {result.seconds:.1f} s ({result.examples_per_s:.0f} "
          f"examples/s, last loss {result.loss:.4f}); {how}; checkpoint: {result.checkpoint}")
    return 0
