"""Training objectives, one file each, registered on import (like samplers and SDEs).

``build_objective("dsm", sde, weighting="likelihood")`` builds one; ``objective(model,
batch)`` is the scalar loss of a micro-batch. A config picks one with ``objective: {name:
NAME, **options}``; the options are checked against the objective's own signature
(:func:`objective_options`). The contract and the registry: :mod:`.base`; a new objective is
a new module in this package (see ``docs/adding-an-objective.md``).

- ``dsm`` (:mod:`.dsm`): denoising score matching with weightings and time samplings.
- ``ddpm`` (:mod:`.ddpm`): the discrete DDPM loss of Ho et al. 2020.
- ``min_snr`` (:mod:`.min_snr`): the min-SNR-gamma weighted eps error of Hang et al. 2023.
- ``hsm`` (:mod:`.hsm`): hybrid score matching of critically-damped Langevin diffusion.
- ``vdm`` (:mod:`.vdm`): the continuous-time variational bound, training a learned schedule.
- ``progressive`` (:mod:`.progressive`): progressive distillation (Salimans & Ho 2022).
- ``consistency_distillation``, ``consistency_training`` (:mod:`.consistency`): consistency
  models (Song et al. 2023; Song & Dhariwal 2023; Geng et al. 2024).
- ``reflow`` (:mod:`.reflow`): rectified flow on coupled pairs (Liu et al. 2022).
- ``auto``: the process's own (``SDE.default_objective``): ``ddpm`` on the discrete DDPM
  process, ``hsm`` on ``cld``, ``vdm`` on the learned schedule, ``dsm`` otherwise.
"""

from __future__ import annotations

import importlib
import pkgutil

from scoregen.training.objectives.base import (
    AUTO,
    OBJECTIVES,
    TEACHER,
    Objective,
    build_objective,
    eps_error,
    needs_teacher,
    objective_options,
    random_batch,
    register,
    resolve_name,
)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base" and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

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
