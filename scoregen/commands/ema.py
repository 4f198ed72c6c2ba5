"""Reconstruct post-hoc EMA weights of any width from a run's power-EMA snapshots (EDM2).

The run must have been trained with ``train.ema_sigma_rel`` (e.g. ``[0.05, 0.1]``), which
writes ``RUN/ema_snapshots/``. Each width becomes a checkpoint, by default
``RUN/ema/sigma_rel_0.100``, that every command loads like a run (``scoregen sample
RUN/ema/sigma_rel_0.100``, ``evaluate``, ``compare --checkpoint``). Examples::

    scoregen ema runs/digits_phema --sigma-rel 0.05,0.1,0.2
    scoregen ema runs/digits_phema --sigma-rel 0.15 --step 2000 --out runs/phema_015_at_2000
"""

from __future__ import annotations

import argparse

from scoregen.commands._args import floats as _floats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder trained with train.ema_sigma_rel")
    parser.add_argument("--sigma-rel", type=_floats, required=True,
                        help="widths to reconstruct, comma-separated, each in (0, 0.2886)")
    parser.add_argument("--step", type=int,
                        help="end of the average (default: the last snapshot)")
    parser.add_argument("--out", help="checkpoint folder (one width only; default "
                                      "RUN/ema/sigma_rel_<width>)")


def run(args: argparse.Namespace) -> int:
    from scoregen.training.posthoc_ema import write_reconstruction

    if args.out is not None and len(args.sigma_rel) != 1:
        raise ValueError("--out names one checkpoint folder: give one --sigma-rel with it")
    for width in args.sigma_rel:
        path, info = write_reconstruction(args.run, width, args.step, args.out)
        print(f"sigma_rel {width:g} (gamma {info['gamma']:.2f}) at step {info['step']}: "
              f"{info['snapshots']} snapshots, profile fit error {info['fit_error']:.2e} -> "
              f"{path}")
    return 0
