"""Image samples judged by their dataset's classifier and by their brightness.

``measure(model, data, sampler, nfe, n)`` draws ``n`` samples (seeds ``0..n-1``) at an NFE
budget and returns the Frechet distance on the dataset's classifier features (``fd_digits``
for 8x8 digits, ``fd_fashion`` for Fashion-MNIST) against the held-out test split, and the
per-image mean brightness statistics of Lin et al. 2024 (sec. 5.3: a flawed schedule cannot
make very bright or very dark images): mean, std, 1st and 99th percentile and range of the
per-image mean pixel value, which :func:`brightness` computes for the data as well.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from scoregen.data import load_dataset
from scoregen.evaluation import fashion_classifier  # noqa: F401  (fd_fashion registers)
from scoregen.evaluation.metrics import METRICS
from scoregen.sampling.api import sample

FD = {"digits": "fd_digits", "fashion_mnist": "fd_fashion"}


def brightness(x: Tensor) -> dict[str, float]:
    """Statistics of the per-image mean pixel value of ``x: (N, C, H, W)`` in [-1, 1]."""
    m = x.flatten(1).mean(1).double()
    q = torch.quantile(m, torch.tensor([0.01, 0.99], dtype=torch.float64))
    return {"mean": float(m.mean()), "std": float(m.std()), "p01": float(q[0]),
            "p99": float(q[1]), "min": float(m.min()), "max": float(m.max())}


def held_out(data: str, n: int | None = None) -> Tensor:
    x = load_dataset(data, "test")
    return x if n is None else x[:n]


def measure(model: Any, data: str, sampler: str, nfe: int, n: int,
            spacing: str = "auto", reference: Tensor | None = None) -> dict[str, Any]:
    """FD and brightness of ``n`` samples of ``model`` at budget ``nfe`` (samples clipped to
    [-1, 1], as images are shown and as the data are)."""
    res = sample(model, model.sde, (n, *model.data_shape), sampler, nfe=nfe, spacing=spacing,
                 seed=0)
    x = res.x.clamp(-1, 1)
    ref = held_out(data) if reference is None else reference
    return {"fd": METRICS.get(FD[data])(x, ref), "nfe": res.nfe, **brightness(x),
            "samples": x}


__all__ = ["FD", "brightness", "held_out", "measure"]
