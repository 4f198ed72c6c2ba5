"""scoregen: score-based continuous-time diffusion models.

Pluggable SDEs (:mod:`scoregen.sde`), exact Gaussian-mixture oracles
(:mod:`scoregen.analytic`), interchangeable samplers behind one call
(:func:`scoregen.sample`).
"""

from __future__ import annotations

from scoregen import analytic, param, samplers, sde
from scoregen.analytic import GaussianMixture
from scoregen.param import retarget
from scoregen.sampling import SampleResult, sample

__version__ = "0.1.0"

__all__ = [
    "GaussianMixture",
    "SampleResult",
    "__version__",
    "analytic",
    "param",
    "retarget",
    "sample",
    "samplers",
    "sde",
]
