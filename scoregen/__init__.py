"""scoregen: score-based continuous-time diffusion models.

Pluggable SDEs (:mod:`scoregen.sde`), exact Gaussian-mixture oracles
(:mod:`scoregen.models.analytic`), interchangeable samplers behind one call
(:func:`scoregen.sample`), few-step students distilled from any of them
(:func:`scoregen.distill`, :func:`scoregen.load_student`).

The package reads by stage: ``data/`` -> ``sde/`` + ``models/`` -> ``training/`` (config,
objectives, loop, run folder, checkpoints) -> ``samplers/`` + ``sampling/`` (the public
:func:`sample`, the NFE-counting denoiser, noise, guidance, inpainting, grids) ->
``evaluation/`` (metrics, likelihood, comparison); ``infra/`` holds what has no domain
(registries, broadcasting, distributed, plotting). This module is the package face: it
re-exports the names a user script starts from (:func:`sample`, :func:`inpaint`,
:func:`solve_inverse` for inverse problems).
"""

from __future__ import annotations

from scoregen import samplers, sde
from scoregen.infra.version import __version__
from scoregen.models import analytic, prediction
from scoregen.models.analytic import GaussianMixture
from scoregen.models.prediction import retarget
from scoregen.sampling.api import SampleResult, sample
from scoregen.sampling.guidance import Guidance
from scoregen.sampling.inpaint import inpaint
from scoregen.sampling.inverse import solve_inverse
from scoregen.training.distill import distill, load_student

__all__ = [
    "GaussianMixture",
    "Guidance",
    "SampleResult",
    "__version__",
    "analytic",
    "distill",
    "inpaint",
    "load_student",
    "prediction",
    "retarget",
    "sample",
    "samplers",
    "sde",
    "solve_inverse",
]
