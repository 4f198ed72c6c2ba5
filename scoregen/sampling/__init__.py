"""Everything between a model and a registered sampler.

- :mod:`~scoregen.sampling.api`: :func:`sample`, the one public entry point.
- :mod:`~scoregen.sampling.denoiser`: the :class:`Denoiser` samplers call, which converts a
  model's prediction to ``(x0_hat, eps_hat)`` and counts NFE.
- :mod:`~scoregen.sampling.noise`: counter-based per-sample noise streams.
- :mod:`~scoregen.sampling.guidance`: conditioning and guidance as a model wrapper.
- :mod:`~scoregen.sampling.inpaint`: known coordinates imposed during sampling.
- :mod:`~scoregen.sampling.inverse`: linear inverse problems: measurement operators,
  posterior-sampling methods, :func:`solve_inverse`.
- :mod:`~scoregen.sampling.nfe_budget`: NFE budgets as step counts.
- :mod:`~scoregen.sampling.grid`: time grids; :mod:`~scoregen.sampling.tuned_grids` and
  :mod:`~scoregen.sampling.grid_tuning`: grids fitted to a model and their store.

The registered solvers themselves live in :mod:`scoregen.samplers`, one file each; they
import nothing from here.
"""

from __future__ import annotations

from scoregen.sampling.api import (
    NonFiniteSamplesError,
    SampleResult,
    SamplerOptionError,
    check_options,
    sample,
)
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.grid import SPACINGS, check_grid, time_grid
from scoregen.sampling.guidance import Guidance, guide
from scoregen.sampling.inpaint import inpaint
from scoregen.sampling.inverse import solve_inverse
from scoregen.sampling.noise import NoiseSource, seeds_for

__all__ = [
    "SPACINGS",
    "Denoiser",
    "Guidance",
    "NoiseSource",
    "NonFiniteSamplesError",
    "SampleResult",
    "SamplerOptionError",
    "check_grid",
    "check_options",
    "guide",
    "inpaint",
    "sample",
    "seeds_for",
    "solve_inverse",
    "time_grid",
]
