"""The objective contract, its registry, and what objectives share.

An objective is a training loss for models of one SDE: a class registered by name whose
keyword options (with their defaults) are what a config may set::

    @register("my_loss")
    class MyLoss(Objective):
        def __init__(self, sde: SDE, *, gamma: float = 5.0) -> None: ...
        def loss(self, model: Model, batch: Batch) -> Tensor: ...   # a scalar

``objective(model, batch)`` returns the scalar loss of a micro-batch
(:class:`~scoregen.training.batches.Batch`: clean data, each example's uniform ``u`` and noise
``eps``, its 64-bit key for further draws, its labels and the step). Every random quantity
comes from the batch, so a run is the same at any number of processes and resumes bit for bit.
An objective is an ``nn.Module``: its own parameters (if any) are trained with the model's,
its state (e.g. a target network) is saved in checkpoints, and :meth:`Objective.after_step`
runs after every optimizer step. ``requires`` names the SDE capabilities it needs
(:data:`scoregen.sde.base.CAPABILITIES`), checked when it is built.

**Objectives with a teacher** (distillation, :mod:`scoregen.training.distill`) register with
``teacher=True`` and take the teacher model as the keyword ``teacher`` (not an option a
config can set: :func:`objective_options` leaves it out). They are built with a teacher by
``scoregen distill``; built without one (a config being validated) they raise when asked for
a loss. ``student="consistency"`` in the registration says the student is a consistency
function (a ``consistency`` parameterization), ``data="pairs"`` that each training example is
a coupled pair ``(x0, z)`` stacked as ``(2, *D)``; the shared suite reads both.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from scoregen.infra.registry import Registry
from scoregen.models.prediction import Model, predict_pair
from scoregen.sde.base import CAPABILITIES, SCALAR_KERNEL, SDE
from scoregen.training.batches import Batch

OBJECTIVES: Registry[type] = Registry("objective")
AUTO = "auto"  # the SDE's own objective (SDE.default_objective: ddpm, hsm, vdm or dsm)
TEACHER = "teacher"  # the keyword of objectives registered with teacher=True


class Objective(nn.Module):
    """Base class of training objectives (module docstring).

    Attributes:
        name: the registry key (set by :func:`register`).
        requires: SDE capabilities the objective needs.
        sde: the process the model is trained for.
    """

    name: str = "objective"
    requires: frozenset[str] = frozenset({SCALAR_KERNEL})

    def __init__(self, sde: SDE) -> None:
        super().__init__()
        lacking = sorted(self.requires - sde.capabilities)
        if lacking:
            what = "; ".join(f"{c}: {CAPABILITIES[c]}" for c in lacking)
            raise ValueError(f"objective {self.name!r} needs what the SDE {sde.name!r} does not "
                             f"offer ({what})")
        # the process belongs to the model: a learned schedule (an nn.Module) is trained, averaged
        # and saved with it, so the objective refers to it without making it a submodule
        self.__dict__["sde"] = sde

    def loss(self, model: Model, batch: Batch) -> Tensor:
        """The scalar loss of ``batch`` for ``model``."""
        raise NotImplementedError

    def forward(self, model: Model, batch: Batch) -> Tensor:
        return self.loss(model, batch)

    def after_step(self, model: Model, step: int) -> None:
        """Called after each optimizer step (``step``: steps done); nothing by default."""

    def bind(self, model: Model) -> None:
        """Called once with the model to be trained, before any step or resume (e.g. to copy
        it as a target network whose state the checkpoints then hold); nothing by default."""


def register(name: str, **meta: Any) -> Callable[[type], type]:
    """Class decorator: register an :class:`Objective` subclass as ``name`` (written once).

    ``meta``: e.g. ``processes=("ddpm",)`` for an objective defined for those SDEs only (the
    shared tests pair objectives and SDEs by it and by ``requires``)."""

    def deco(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Objective)):
            raise TypeError(f"objective {name!r} must subclass scoregen.training.objectives."
                            "Objective")
        cls.name = name
        return OBJECTIVES.register(name, **meta)(cls)

    return deco


def objective_options(name: str) -> dict[str, Any]:
    """``{option: default}`` of objective ``name``: its ``__init__``'s keyword arguments after
    the SDE (the one place the choices are written; configs are checked against them); a
    teacher is not an option."""
    params = inspect.signature(OBJECTIVES.get(name).__init__).parameters
    return {k: p.default for k, p in params.items()
            if k not in ("self", "sde", TEACHER)
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def needs_teacher(name: str) -> bool:
    """Whether objective ``name`` distils a teacher (registered with ``teacher=True``)."""
    return name != AUTO and bool(OBJECTIVES.meta(name).get(TEACHER))


def resolve_name(name: str, sde: SDE) -> str:
    """``auto`` is the process's own objective, ``sde.default_objective`` (``ddpm`` on the
    discrete DDPM process, ``hsm`` on critically-damped Langevin, ``vdm`` on the learned
    schedule, ``dsm`` otherwise)."""
    if name == AUTO:
        return sde.default_objective
    OBJECTIVES.get(name)  # a KeyError listing the known objectives
    return name


def build_objective(name: str, sde: SDE, teacher: Model | None = None,
                    **options: Any) -> Objective:
    """The objective ``name`` (or ``auto``) for ``sde`` with ``options`` (and ``teacher`` for an
    objective that distils one); unknown options are a ``ValueError`` naming the known ones."""
    name = resolve_name(name, sde)
    known = objective_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"objective {name!r} has no option {', '.join(map(repr, unknown))}; "
                         f"its options: {', '.join(known) or '(none)'}")
    if needs_teacher(name):
        options[TEACHER] = teacher
    elif teacher is not None:
        raise ValueError(f"objective {name!r} takes no teacher")
    return OBJECTIVES.get(name)(sde, **options)


# -- what objectives share ------------------------------------------------------------------------
def eps_error(model: Model, x0: Tensor, t: Tensor, eps: Tensor, cond: Tensor | None = None
              ) -> Tensor:
    """Per-sample ``mean_dims (eps_hat(x_t, t) - eps)^2`` with ``x_t = perturb(x0, t, eps)``:
    ``(B,)``. The model's prediction (any type) becomes ``eps_hat`` through
    :func:`scoregen.models.prediction.predict_pair`."""
    x_t = model.sde.perturb(x0, t, eps)
    eps_hat = predict_pair(model, x_t, t, cond).eps
    return (eps_hat - eps).pow(2).flatten(1).mean(1)


def random_batch(x0: Tensor, seed: int = 0, cond: Tensor | None = None, step: int = 0,
                 sde: SDE | None = None) -> Batch:
    """A :class:`~scoregen.training.batches.Batch` of ``x0`` with the randomness a training run
    would draw at ``step`` for examples ``0..B-1`` of seed ``seed`` (tests, benchmarks); its
    ``eps`` has the state shape of ``sde`` when given."""
    from scoregen.training.batches import draw_batch

    state = None if sde is None else sde.state_shape(tuple(x0.shape[1:]))
    batch = draw_batch(x0, seed, step, torch.arange(len(x0)), state)
    batch.cond = cond
    return batch


__all__ = [
    "AUTO",
    "OBJECTIVES",
    "TEACHER",
    "Objective",
    "build_objective",
    "eps_error",
    "needs_teacher",
    "objective_options",
    "random_batch",
    "register",
    "resolve_name",
]
