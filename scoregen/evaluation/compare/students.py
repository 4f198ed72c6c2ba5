"""Distilled students as methods of the comparison, and the teacher's ODE map they are held to.

A student (:mod:`scoregen.training.distill`) becomes a :class:`Method` of family ``student``:
its NFE budget is planned by its own sampling plan (the largest NFE it offers within the
budget; a budget below its smallest NFE is skipped, like a sampler's), it starts from the same
per-sample noise as every sampler (``x_T`` itself when it runs under the problem's process, else
the same standard normal draw ``z`` under its own process, e.g. a rectified flow on
``linear``), its network calls are counted by the same :class:`~scoregen.sampling.denoiser.
Denoiser`, and its cost comes with each record (teacher evaluations summed over examples,
optimizer steps, wall seconds of the stages its model was made by).

For deterministic methods (every deterministic sampler, and a student at a setting whose
samples are a map of the noise: progressive and rectified-flow students, a consistency
student at one step) the comparison also reports the **endpoint error**: the mean distance to
the teacher's probability-flow map of the same noise (:func:`teacher_flow`), exact on the
oracle (:func:`scoregen.evaluation.reference.pf_ode_endpoint`), else a dopri5 solve of the
teacher's ODE to ``sigma = 0`` at ``rtol = atol = 1e-5``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from scoregen.evaluation.compare.methods import Method, Setting
from scoregen.evaluation.compare.problems import Problem, adaptive_grid, initial_noise
from scoregen.sampling.noise import seeds_for

FLOW_TOL = 1e-5  # dopri5 tolerance of a trained teacher's ODE map


def teacher_flow(problem: Problem, n: int, seed: int = 0, tol: float = FLOW_TOL) -> Tensor:
    """The teacher's probability-flow map to ``sigma = 0`` of the comparison's ``x_T``: exact for
    the mixture oracle (float64), else ``ode_dopri5`` at ``rtol = atol = tol`` on ``[T, t_min,
    0]`` (the final interval solved)."""
    from scoregen.sampling.api import sample

    x_T = initial_noise(problem, n, seed)
    if problem.mixture is not None and problem.model.__class__.__name__ == "OracleModel":
        from scoregen.evaluation.reference import pf_ode_endpoint

        return pf_ode_endpoint(problem.mixture, problem.sde, x_T.to(torch.float64))
    return sample(problem.model, problem.sde, x_T, "ode_dopri5", None,
                  ts=adaptive_grid(problem.sde), rtol=tol, atol=tol,
                  seeds=seeds_for(n, seed, device=x_T.device)).x


def check_teacher(student, problem: Problem, identity: dict | None) -> None:
    """Refuse a student whose recorded teacher is not the comparison's model (``identity``:
    the problem's teacher identity, :func:`scoregen.training.distill.resolve_teacher`)."""
    if identity is None:
        return
    saved = student.record["teacher"]
    keys = ("kind", "preset", "sde", "sha256")
    if any(saved.get(k) != identity.get(k) for k in keys):
        source = student.record.get("teacher_name", saved)
        raise ValueError(f"student {student.path} was distilled from {source}, not from the "
                         f"model of this comparison ({problem.name}); compare it with its own "
                         "teacher (--checkpoint, or --preset with --sde)")


def student_methods(paths: Sequence[str | Path], problem: Problem,
                    identity: dict | None = None) -> list[Method]:
    """Each student folder in ``paths`` as a :class:`Method` (module docstring)."""
    from scoregen.sampling.api import sample
    from scoregen.training.distill import StudentError, load_student

    methods = []
    for path in paths:
        student = load_student(path, device=problem.device)
        check_teacher(student, problem, identity)
        if tuple(student.shape) != tuple(problem.shape):
            raise ValueError(f"student {path} makes samples of shape {student.shape}, the "
                             f"comparison's are {problem.shape}")

        def draw(model, sde, x_T, setting, seed, seeds=None, _s=student):
            seeds = (seeds_for(x_T.shape[0], seed, device=x_T.device) if seeds is None
                     else seeds.to(x_T.device))
            start = x_T if _s.sde == sde else (x_T.shape[0], *_s.shape)
            res = _s.sampling_plan(steps=setting.steps)
            out = sample(_s, _s.sde, start, steps=res.nfe, seeds=seeds, dtype=x_T.dtype,
                         device=x_T.device, check_finite=False)
            return out.x, out.nfe

        def steps_for(sde, state_shape, budget, _s=student):
            try:
                return _s.sampling_plan(nfe=budget).nfe
            except StudentError:
                return None

        def deterministic(setting: Setting, _s=student) -> bool:
            return _s.sampling_plan(steps=setting.steps).deterministic

        def cost(setting: Setting, _s=student) -> dict[str, float]:
            return _s.cost(*_s.sampling_plan(steps=setting.steps).uses)

        folder = Path(path).name
        label = student.method if folder == student.method else f"{student.method} ({folder})"
        methods.append(Method(label, "student", 1,
                              not all(deterministic(Setting(steps=k)) for k in student.nfes()),
                              draw, (), True, steps_for, deterministic, cost))
    return methods


__all__ = ["FLOW_TOL", "check_teacher", "student_methods", "teacher_flow"]
