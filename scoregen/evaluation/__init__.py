"""Evaluation: how good are the samples and the likelihoods?

The last stage of the pipeline (data -> SDE + model -> training -> checkpoint -> sampling
-> **evaluation**). It reads checkpoints and samples and never feeds back into training:

- :mod:`~scoregen.evaluation.metrics`: distances between sample sets, mixture-aware errors,
  Fréchet distance, noise floors; the :data:`~scoregen.evaluation.metrics.METRICS` registry.
- :mod:`~scoregen.evaluation.likelihood`: ``log p(x)`` through the probability-flow ODE.
- :mod:`~scoregen.evaluation.digits_classifier`: the digits CNN whose features give
  ``fd_digits``; :mod:`~scoregen.evaluation.fashion_classifier` the same for Fashion-MNIST
  (``fd_fashion``).
- :mod:`~scoregen.evaluation.compare`: quality versus NFE over every sampler on one problem.
- :mod:`~scoregen.evaluation.peers`: other libraries' samplers driven by the same model.
"""

from __future__ import annotations

from scoregen.evaluation import (  # noqa: F401  (fd_digits, fd_fashion register)
    digits_classifier,
    fashion_classifier,
    metrics,
)
