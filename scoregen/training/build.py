"""A run from a validated config: data, SDE, model, objective, trainer and the run folder.

:func:`build_trainer` assembles a :class:`~scoregen.training.trainer.Trainer` from a
:class:`~scoregen.training.config.Config` and applies the run folder's rules
(:mod:`scoregen.training.run_folder`); :func:`make_sample_fn` gives the trainer its sample
previews (``samples/step_XXXXXX.png``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scoregen.infra import distributed, outputs
from scoregen.infra.outputs import OutputError
from scoregen.models import NoisyClassifier, ScoreModel
from scoregen.training.checkpoint import find_checkpoint
from scoregen.training.device import resolve_threads
from scoregen.training.run_folder import (
    RunLock,
    clean_leftovers,
    has_checkpoints,
    is_run,
    prepare,
)
from scoregen.training.trainer import Trainer, TrainOptions


def make_sample_fn(cfg: Any, out_dir: Path, reference: Tensor | None = None,
                   device: torch.device | str = "cpu") -> Callable[[ScoreModel, int], Path]:
    """``fn(model, step)`` that samples with ``cfg.sample`` and writes
    ``out_dir/samples/step_XXXXXX.png`` (a warning instead when that file may not be written,
    e.g. it was edited by hand: :mod:`scoregen.infra.outputs`)."""
    from scoregen.infra.plotting import save_samples
    from scoregen.sampling.api import sample

    def fn(model: ScoreModel, step: int) -> Path | None:
        shape = (cfg.sample.n, *model.network.spec["shape"])
        classes = model.num_classes
        cond = None if classes is None else torch.arange(cfg.sample.n) % classes
        res = sample(model, model.sde, shape, cfg.sample.sampler, cfg.sample.steps,
                     spacing=cfg.sample.spacing, seed=cfg.sample.seed, device=device,
                     cond=cond, **cfg.sample.options)
        title = f"step {step}: {cfg.sample.sampler}, {res.nfe} NFE"
        try:
            return save_samples(res.x, out_dir / "samples" / f"step_{step:06d}.png", title,
                                reference=reference)
        except OutputError as err:  # a preview is not worth stopping the run for
            warnings.warn(f"sample preview not written: {err}", stacklevel=2)
            return None

    return fn


def is_classifier(cfg: Any) -> bool:
    """Whether the config trains a noise-conditional classifier (a network of kind
    ``classifier``) rather than a score model."""
    from scoregen.models import NETWORKS

    return NETWORKS.meta(cfg.model.network).get("kind") == "classifier"


def build_trainer(cfg: Any, out_dir: str | Path | None = None, progress: bool = True,
                  resume: bool = False, *, overwrite: bool = False,
                  break_lock: bool = False) -> Trainer:
    """A :class:`Trainer` for a validated :class:`scoregen.training.config.Config`.

    Takes the run folder's lock (held until the end of :meth:`Trainer.fit`; ``break_lock``
    takes over a stale one), applies the run-folder rule (fresh: the folder must not hold a
    run; ``resume``: continue from its latest checkpoint if there is one; ``overwrite``:
    delete the files scoregen wrote in it first, listed as kept in ``trainer.kept`` those it
    did not), removes temporary leftovers of killed writers, seeds the model init with
    ``train.seed`` and writes ``out_dir/config.yaml``. See :mod:`scoregen.training.run_folder`.
    """
    from scoregen.data import load_dataset
    from scoregen.data.loader import item_shape, open_dataset
    from scoregen.models import build_network
    from scoregen.sde import get as get_sde
    from scoregen.training.config import save_config
    from scoregen.training.objectives import build_objective, needs_teacher

    if needs_teacher(cfg.objective.name):
        raise ValueError(f"objective {cfg.objective.name!r} distils a teacher: run `scoregen "
                         "distill TEACHER --method ...` (or scoregen.distill) instead of train")
    out = Path(out_dir if out_dir is not None else cfg.train.out)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: continue the run, or "
                         "replace it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"run folder {out} is a file; choose another --out folder")
    ctx = distributed.setup(cfg.train.device)
    device = ctx.device
    torch.set_num_threads(resolve_threads(cfg.train.threads)[0])
    # rank 0 owns the run folder: lock, leftovers, the fresh/resume/overwrite rule
    lock = RunLock(out).acquire(break_stale=break_lock) if ctx.is_main else None
    kept: list[Path] = []
    try:
        if ctx.is_main:
            mode = "resume" if resume else "overwrite" if overwrite else "fresh"
            if is_run(out):
                clean_leftovers(out)
            kept = prepare(out, mode)
            outputs.check_target(out / "config.yaml", (".yaml",), kind="run", what="run config")
        distributed.barrier()
        conditional = bool(cfg.model.options.get("num_classes"))
        read = open_dataset if cfg.data.stream and not conditional else load_dataset
        extra = {"labels": True} if conditional else {}
        data = read(cfg.data.name, "train", **extra, **cfg.data.options)
        data, labels = data if conditional else (data, None)
        sde = get_sde(cfg.sde.name, **cfg.sde.options)
        torch.manual_seed(cfg.train.seed)
        shape = item_shape(data)
        state = sde.state_shape(shape)  # an augmented process feeds the network its state
        net_options = {**cfg.model.options, **({"in_shape": list(state)} if state != shape
                                               else {})}
        try:
            net = build_network(cfg.model.network, shape, **net_options)
        except (RuntimeError, TypeError, ValueError) as err:
            raise ValueError(f"model: cannot build network {cfg.model.network!r} for data of "
                             f"shape {shape} with options {cfg.model.options}: {err}") from None
        classifier = is_classifier(cfg)  # a noise-conditional classifier: logits, no samples
        model = (NoisyClassifier(net, sde, cfg.model.sigma_data) if classifier else
                 ScoreModel(net, sde, cfg.model.prediction, cfg.model.sigma_data))
        objective = build_objective(cfg.objective.name, sde, **cfg.objective.options)
        options = TrainOptions.from_dict({**asdict(cfg.train), "progress": progress,
                                          "workers": cfg.data.workers})
        if classifier:
            options.label_dropout, options.sample_every = 0.0, 0
        reference = (data[:2000] if isinstance(data, Tensor) else
                     torch.stack([data[i] for i in range(min(2000, len(data)))])
                     ) if shape == (2,) else None
        trainer = Trainer(model, data, objective, options, out, cfg.to_dict(),
                          None if classifier else make_sample_fn(cfg, out, reference, device),
                          labels=labels)
        trainer.lock = lock
        trainer.kept = kept
        if resume and has_checkpoints(out):
            trainer.resume(find_checkpoint(out))
        if trainer.writes:
            save_config(cfg, out / "config.yaml", kind="run")
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return trainer


__all__ = ["build_trainer", "is_classifier", "make_sample_fn"]
