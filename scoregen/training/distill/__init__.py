"""Few-step students of a diffusion model: progressive distillation, consistency models and
rectified-flow reflow, each a run folder that samples at its own NFE.

- :func:`distill` (:mod:`.run`): a student from a teacher, stage by stage, with the run-folder
  rules of a training run (lock, resume, overwrite, time limit).
- :mod:`.teacher`: what may teach (a run, an exact preset, ``module:function``, a model) and its
  recorded identity.
- :mod:`.methods`: the methods (``progressive``, ``consistency``, ``consistency-training``,
  ``reflow``) as stages; the straightness of a flow.
- :mod:`.stages`: a training stage as a run folder; pairs from a model's ODE.
- :mod:`.renoise`: the re-noising times of multistep consistency sampling, per NFE.
- :mod:`.student`: the record (``student.json``) and :class:`Student`, which
  ``scoregen.sample`` and ``scoregen compare`` take.

The objectives the training stages use are registered with the others
(:mod:`scoregen.training.objectives`: ``progressive``, ``consistency_distillation``,
``consistency_training``, ``reflow``). The formulas and which method to use when:
``docs/distillation.md``.
"""

from __future__ import annotations

from scoregen.training.distill.methods import METHODS, build_method, method_options, straightness
from scoregen.training.distill.run import distill
from scoregen.training.distill.student import (
    SamplingPlan,
    Student,
    StudentError,
    is_student,
    load_student,
)
from scoregen.training.distill.teacher import Teacher, TeacherError, resolve_teacher

__all__ = [
    "METHODS",
    "SamplingPlan",
    "Student",
    "StudentError",
    "Teacher",
    "TeacherError",
    "build_method",
    "distill",
    "is_student",
    "load_student",
    "method_options",
    "resolve_teacher",
    "straightness",
]
