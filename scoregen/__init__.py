"""scoregen: score-based continuous-time diffusion models.

Pluggable SDEs (:mod:`scoregen.sde`), exact Gaussian-mixture oracles
(:mod:`scoregen.analytic`), interchangeable samplers behind one call
(:func:`scoregen.sample`).

The pipeline reads in the folder names: ``data/`` -> ``sde/`` + ``models/`` -> ``training/``
(config, losses, trainer, checkpoints) -> ``samplers/`` + :mod:`scoregen.sampling` ->
``evaluation/`` (metrics, likelihood, comparison). Modules that moved into ``training/`` and
``evaluation/`` keep their old import paths (:mod:`scoregen._moved`).
"""

from __future__ import annotations

from scoregen import _moved, analytic, param, samplers, sde
from scoregen.analytic import GaussianMixture
from scoregen.guidance import Guidance
from scoregen.inpaint import inpaint
from scoregen.param import retarget
from scoregen.sampling import SampleResult, sample

_moved.install()

__version__ = "0.1.0"

__all__ = [
    "GaussianMixture",
    "Guidance",
    "SampleResult",
    "__version__",
    "analytic",
    "inpaint",
    "param",
    "retarget",
    "sample",
    "samplers",
    "sde",
]
