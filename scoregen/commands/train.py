"""Train a score model from a config file (YAML, TOML or JSON).

Writes into the run folder (``train.out``, or ``--out``): ``config.yaml``, ``log.csv``,
``checkpoints/`` and ``samples/``. Examples::

    scoregen train configs/toy2d.yaml
    scoregen train configs/toy2d.yaml --steps 200 --out runs/try --set train.lr=1e-3
    scoregen train configs/toy2d.yaml --out runs/try --steps 400 --resume
    torchrun --standalone --nproc_per_node=2 -m scoregen train configs/digits.yaml --out runs/ddp
"""

from __future__ import annotations

import argparse

from scoregen.training.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config file (.yaml, .toml, .json)")
    parser.add_argument("--steps", type=int, help="training steps (train.steps)")
    parser.add_argument("--out", help="run folder (train.out)")
    parser.add_argument("--device", help="auto, cpu, cuda[:N] (train.device)")
    parser.add_argument("--seed", type=int, help="seed (train.seed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        dest="overrides", help="override a config key, e.g. train.lr=1e-3 "
                        "(repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run folder's latest checkpoint if there is one")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from scoregen.training import build_trainer

    overrides = list(args.overrides)
    for key, value in (("steps", args.steps), ("out", args.out), ("device", args.device),
                       ("seed", args.seed)):
        if value is not None:
            overrides.append(f"train.{key}={value}")
    cfg = load_config(args.config, overrides)
    trainer = build_trainer(cfg, progress=not args.no_progress, resume=args.resume)
    main = trainer.ctx.is_main  # under torchrun, rank 0 reports
    if trainer.step and main:
        print(f"resuming {cfg.train.out} from step {trainer.step}")
    result = trainer.fit()
    if main:
        print(f"trained {result.step} steps in {result.seconds:.1f} s "
              f"({result.examples_per_s:.0f} examples/s, last loss {result.loss:.4f}); "
              f"checkpoint: {result.checkpoint}")
    return 0
