"""Distillation methods: each a sequence of stages and the way its student samples.

A method is a class registered by name whose keyword options (with their defaults) are what
``--opt key=value`` may set, like objectives. It lists its stages (:class:`Stage`: a name, a
kind, the stages it builds on, and the work) and, once they are done, the student's sampling
entries (:mod:`.student`). Every stage reads its inputs from disk (the teacher, an earlier
stage's run folder or pairs), so a student resumes stage by stage.

- ``progressive`` (Salimans & Ho 2022, Algorithm 2): rounds ``N = start_steps, start_steps /
  2, ..., final_steps``, each a training stage of the ``progressive`` objective whose teacher is
  the previous round's student (the first: the teacher) and whose weights start from it;
  every round samples with DDIM at its ``N`` steps.
- ``consistency`` (Song et al. 2023, consistency distillation): one stage of the
  ``consistency_distillation`` objective with the teacher's ODE step by ``solver``, then the
  re-noising times for 1 .. ``tune_nfe`` NFE (:mod:`.renoise`); multistep consistency
  sampling.
- ``consistency-training`` (Song & Dhariwal 2023; Geng et al. 2024): the same without the
  teacher's ODE: the ``consistency_training`` objective on the teacher's data, starting from the
  teacher's weights when it has them (easy consistency tuning of a DSM checkpoint).
- ``reflow`` (Liu et al. 2022): pairs ``(x0, z)`` from the teacher's ODE by ``pair_sampler`` at
  ``pair_nfe``; a rectified flow on the ``linear`` process trained on them; then, for
  ``distill_steps = k > 0``, pairs from that flow's ``pair_nfe``-step Euler solve and a
  ``k``-step distillation on them (``reflow = false``: no rectified flow, the ``k``-step
  distillation of the teacher's own pairs). The straightness of the teacher's flow (re-targeted to
  ``linear``) and of the students is measured at the end (:func:`straightness`).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scoregen.infra.registry import Registry
from scoregen.models.prediction import Model
from scoregen.sde.base import SDE
from scoregen.training.distill.stages import (
    load_pairs,
    make_pairs,
    save_pairs,
    train_stage,
)
from scoregen.training.distill.student import euler_ts
from scoregen.training.distill.teacher import Teacher

METHODS: Registry[type] = Registry("distillation method")


@dataclass
class Stage:
    """One piece of a student: ``run()`` does it and returns what the record keeps
    (``teacher_rows``, ``steps``, ``seconds`` and anything else)."""

    name: str
    kind: str  # train, pairs, tune, measure
    depends: list[str]
    run: Callable[[], dict[str, Any]]
    steps: int = 0  # optimizer steps of a training stage (its share of a time limit)


@dataclass
class Context:
    """What every stage sees: the teacher, the student's folder and process, the config
    overrides, the time left and how to train a stage (:meth:`train`)."""

    teacher: Teacher
    out: Path
    sde: SDE
    shape: tuple[int, ...]
    overrides: list[str]
    progress: bool = True
    device: str = "cpu"
    deadline: float | None = None  # clock() at which the time limit ends
    clock: Callable[[], float] = time.perf_counter  # wall time, or time.process_time (CPU)
    remaining_steps: Callable[[], int] = lambda: 1
    _data: Tensor | None = field(default=None, repr=False)

    # -- data ------------------------------------------------------------------------------------
    def data_section(self) -> dict[str, Any]:
        if self.teacher.data is None:
            raise ValueError(f"the teacher {self.teacher.name} does not say what data it models: "
                             "give the dataset with --set data.name=NAME (and its options)")
        name, options = self.teacher.data
        return {"name": name, **options}

    def data(self) -> Tensor:
        """The teacher's training data (``train`` split), read once."""
        if self._data is None:
            from scoregen.data import load_dataset
            from scoregen.training.config import apply_overrides, parse_config

            section = apply_overrides({"data": self.data_section()},
                                      [o for o in self.overrides if o.startswith("data.")])
            cfg = parse_config(section)
            self._data = load_dataset(cfg.data.name, "train", **cfg.data.options)
        return self._data

    # -- configs ---------------------------------------------------------------------------------
    def config(self, objective: str, options: dict[str, Any], prediction: str,
               train: dict[str, Any], fresh_network: bool) -> Any:
        """The validated run config of a training stage: the teacher's data, the student's
        process, the teacher's network (or a residual MLP for a teacher without one),
        ``objective``, the method's ``train`` defaults; then the ``--set`` overrides."""
        from scoregen.training.config import ConfigError, apply_overrides, parse_config

        if self.teacher.init is not None and not fresh_network:
            net = dict(self.teacher.init[0]["network"])
            model = {"network": net.pop("name"), "prediction": prediction,
                     "sigma_data": self.teacher.init[0].get("sigma_data", 0.5),
                     **{k: v for k, v in net.items() if k != "shape"}}
        else:
            model = {"network": "mlp", "width": 256, "depth": 3, "prediction": prediction}
        raw = {"data": self.data_section(), "sde": self.sde.config(), "model": model,
               "objective": {"name": objective, **options},
               "train": {"device": self.device, **train}}
        try:
            return parse_config(apply_overrides(raw, self.overrides))
        except ConfigError as err:
            raise ValueError(f"student config: {err}") from None

    def init_state(self, fresh: bool) -> dict[str, Tensor] | None:
        """The teacher's weights for a student that starts from them."""
        return None if fresh or self.teacher.init is None else self.teacher.init[1]

    # -- training ---------------------------------------------------------------------------------
    def train(self, name: str, cfg: Any, *, data: Tensor, teacher: Model | None,
              init: dict[str, Tensor] | None, preview: tuple[str, Tensor]) -> dict[str, Any]:
        """Run (or resume) the training stage ``name`` with its share of the time left."""
        folder = self.out / name
        share = 0.0
        if self.deadline is not None:
            left = max(self.deadline - self.clock(), 1e-3)
            share = left * cfg.train.steps / max(self.remaining_steps(), cfg.train.steps)
        from scoregen.training.run_folder import has_checkpoints

        resume = folder.exists()  # an interrupted stage: from its checkpoint, if it wrote one
        if has_checkpoints(folder):
            init = None
        result = train_stage(folder, cfg, data=data, teacher=teacher, init=init, resume=resume,
                             progress=self.progress, max_seconds=share, clock=self.clock,
                             sample_fn=self._preview(folder, cfg, *preview))
        return {"teacher_rows": result.teacher_rows, "steps": result.step,
                "seconds": result.seconds, "stopped": result.stopped}

    def _preview(self, folder: Path, cfg: Any, sampler: str, ts: Tensor
                 ) -> Callable[[Model, int], Path]:
        from scoregen.infra.plotting import save_samples
        from scoregen.sampling.api import sample

        def fn(model: Model, step: int) -> Path:
            res = sample(model, model.sde, (cfg.sample.n, *self.shape), sampler, ts=ts,
                         seed=cfg.sample.seed, device=self.device)
            return save_samples(res.x, folder / "samples" / f"step_{step:06d}.png",
                                f"step {step}: {sampler}, {res.nfe} NFE")

        return fn

    def load(self, stage: str) -> Model:
        from scoregen.training.checkpoint import load_model

        return load_model(self.out / stage, ema=True, device=self.device).requires_grad_(False)


class Method:
    """Base class of distillation methods (module docstring)."""

    name = "method"

    def stages(self, ctx: Context) -> list[Stage]:
        raise NotImplementedError

    def sampling(self, ctx: Context, record: dict[str, Any]) -> dict[str, Any]:
        """``{"entries": [...], "rule": ...}`` of a student whose stages are done."""
        raise NotImplementedError

    def student_sde(self, teacher: Teacher) -> SDE:
        return teacher.sde


def register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.name = name
        return METHODS.register(name)(cls)

    return deco


def method_options(name: str) -> dict[str, Any]:
    """``{option: default}`` of method ``name`` (its ``__init__``'s keyword arguments)."""
    params = inspect.signature(METHODS.get(name).__init__).parameters
    return {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}


def build_method(name: str, **options: Any) -> Method:
    """Method ``name`` with ``options`` (checked against its signature)."""
    known = method_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"method {name!r} has no option {', '.join(map(repr, unknown))}; its "
                         f"options: {', '.join(known) or '(none)'}")
    from scoregen.training.config import check_option

    checked = {k: check_option(f"--opt {k}", v, known[k]) for k, v in options.items()}
    return METHODS.get(name)(**checked)


def _student_prediction(teacher: Teacher, fresh: bool, choice: str, consistency: bool) -> str:
    """The student's parameterization: ``choice``, or by default the teacher's own (so its
    weights keep their meaning) or ``v`` for a fresh network; for a consistency student the
    consistency parameterization over that base."""
    base = choice or ("v" if fresh or teacher.init is None else teacher.init[0]["prediction"])
    if not consistency:
        return base
    return "consistency" if base == "edm" else f"consistency-{base}"


# -- progressive distillation -------------------------------------------------------------------
@register("progressive")
class Progressive(Method):
    """Progressive distillation (Salimans & Ho 2022): DDIM students in rounds that halve the
    steps, every round kept (module docstring)."""

    def __init__(self, *, start_steps: int = 64, final_steps: int = 1, prediction: str = "",
                 spacing: str = "uniform", weighting: str = "truncated_snr",
                 fresh: bool = False) -> None:
        if not (isinstance(final_steps, int) and final_steps >= 1 and isinstance(start_steps, int)
                and start_steps >= final_steps):
            raise ValueError(f"need integers start_steps >= final_steps >= 1, got {start_steps!r}"
                             f", {final_steps!r}")
        rounds = [start_steps]
        while rounds[-1] > final_steps:
            if rounds[-1] % 2:
                raise ValueError(f"the rounds halve the steps: start_steps = {start_steps} must "
                                 f"be final_steps = {final_steps} times a power of 2")
            rounds.append(rounds[-1] // 2)
        if rounds[-1] != final_steps:
            raise ValueError(f"start_steps = {start_steps} does not halve to final_steps = "
                             f"{final_steps}")
        self.rounds, self.prediction, self.fresh = rounds, prediction, fresh
        self.spacing, self.weighting = spacing, weighting

    @staticmethod
    def stage_name(n: int) -> str:
        return f"round_{n:04d}"

    def stages(self, ctx: Context) -> list[Stage]:
        from scoregen.training.objectives.progressive import pd_grid

        fresh = self.fresh or ctx.teacher.init is None
        prediction = _student_prediction(ctx.teacher, fresh, self.prediction, False)
        train = {"steps": 1000, "batch_size": int(ctx.teacher.train.get("batch_size", 512)),
                 "lr": 1e-3 if fresh else 2e-4, "warmup": 100 if fresh else 0,
                 "log_every": 100, "ckpt_every": 250, "sample_every": 0}
        out, previous = [], None
        for n in self.rounds:
            name = self.stage_name(n)
            cfg = ctx.config("progressive", {"steps": n, "spacing": self.spacing,
                                             "weighting": self.weighting}, prediction, train,
                             fresh)

            def run(name=name, cfg=cfg, previous=previous, n=n) -> dict[str, Any]:
                teacher = ctx.teacher.model if previous is None else ctx.load(previous)
                init = (ctx.init_state(fresh) if previous is None
                        else {k: v.clone() for k, v in teacher.state_dict().items()})
                return ctx.train(name, cfg, data=ctx.data(), teacher=teacher, init=init,
                                 preview=("ddim", pd_grid(ctx.sde, n, self.spacing)))

            out.append(Stage(name, "train", [] if previous is None else [previous], run,
                             cfg.train.steps))
            previous = name
        return out

    def sampling(self, ctx: Context, record: dict[str, Any]) -> dict[str, Any]:
        from scoregen.training.objectives.progressive import pd_grid

        entries = [{"nfe": n, "stage": self.stage_name(n), "sampler": "ddim",
                    "ts": pd_grid(ctx.sde, n, self.spacing).tolist(), "deterministic": True}
                   for n in self.rounds]
        return {"entries": entries, "rule": None}


# -- consistency models ------------------------------------------------------------------------
class _ConsistencyMethod(Method):
    """A consistency student: one training stage, then its re-noising times."""

    objective = ""
    stage = ""

    def __init__(self, *, prediction: str = "", tune_nfe: int = 8, tune_samples: int = 1000,
                 tune_candidates: int = 12, fresh: bool = False) -> None:
        if not (isinstance(tune_nfe, int) and tune_nfe >= 1):
            raise ValueError(f"tune_nfe must be an integer >= 1, got {tune_nfe!r}")
        self.prediction, self.fresh = prediction, fresh
        self.tune_nfe, self.tune_samples, self.tune_candidates = (tune_nfe, tune_samples,
                                                                  tune_candidates)

    def objective_options(self, steps: int) -> dict[str, Any]:
        return {"total_steps": steps}

    def teacher_model(self, ctx: Context) -> Model | None:
        return None

    def stages(self, ctx: Context) -> list[Stage]:
        fresh = self.fresh or ctx.teacher.init is None
        prediction = _student_prediction(ctx.teacher, fresh, self.prediction, True)
        train = {"steps": 2000, "batch_size": int(ctx.teacher.train.get("batch_size", 512)),
                 "lr": 1e-3 if fresh else 2e-4, "warmup": 100 if fresh else 0,
                 "log_every": 100, "ckpt_every": 250, "sample_every": 0}
        steps = ctx.config(self.objective, {}, prediction, train, fresh).train.steps
        cfg = ctx.config(self.objective, self.objective_options(steps), prediction, train,
                         fresh)
        one_step = torch.tensor([ctx.sde.T, 0.0], dtype=torch.float64)

        def learn() -> dict[str, Any]:
            return ctx.train(self.stage, cfg, data=ctx.data(), teacher=self.teacher_model(ctx),
                             init=ctx.init_state(fresh), preview=("consistency", one_step))

        def tune() -> dict[str, Any]:
            from scoregen.training.distill.renoise import tune_renoise_times

            start = time.perf_counter()
            grids, scores = tune_renoise_times(
                ctx.load(self.stage), ctx.sde, ctx.shape, ctx.data(), self.tune_nfe,
                n=min(self.tune_samples, len(ctx.data())), candidates=self.tune_candidates,
                progress=ctx.progress)
            return {"seconds": time.perf_counter() - start, "grids": grids,
                    "energy_distance": scores}

        return [Stage(self.stage, "train", [], learn, cfg.train.steps),
                Stage("renoise", "tune", [self.stage], tune)]

    def sampling(self, ctx: Context, record: dict[str, Any]) -> dict[str, Any]:
        tuned = next(s for s in record["stages"] if s["name"] == "renoise")["grids"]
        entries = [{"nfe": int(k), "stage": self.stage, "sampler": "consistency", "ts": ts,
                    "deterministic": int(k) == 1, "uses": [self.stage, "renoise"]}
                   for k, ts in sorted(
                        tuned.items(), key=lambda kv: int(kv[0]))]
        return {"entries": entries, "rule": None}


@register("consistency")
class ConsistencyDistillationMethod(_ConsistencyMethod):
    """Consistency distillation (Song et al. 2023) with the teacher's ODE step by ``solver``;
    multistep sampling on tuned times (module docstring)."""

    objective, stage = "consistency_distillation", "cd"

    def __init__(self, *, solver: str = "heun", prediction: str = "", tune_nfe: int = 8,
                 tune_samples: int = 1000, tune_candidates: int = 12,
                 fresh: bool = False) -> None:
        super().__init__(prediction=prediction, tune_nfe=tune_nfe, tune_samples=tune_samples,
                         tune_candidates=tune_candidates, fresh=fresh)
        self.solver = solver

    def objective_options(self, steps: int) -> dict[str, Any]:
        return {"sampler": self.solver, "total_steps": steps}

    def teacher_model(self, ctx: Context) -> Model | None:
        return ctx.teacher.model


@register("consistency-training")
class ConsistencyTrainingMethod(_ConsistencyMethod):
    """Consistency training or tuning from a DSM model (Geng et al. 2024; Song & Dhariwal
    2023); multistep sampling on tuned times (module docstring)."""

    objective, stage = "consistency_training", "ct"

    def objective_options(self, steps: int) -> dict[str, Any]:
        return {"total_steps": steps, "stage_steps": max(steps // 4, 1)}


# -- rectified flow ----------------------------------------------------------------------------
def straightness(model: Model, sde: SDE, shape: tuple[int, ...], n: int = 512,
                 steps: int = 64, seed: int = 0) -> float:
    """The straightness of a flow on the ``linear`` process (Liu et al. 2022, eq. 4)::

        S = int_0^1 E || (Z_1 - Z_0) - dZ_t/dt ||^2 dt

    with Liu's time ``1 - t / T`` (noise at 0, data at 1), along the Euler solve (``ddim``,
    exact Euler on ``linear``) of ``steps`` uniform steps from ``n`` prior samples (sum over
    dimensions, mean over samples and steps); ``0`` for straight paths."""
    from scoregen.sampling.api import sample

    x_T = _start(sde, shape, n, seed)
    trace = [x_T]
    grid = torch.tensor(euler_ts(sde, steps), dtype=torch.float64)
    sample(model, sde, x_T, "ddim", ts=grid, seed=seed,
           callback=lambda i, t, x: trace.append(x.clone()))
    path = torch.stack(trace)
    # Liu's time runs from noise (0) to data (1): each Euler step advances it by 1 / steps
    velocity = (path[1:] - path[:-1]) * steps
    chord = path[-1] - path[0]
    return float((velocity - chord).flatten(2).pow(2).sum(2).mean())


def _start(sde: SDE, shape: tuple[int, ...], n: int, seed: int) -> Tensor:
    """``x_T`` of samples ``seed .. seed + n - 1`` (what ``scoregen.sample`` draws)."""
    from scoregen.sampling.noise import NoiseSource, seeds_for

    z = NoiseSource(seeds_for(n, seed), sde.state_shape(shape), torch.float32).draw(0)
    return sde.prior_from_normal(z)


@register("reflow")
class Reflow(Method):
    """Rectified flow (Liu et al. 2022): teacher pairs, reflow on ``linear``, k-step
    distillation, straightness (module docstring)."""

    def __init__(self, *, pairs: int = 20000, pair_sampler: str = "dpm_solver++",
                 pair_nfe: int = 32, reflow: bool = True, distill_steps: int = 1,
                 prediction: str = "", fresh: bool = False,
                 straightness_samples: int = 512) -> None:
        if not (isinstance(pairs, int) and pairs >= 1):
            raise ValueError(f"pairs must be an integer >= 1, got {pairs!r}")
        if not (isinstance(distill_steps, int) and distill_steps >= 0):
            raise ValueError(f"distill_steps must be an integer >= 0 (0: no distillation), "
                             f"got {distill_steps!r}")
        if not reflow and not distill_steps:
            raise ValueError("with reflow=false the student is the k-step distillation of the "
                             "teacher's own pairs: give distill_steps >= 1")
        self.reflow = reflow
        self.pairs, self.pair_sampler, self.pair_nfe = pairs, pair_sampler, pair_nfe
        self.distill_steps, self.prediction, self.fresh = distill_steps, prediction, fresh
        self.straightness_samples = straightness_samples

    def student_sde(self, teacher: Teacher) -> SDE:
        from scoregen import sde as sde_lib

        return sde_lib.get("linear")

    def stages(self, ctx: Context) -> list[Stage]:
        from scoregen.training.objectives._teacher import deterministic_sampler

        deterministic_sampler(self.pair_sampler, ctx.teacher.sde)
        fresh = self.fresh or ctx.teacher.init is None
        prediction = _student_prediction(ctx.teacher, fresh, self.prediction, False)
        defaults = {"steps": 2000, "lr": 1e-3 if fresh else 2e-4, "warmup": 100 if fresh else 0,
                    "batch_size": int(ctx.teacher.train.get("batch_size", 512)),
                    "log_every": 100, "ckpt_every": 250, "sample_every": 0}
        k = self.distill_steps
        reflow_cfg = ctx.config("reflow", {"steps": 0}, prediction, defaults, fresh)
        preview = ("ddim", torch.tensor(euler_ts(ctx.sde, 4), dtype=torch.float64))

        def pairs(source: str) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                start = time.perf_counter()
                if source == "teacher":
                    model, sde, how = (ctx.teacher.model, ctx.teacher.sde,
                                       {"sampler": self.pair_sampler, "nfe": self.pair_nfe})
                else:
                    model, sde = ctx.load(source), ctx.sde
                    grid = torch.tensor(euler_ts(ctx.sde, self.pair_nfe), dtype=torch.float64)
                    how = {"sampler": "ddim", "ts": grid}
                x, rows = make_pairs(model, sde, ctx.shape, self.pairs, seed=0,
                                     progress=ctx.progress, **how)
                if not torch.isfinite(x).all():
                    raise ValueError(f"the pairs of {source} are not finite: its ODE diverged")
                save_pairs(ctx.out / f"pairs_{source}.safetensors", x,
                           {"source": source, "n": self.pairs, "rows": rows,
                            **{k: v for k, v in how.items() if k != "ts"}})
                return {"teacher_rows": rows, "seconds": time.perf_counter() - start}

            return run

        def train(name: str, cfg: Any, source: str, init_from: str | None
                  ) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                init = (ctx.init_state(fresh) if init_from is None else
                        {k: v.clone() for k, v in ctx.load(init_from).state_dict().items()})
                data = load_pairs(ctx.out / f"pairs_{source}.safetensors")
                return ctx.train(name, cfg, data=data, teacher=None, init=init, preview=preview)

            return run

        stages = [Stage("pairs_teacher", "pairs", [], pairs("teacher"))]
        if self.reflow:
            stages.append(Stage("reflow", "train", ["pairs_teacher"],
                                train("reflow", reflow_cfg, "teacher", None),
                                reflow_cfg.train.steps))
        if k:  # distil the reflowed flow on its own pairs, or the teacher's flow on its pairs
            source = "reflow" if self.reflow else "teacher"
            cfg = ctx.config("reflow", {"steps": k}, prediction,
                             {**defaults, **({"steps": 1000, "warmup": 0} if self.reflow
                                             else {})}, fresh)
            name = f"distill_{k}"
            if self.reflow:
                stages.append(Stage("pairs_reflow", "pairs", ["reflow"], pairs("reflow")))
            stages.append(Stage(name, "train", [f"pairs_{source}"],
                                train(name, cfg, source, "reflow" if self.reflow else None),
                                cfg.train.steps))

        def measure() -> dict[str, Any]:
            from scoregen.models.prediction import retarget

            start = time.perf_counter()
            n = self.straightness_samples
            found = {"teacher": straightness(retarget(ctx.teacher.model, ctx.sde), ctx.sde,
                                             ctx.shape, n)}
            for stage in [*(["reflow"] if self.reflow else []),
                          *([f"distill_{k}"] if k else [])]:
                found[stage] = straightness(ctx.load(stage), ctx.sde, ctx.shape, n)
            return {"seconds": time.perf_counter() - start, "straightness": found}

        return [*stages, Stage("straightness", "measure", [], measure)]

    def sampling(self, ctx: Context, record: dict[str, Any]) -> dict[str, Any]:
        k = self.distill_steps
        entries = ([{"nfe": k, "stage": f"distill_{k}", "sampler": "ddim",
                     "ts": euler_ts(ctx.sde, k), "deterministic": True}] if k else [])
        rule = {"stage": "reflow", "sampler": "ddim", "from_nfe": 1} if self.reflow else None
        return {"entries": entries, "rule": rule}


__all__ = ["METHODS", "Context", "Method", "Stage", "build_method", "method_options",
           "straightness"]
