"""Training: one readable loop (in the spirit of nanoGPT's ``train.py``) and its options.

Each step::

    lr    = lr_max * min(1, (step + 1) / warmup)                  linear warm-up, then constant
    batch = B examples k = 0..B-1: data index, u (-> t) and eps    keyed to (seed, step, k)
    loss  = objective(model, batch)                              a registered objective
    y     = null label if u' < label_dropout else y_k              class-conditional runs only
    AdamW step on grad clipped to norm grad_clip                   (Loshchilov & Hutter 2019)
    ema   = d * ema + (1 - d) * params,  d = min(ema_decay, (1 + step) / (10 + step))
    ema_i = b * ema_i + (1 - b) * params,  b = (1 - 1/step)^(gamma_i + 1)   post-hoc EMA widths

Every random draw of an example (its data index, ``t``, ``eps``) is a pure function of the
run's ``seed``, the step and the example's index ``k`` in the global batch
(:mod:`scoregen.training.batches`); the data are visited in epochs, each a permutation
seeded by ``(seed, epoch)``. A checkpoint holds the step and the position in that stream,
so a resumed run equals an uninterrupted one bit for bit (given deterministic kernels, e.g.
on the CPU), at any number of processes.

Several processes (``torchrun``, :mod:`scoregen.infra.distributed`): ``batch_size`` is the
global batch; rank ``r`` of ``W`` computes the slice ``k in [r B/W, (r+1) B/W)``, split again into
``accumulate`` micro-batches (gradients summed locally under DDP's ``no_sync``, averaged
over ranks once per step). The network is wrapped in DistributedDataParallel for the loss
only; the EMA reads the unwrapped module. Before each checkpoint the weights are compared
across ranks (:func:`scoregen.infra.distributed.check_consistency`); rank 0 alone writes
files (checkpoints, ``log.csv``, sample plots) and shows the progress bar. One process and ``W``
processes follow the same trajectory up to the order of floating-point sums.

The LR schedule depends on the step only, so it is the same whatever ``steps`` a run is
given. A NaN or infinite loss stops training with :class:`TrainingDivergedError`; checkpoints
written before it are kept. The divergence guard checks the weights before every save: weights
(or EMA weights) that are non-finite or larger than ``max_weight`` in absolute value are never
written, so the last checkpoint is always a finite one. ``max_seconds`` stops the run cleanly
(a checkpoint at the step reached) once that much wall time has passed. The run folder's rules
(exclusive lock, fresh/resume/overwrite, resume checks, ``log.csv`` truncated to the start
step) live in :mod:`scoregen.training.run_folder`. Mixed precision: bf16 autocast on CUDA
when ``precision`` is ``auto`` (off on the CPU) or ``bf16``. ``device="auto"`` picks CUDA when
available (the local rank's GPU under ``torchrun``). A run is assembled from a config by
:mod:`scoregen.training.build`.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from scoregen.infra import distributed
from scoregen.models import ScoreModel
from scoregen.sampling.noise import NoiseSource
from scoregen.training.batches import Batch, EpochOrder, draw_batch, local_slices
from scoregen.training.checkpoint import (
    CheckpointError,
    load_state,
    read_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from scoregen.training.config import TrainConfig
from scoregen.training.csv_log import CsvLog
from scoregen.training.device import resolve_precision
from scoregen.training.objectives import Objective
from scoregen.training.posthoc_ema import PowerEMA, prune_snapshots
from scoregen.training.run_folder import (
    RunLock,
    check_writer,
    claim,
    compare_model_configs,
    config_changes,
    truncate_log,
)


class TrainingDivergedError(RuntimeError):
    """The loss, gradients or weights became NaN, infinite or exploded; the message names the
    last finite checkpoint."""


@dataclass
class TrainOptions(TrainConfig):
    """Trainer options: the fields of the ``train`` config section
    (:class:`scoregen.training.config.TrainConfig`; ``out`` is not used by the trainer, which
    is given its run folder) plus ``progress``, whether to show a tqdm bar, and ``workers``,
    the ``DataLoader`` workers of a streamed dataset (``data.workers``)."""

    progress: bool = True
    workers: int = 2

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainOptions:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` leaves behind."""

    step: int
    loss: float
    seconds: float
    examples_per_s: float
    checkpoint: Path | None
    start_step: int = 0
    stopped: str | None = None  # why it stopped before ``steps`` ("time limit")


class _Loss(nn.Module):
    """Model and objective as one module, so DistributedDataParallel can wrap them:
    ``forward(batch)`` is ``objective(model, batch)`` on the raw model (which keeps its
    attributes)."""

    def __init__(self, model: ScoreModel, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Batch) -> Tensor:
        return self.objective(self.model, batch)


class Trainer:
    """Trains a :class:`ScoreModel` on data ``(N, *D)`` with an ``objective``.

    Args:
        model: the model to train (moved to the chosen device).
        data: training data in ``[-1, 1]``: a tensor (held on the device: the fast path) or
            a map-style ``torch.utils.data.Dataset`` of ``(*D)`` tensors, streamed through a
            ``DataLoader`` with ``options.workers`` worker processes
            (:func:`scoregen.data.loader.open_dataset`).
        objective: a registered :class:`~scoregen.training.objectives.Objective`
            (``objective(model, batch) -> scalar``); its own trainable parameters are
            optimized with the model's and its state is saved in checkpoints.
        options: :class:`TrainOptions`.
        out_dir: run folder for checkpoints, ``log.csv`` and plots (``None``: write nothing).
        run_config: stored in checkpoints (the validated config as a dict).
        sample_fn: ``sample_fn(ema_model, step)`` called every ``sample_every`` steps and at
            the end, on rank 0 (e.g. :func:`make_sample_fn`).
        labels: class labels ``(N,)`` of a class-conditional model; a fraction
            ``label_dropout`` (default 0.1) of each batch's labels becomes the null label.
    """

    def __init__(
        self,
        model: ScoreModel,
        data: Tensor | Dataset,
        objective: Objective,
        options: TrainOptions | None = None,
        out_dir: str | Path | None = None,
        run_config: dict[str, Any] | None = None,
        sample_fn: Callable[[ScoreModel, int], Any] | None = None,
        labels: Tensor | None = None,
    ) -> None:
        self.opt = options or TrainOptions()
        if self.opt.threads:  # 0: as the caller set it (build_trainer: from the environment)
            torch.set_num_threads(self.opt.threads)
        self.ctx = distributed.setup(self.opt.device)
        self.slices = local_slices(self.opt.batch_size, self.ctx.world, self.ctx.rank,
                                   self.opt.accumulate)
        self.device = self.ctx.device
        self.amp_dtype = resolve_precision(self.opt.precision, self.device)
        self.model = model.to(self.device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.phema = (PowerEMA(self.model, self.opt.ema_sigma_rel) if self.opt.ema_sigma_rel
                      else None)  # post-hoc EMA (EDM2): power EMAs, snapshots for `scoregen ema`
        self.data = data.to(self.device) if isinstance(data, Tensor) else data
        self.seed = self.opt.seed  # keys every draw; a resumed run keeps its checkpoint's
        self.order = EpochOrder(len(data), self.seed)
        self.position = 0  # examples of the data stream consumed so far
        self.labels = check_train_labels(model, labels, len(data))
        if self.labels is not None:
            if not isinstance(data, Tensor):
                raise ValueError("class-conditional training reads its data into memory: set "
                                 "data.stream: false")
            self.labels = self.labels.to(self.device)
        if objective.sde != model.sde:
            raise ValueError(f"the objective was built for {objective.sde!r} but the model "
                             f"for {model.sde!r}; build it with the model's SDE")
        self.objective = objective.to(self.device)
        self.objective.bind(self.model)
        self.state_shape = model.sde.state_shape(tuple(data[0].shape))
        self.loss: nn.Module = _Loss(self.model, self.objective)
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            # buffers are constants (embedding frequencies): no re-broadcast every forward
            params = inspect.signature(DistributedDataParallel).parameters
            quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers" in params
                     else {"broadcast_buffers": False})
            self.loss = DistributedDataParallel(
                self.loss, device_ids=[self.device] if self.device.type == "cuda" else None,
                **quiet)
        self.optimizer = torch.optim.AdamW(self.trained_parameters(), lr=self.opt.lr,
                                           weight_decay=self.opt.weight_decay)
        self.step = 0
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.writes = self.ctx.is_main and self.out_dir is not None  # rank 0 writes, alone
        self.run_config = run_config
        self.sample_fn = sample_fn
        self.last_checkpoint: Path | None = None
        self.lock: RunLock | None = None  # held from build_trainer (or fit) to the end of fit
        self.kept: list[Path] = []  # files --overwrite left because scoregen did not write them
        self.resume_changes: list[str] = []  # run-config keys changed on resume
        self._stream: Iterator[Tensor] | None = None
        # the clock of max_seconds: wall time; time.process_time gives a CPU-time budget
        self.clock: Callable[[], float] = time.perf_counter

    def trained_parameters(self) -> list[nn.Parameter]:
        """The model's parameters and the objective's own trainable ones (each once)."""
        params = {id(p): p for p in self.model.parameters()}
        for p in self.objective.parameters():
            if p.requires_grad:
                params.setdefault(id(p), p)
        return list(params.values())

    # -- pieces of the loop ------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Linear warm-up over ``warmup`` steps, then constant."""
        if self.opt.warmup <= 0:
            return self.opt.lr
        return self.opt.lr * min(1.0, (step + 1) / self.opt.warmup)

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = min(self.opt.ema_decay, (1 + self.step) / (10 + self.step))
        for p_ema, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            p_ema.lerp_(p, 1 - decay)
        for b_ema, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            b_ema.copy_(b)

    def batches(self) -> list[Batch]:
        """This rank's micro-batches of the current step (global indices :attr:`slices`)."""
        out = []
        for index in self.slices:
            if isinstance(self.data, Tensor):
                idx = self.order.indices(self.position + int(index[0]), len(index))
                idx = idx.to(self.device)
                x0 = self.data[idx]
            else:
                x0 = next(self._data_stream()).to(self.device, non_blocking=True)
            batch = draw_batch(x0, self.seed, self.step, index, self.state_shape)
            if self.labels is not None:
                batch.cond = self.drop_labels(self.labels[idx], batch.keys)
            out.append(batch)
        return out

    def drop_labels(self, y: Tensor, keys: Tensor) -> Tensor:
        """Replace a fraction ``label_dropout`` of ``y`` by the null label ``num_classes``;
        example ``k`` drops its label when its own uniform (draw 1 of its key) is below it."""
        p = 0.1 if self.opt.label_dropout is None else self.opt.label_dropout
        u = torch.special.ndtr(NoiseSource(keys, (1,), torch.float64, y.device).draw(1)[:, 0])
        return torch.where(u < p, torch.full_like(y, self.model.num_classes), y)

    def _data_stream(self) -> Iterator[Tensor]:
        if self._stream is None:
            from scoregen.data.loader import stream_batches

            self._stream = stream_batches(self.data, self.order, self.position,
                                          self.opt.batch_size, self.slices,
                                          workers=self.opt.workers,
                                          pin_memory=self.device.type == "cuda")
        return self._stream

    def train_step(self) -> float:
        """One optimizer step on the global batch; returns its loss (averaged over ranks;
        raises :class:`TrainingDivergedError`)."""
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        micro = self.batches()
        total = torch.zeros((), device=self.device)
        for m, batch in enumerate(micro):
            sync = m == len(micro) - 1 or not self.ctx.distributed
            with contextlib.nullcontext() if sync else self.loss.no_sync():
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    loss = self.loss(batch)
                if len(micro) > 1:
                    loss = loss / len(micro)
                loss.backward()
            total = total + loss.detach().float()
        value = float(distributed.all_reduce(total, "mean"))
        if not math.isfinite(value):
            self._diverged(value)
        if self.opt.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.opt.grad_clip)
            if not torch.isfinite(norm):
                self._diverged(value, what="gradient norm")
        self.optimizer.step()
        self.step += 1
        self.position += self.opt.batch_size
        self.update_ema()
        if self.phema is not None:
            self.phema.update(self.model, self.step)
        self.objective.after_step(self.model, self.step)
        return value

    def _diverged(self, value: float | str, what: str = "loss", step: int | None = None
                  ) -> None:
        last = (f"the last finite checkpoint is {self.last_checkpoint}"
                if self.last_checkpoint else "no checkpoint was written yet")
        became = f"became {value} (NaN/Inf)" if isinstance(value, float) else value
        raise TrainingDivergedError(
            f"training stopped at step {self.step + 1 if step is None else step}: the {what} "
            f"{became}; {last}. Lower train.lr, keep train.grad_clip > 0, or check the data "
            "for NaN/Inf values."
        )

    def check_weights(self) -> None:
        """The divergence guard: raise :class:`TrainingDivergedError` (nothing saved) when the
        weights or EMA weights are non-finite or exceed ``max_weight`` in absolute value."""
        limit = self.opt.max_weight
        for what, module in (("weights", self.model), ("EMA weights", self.ema)):
            params = [p.detach().abs().amax() for p in module.parameters() if p.numel()]
            if not params:
                continue
            worst = float(torch.stack(params).amax())
            if not math.isfinite(worst):
                self._diverged("are non-finite (NaN/Inf), so they were not saved", what,
                               self.step)
            if limit > 0 and worst > limit:
                self._diverged(f"exploded (max |w| = {worst:.3g} > train.max_weight = "
                               f"{limit:g}; raise it if such weights are expected), so they "
                               "were not saved", what, self.step)

    # -- checkpoints ------------------------------------------------------------------------
    def rng_state(self) -> dict[str, Tensor]:
        """What randomness needs besides the step: the seed and the data-stream position."""
        return {"data_position": torch.tensor([self.position], dtype=torch.int64),
                "data_seed": torch.tensor([self.seed], dtype=torch.int64)}

    def save(self) -> Path | None:
        """Checkpoint (all ranks call it): weights compared across ranks, rank 0 writes
        atomically, the others wait at a barrier."""
        if self.out_dir is None:
            return None
        self.check_weights()
        distributed.check_consistency(self.model, "the model")
        distributed.check_consistency(self.ema, "the EMA model")
        root = self.out_dir / "checkpoints"
        if self.writes:
            save_checkpoint(root, self.step, self.model, ema=self.ema,
                            optimizer=self.optimizer, rng=self.rng_state(),
                            run_config=self.run_config, keep=self.opt.keep_checkpoints,
                            objective=self.objective,
                            **self._phema_state())
        distributed.barrier()
        self.last_checkpoint = root / f"step_{self.step:06d}"
        return self.last_checkpoint

    def _phema_state(self) -> dict[str, Any]:
        """The post-hoc EMA averages and widths for :func:`save_checkpoint` (none if off)."""
        if self.phema is None:
            return {}
        return {"extra": {f"phema.{k}": v for k, v in self.phema.state_tensors().items()},
                "extra_meta": {"ema_sigma_rel": self.phema.sigma_rels}}

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint (or run folder): weights, EMA, optimizer, step, the
        seed of the training draws and the data-stream position (epoch and offset); the
        checkpoint may come from any number of processes.

        The checkpoint's model config (network, data shape, prediction, SDE) must equal this
        model's (:func:`~scoregen.training.run_folder.compare_model_configs`); other run-config
        changes are allowed and listed in ``resume_changes``.
        """
        ckpt = read_checkpoint(path)
        compare_model_configs(ckpt.meta["model"], self.model.config(), ckpt.path)
        if self.run_config is not None:
            self.resume_changes = config_changes(ckpt.meta.get("run_config"), self.run_config)
        weights = ckpt.path / "weights.safetensors"
        load_state(self.model, ckpt.group("model"), weights)
        load_state(self.ema, ckpt.group("ema") if ckpt.meta.get("has_ema")
                   else ckpt.group("model"), weights)
        if ckpt.meta.get("has_objective_state"):
            load_state(self.objective, ckpt.group("objective"), weights)
        if self.phema is not None:
            if ckpt.meta.get("ema_sigma_rel") != self.phema.sigma_rels:
                raise CheckpointError(
                    f"{ckpt.path} tracks post-hoc EMA widths {ckpt.meta.get('ema_sigma_rel')} "
                    f"but train.ema_sigma_rel is {self.phema.sigma_rels}: a power EMA needs the "
                    "whole run; resume with the same widths or start a fresh run")
            self.phema.load_tensors(ckpt.group("phema"), weights)
        restore_optimizer(self.optimizer, ckpt)
        rng = ckpt.group("rng")
        if "data_position" not in rng:
            raise CheckpointError(f"{weights} has no data-stream position to resume from "
                                  "(written by an older scoregen); start a fresh run")
        self.step = ckpt.step
        self.position = int(rng["data_position"][0])
        if "data_seed" in rng:
            self.seed = int(rng["data_seed"][0])
            self.order = EpochOrder(self.order.n, self.seed)
        self._stream = None  # the loader restarts at the restored position
        self.last_checkpoint = ckpt.path

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until ``options.steps``; checkpoint, log and plot along the way."""
        opt = self.opt
        self._begin()
        log = CsvLog(self.out_dir / "log.csv" if self.writes else None)
        bar = tqdm(total=opt.steps, initial=self.step, desc="train",
                   disable=not (opt.progress and self.ctx.is_main), dynamic_ncols=True)
        start = t_log = time.perf_counter()
        budget_start = self.clock()
        first_step, losses, n_log, value, rate = self.step, [], 0, float("nan"), 0.0
        stop = False  # the time limit was reached
        try:
            while self.step < opt.steps and not stop:
                value = self.train_step()
                losses.append(value)
                n_log += opt.batch_size
                bar.update(1)
                stop = 0 < opt.max_seconds <= self.clock() - budget_start
                if self.step % opt.log_every == 0 or self.step == opt.steps or stop:
                    now = time.perf_counter()
                    rate = n_log / max(now - t_log, 1e-9)
                    mean = sum(losses) / len(losses)
                    log.write(self.step, mean, self.lr_at(self.step - 1), rate, now - start)
                    bar.set_postfix(loss=f"{mean:.4f}", ex_s=f"{rate:.0f}")
                    losses, n_log, t_log = [], 0, now
                if _due(self.step, opt.ckpt_every, opt.steps) or stop:
                    self.save()
                if (self.phema is not None and self.writes
                        and (_due(self.step, opt.ema_snapshot_every or opt.ckpt_every,
                                  opt.steps) or stop)):
                    self.phema.save_snapshot(self.out_dir, self.step)
                if (self.sample_fn is not None and self.ctx.is_main
                        and (_due(self.step, opt.sample_every, opt.steps) or stop)):
                    self.sample_fn(self.ema, self.step)
            if self.step == first_step and self.last_checkpoint is None:
                self.save()  # nothing to train and nothing saved yet
        except (TrainingDivergedError, distributed.DistributedError):
            raise
        except RuntimeError as err:
            if not (self.ctx.distributed and distributed.is_collective_failure(err)):
                raise
            raise distributed.DistributedError(
                f"rank {self.ctx.rank} of {self.ctx.world}: a collective failed at step "
                f"{self.step + 1} (another process died or stopped answering within "
                f"{distributed.timeout_seconds():g} s): {str(err).splitlines()[0]}. Resume "
                f"from {self.last_checkpoint or 'the run folder'} with --resume.") from err
        finally:
            bar.close()
            log.close()
            self._stream = None
            if self.lock is not None:
                self.lock.release()
        seconds = time.perf_counter() - start
        done = (self.step - first_step) * opt.batch_size
        return TrainResult(self.step, value, seconds, done / max(seconds, 1e-9),
                           self.last_checkpoint, first_step, "time limit" if stop else None)

    def _begin(self) -> None:
        """Run-folder rules at the start of :meth:`fit`: take the lock (unless held), refuse
        a folder that is not a scoregen run but holds files named like a run's, or whose
        checkpoints belong to another run; cut ``log.csv`` to this step."""
        if not self.writes:  # no folder, or not rank 0: rank 0 owns the run folder
            return
        if self.lock is None or not self.lock.held:
            self.lock = RunLock(self.out_dir).acquire()
        try:
            claim(self.out_dir)
            check_writer(self.out_dir, self.last_checkpoint)
            truncate_log(self.out_dir / "log.csv", self.step)
            prune_snapshots(self.out_dir, self.step)
        except BaseException:
            self.lock.release()
            raise


def check_train_labels(model: ScoreModel, labels: Tensor | None, n: int) -> Tensor | None:
    """Labels ``(n,)`` in ``[0, num_classes)`` for a conditional model, ``None`` otherwise."""
    classes = getattr(model, "num_classes", None)
    if labels is None:
        if classes:
            raise ValueError(f"the model has {classes} classes (model.num_classes) but the "
                             "training data has no labels; give labels or drop num_classes")
        return None
    if not classes:
        raise ValueError("training labels were given but the model is not class-conditional; "
                         "set model.num_classes")
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"training labels span {int(labels.min())}..{int(labels.max())} but "
                         f"model.num_classes is {classes}: labels must lie in [0, {classes})")
    return labels


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)



__all__ = [
    "TrainOptions",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "check_train_labels",
]
