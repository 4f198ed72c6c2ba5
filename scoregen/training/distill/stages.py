"""The two kinds of work a student is made of: training stages and generated pairs.

A **training stage** is a training run in its own folder (:func:`train_stage`), with every rule
of ``scoregen train``: the folder's lock, fresh or resumed from its newest checkpoint
(bit-identical to an uninterrupted run: the trainer's keyed batches, the objective's state in
the checkpoints), safetensors checkpoints, the divergence guard, a wall-clock limit, ``log.csv``,
sample previews and the progress bar (:class:`~scoregen.training.trainer.Trainer`). What differs
from ``scoregen train``: the objective gets a teacher, the model may start from given weights,
and the data may be given as a tensor (coupled pairs).

**Pairs** (:func:`make_pairs`) are a model's probability-flow ODE from per-sample noise: ``z``
is draw 0 of seed ``seed + k`` (:class:`~scoregen.sampling.noise.NoiseSource`, what
``scoregen.sample`` draws), ``x0`` what the registered sampler makes of the prior sample
``prior_from_normal(z)``; the counted NFE times the number of pairs is their cost. They are
written once, atomically, as ``pairs_<stage>.safetensors`` (a killed generation is redone,
identically).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from scoregen.infra import outputs
from scoregen.models.prediction import Model
from scoregen.sde.base import SDE


@dataclass
class StageResult:
    """What a training stage did: the step reached, its wall time in this call, the teacher's
    evaluations (rows, over the whole stage) and why it stopped early (``None``: its steps)."""

    step: int
    seconds: float
    teacher_rows: int
    stopped: str | None


def train_stage(folder: Path, cfg: Any, *, data: Tensor, teacher: Model | None = None,
                init: dict[str, Tensor] | None = None, resume: bool = False,
                progress: bool = True, max_seconds: float = 0.0,
                clock: Callable[[], float] | None = None,
                sample_fn: Callable[[Any, int], Any] | None = None) -> StageResult:
    """Train one stage in ``folder`` (module docstring) from the validated config ``cfg``.

    ``init``: the network's starting weights (a fresh stage only); ``resume``: continue from
    the folder's newest checkpoint if it has one; ``max_seconds``: this call's budget (0:
    none) on ``clock`` (default: wall time; ``time.process_time`` for CPU time).
    """
    from scoregen.models import ScoreModel, build_network
    from scoregen.sde import get as get_sde
    from scoregen.training.checkpoint import find_checkpoint
    from scoregen.training.objectives import OBJECTIVES, build_objective
    from scoregen.training.run_folder import RunLock, clean_leftovers, has_checkpoints, prepare
    from scoregen.training.trainer import Trainer, TrainOptions

    # the student's own lock makes this process the only writer: a stage lock left by a
    # killed run is stale by construction
    lock = RunLock(folder).acquire(break_stale=True)
    try:
        clean_leftovers(folder)
        prepare(folder, "resume" if resume else "fresh")
        sde = get_sde(cfg.sde.name, **cfg.sde.options)
        torch.manual_seed(cfg.train.seed)
        pairs = OBJECTIVES.meta(cfg.objective.name).get("data") == "pairs"
        net = build_network(cfg.model.network, tuple(data.shape[2 if pairs else 1:]),
                            **cfg.model.options)
        model = ScoreModel(net, sde, cfg.model.prediction, cfg.model.sigma_data)
        if init is not None:
            model.load_state_dict(init)
        objective = build_objective(cfg.objective.name, sde, teacher=teacher,
                                    **cfg.objective.options)
        options = TrainOptions.from_dict({**asdict(cfg.train), "progress": progress,
                                          "max_seconds": max_seconds})
        trainer = Trainer(model, data, objective, options, folder, cfg.to_dict(), sample_fn)
        trainer.lock = lock
        if clock is not None:
            trainer.clock = clock
        if resume and has_checkpoints(folder):
            trainer.resume(find_checkpoint(folder))
        outputs.write_text(folder / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False),
                           kind="run")
    except BaseException:
        lock.release()
        raise
    result = trainer.fit()  # releases the lock
    rows = sum(int(b) for n, b in trainer.objective.named_buffers() if n.endswith("teacher_rows"))
    return StageResult(result.step, result.seconds, rows, result.stopped)


def make_pairs(model: Model, sde: SDE, shape: tuple[int, ...], n: int, *, seed: int,
               sampler: str,
               nfe: int | None = None, ts: Tensor | None = None, batch: int = 1000,
               options: dict[str, Any] | None = None, progress: bool = True
               ) -> tuple[Tensor, int]:
    """``(pairs (n, 2, *D), rows)``: ``pairs[k] = (x0_k, z_k)`` (module docstring; ``D =
    shape``), by the registered ``sampler`` at the NFE budget ``nfe`` or on the grid ``ts``;
    ``rows`` is the counted NFE summed over the pairs."""
    from scoregen.sampling.api import sample
    from scoregen.sampling.noise import NoiseSource, seeds_for

    out: list[Tensor] = []
    rows = 0
    for start in tqdm(range(0, n, batch), desc="pairs", disable=not progress, leave=False):
        seeds = seeds_for(min(batch, n - start), seed + start)
        z = NoiseSource(seeds, sde.state_shape(tuple(shape)), torch.float32).draw(0)
        res = sample(model, sde, sde.prior_from_normal(z), sampler, None, nfe=nfe, ts=ts,
                     seeds=seeds, **(options or {}))
        out.append(torch.stack([res.x.float().cpu(), z], 1))
        rows += res.nfe * len(z)
    return torch.cat(out), rows


def save_pairs(path: Path, pairs: Tensor, meta: dict[str, Any]) -> None:
    """Write pairs and their description (strings) atomically as safetensors, as a file of
    the student folder (:func:`scoregen.infra.outputs.replacing`, kind ``student``)."""
    with outputs.replacing(path, kind="student", what="pairs") as (tmp,):
        save_file({"pairs": pairs.contiguous()}, str(tmp),
                  metadata={k: str(v) for k, v in meta.items()})


def load_pairs(path: Path) -> Tensor:
    return load_file(str(path))["pairs"]


__all__ = ["StageResult", "load_pairs", "make_pairs", "save_pairs", "train_stage"]
