"""Linear inverse problems ``y = A x + sigma_y n``: an operator plus a method.

- :mod:`~scoregen.sampling.inverse.base`: ``Operator``, its SVD layout and the checked
  ``Measurement``.
- :mod:`~scoregen.sampling.inverse.operators`: the measurement operators (masks, average
  pooling, Gaussian blur, random projections; ``A``, ``A^T``, the SVD where known) and their
  registry; :mod:`~scoregen.sampling.inverse.regions`: the named mask regions.
- :mod:`~scoregen.sampling.inverse.methods`: the posterior-sampling methods and the model
  wrapper through which they reach every sampler.
- :mod:`~scoregen.sampling.inverse.smc`: the particle method.
- :mod:`~scoregen.sampling.inverse.solve`: :func:`solve_inverse`, the one entry point.

The exact posterior of a Gaussian mixture under any such measurement, the reference for
every method's bias, is :meth:`scoregen.models.analytic.GaussianMixture.posterior`.
"""

from __future__ import annotations

from scoregen.sampling.inverse.methods import METHODS, Conditioned, Method
from scoregen.sampling.inverse.operators import (
    MASKS,
    OPERATORS,
    SVD,
    Blur,
    Downsample,
    LinearOperator,
    Mask,
    MatrixOperator,
    Measurement,
    Operator,
    measurement,
    operator,
    region_mask,
)
from scoregen.sampling.inverse.solve import solve_inverse

__all__ = ["MASKS", "METHODS", "OPERATORS", "SVD", "Blur", "Conditioned", "Downsample",
           "LinearOperator", "Mask", "MatrixOperator", "Measurement", "Method", "Operator",
           "measurement", "operator", "region_mask", "solve_inverse"]
