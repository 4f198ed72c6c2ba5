"""What a sampler calls: a model as ``(x0_hat, eps_hat)`` pairs, with its NFE counted.

:class:`Denoiser` wraps any model (a network wrapper, an adapter or the exact mixture oracle)
for the samplers: it expands ``t`` to the batch, converts the model's prediction to
``(x0_hat, eps_hat)`` (:func:`scoregen.models.prediction.to_x0_eps`) and counts network
evaluations (NFE).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from scoregen.infra.shape import batch_times
from scoregen.models.prediction import Model, Prediction, check_model, predict_pair, to_x0_eps
from scoregen.sde.base import SCALAR_KERNEL, SDE


class Denoiser:
    """A model seen by a sampler: returns ``(x0_hat, eps_hat)`` and counts NFE.

    ``nfe`` grows by one per call, i.e. per network evaluation on a batch; samplers never
    estimate it. ``t`` may be a scalar or ``(B,)``. A model with a ``predict_pair(x, t)``
    method (guided, inpainted or re-targeted models) gives the pair directly, so those
    wrappers reach every sampler through this one call
    (:func:`scoregen.models.prediction.predict_pair`); a plain model's output is converted
    once, with ``alpha`` and ``sigma`` of the sampler's grid times computed once per time.
    """

    def __init__(self, model: Model, sde: SDE) -> None:
        check_model(model, sde)
        self.model = model
        self.sde = sde
        self.kind = model.prediction
        self.nfe = 0
        self._wrapper = hasattr(model, "predict_pair")  # gives the pair itself
        self._scalar_kernel = SCALAR_KERNEL in sde.capabilities
        self._coefficients: dict[tuple, tuple[Tensor, Tensor]] = {}  # (t, dtype, device)
        self._grid: dict[float, tuple[float, float]] = {}

    def __call__(self, x: Tensor, t: Tensor) -> Prediction:
        tb = batch_times(t, x)
        self.nfe += 1
        scalar_time = (isinstance(t, Tensor) and t.ndim == 0) or isinstance(t, float)
        if not (scalar_time and self._scalar_kernel) or self._wrapper:
            return predict_pair(self.model, x, tb)
        out = self.model(x, tb)  # the common case: one network, one time for the batch
        if out.shape != x.shape:
            raise ValueError(
                f"model returned shape {tuple(out.shape)} for input {tuple(x.shape)}"
            )
        alpha, sigma = self._scalar_coefficients(float(t), x)
        return to_x0_eps(out, self.kind, x, alpha, sigma)

    def precompute(self, ts: Tensor, alpha: Tensor | Sequence[float] | None = None,
                   sigma: Tensor | Sequence[float] | None = None) -> None:
        """Compute ``alpha`` and ``sigma`` of every positive time of a grid in one vectorised
        call (float64), before the sampling loop; a sampler that has them already (the stage
        times of a Runge-Kutta or adaptive step) passes them as ``alpha`` and ``sigma``. Nothing
        to do without the scalar kernel (the model's output converts through the kernel)."""
        if not self._scalar_kernel:
            return
        ts = torch.as_tensor(ts, dtype=torch.float64).cpu()
        if alpha is None or sigma is None:
            ts = ts[ts > 0]
            alpha, sigma = self.sde.alpha(ts), self.sde.sigma(ts)
        for t, a, s in zip(ts.reshape(-1).tolist(), _floats(alpha), _floats(sigma), strict=True):
            self._grid[t] = (a, s)

    def _scalar_coefficients(self, t: float, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha(t), sigma(t))`` for one time shared by the batch, computed once per time
        (in float64, then cast: the sampler's grid times repeat across calls)."""
        key = (t, x.dtype, x.device)
        cached = self._coefficients.get(key)
        if cached is None:
            known = self._grid.get(t)
            if known is None:
                t64 = torch.tensor([t], dtype=torch.float64)
                known = float(self.sde.alpha(t64)), float(self.sde.sigma(t64))
            cached = tuple(torch.tensor(c, dtype=x.dtype, device=x.device) for c in known)
            if len(self._coefficients) < 100_000:
                self._coefficients[key] = cached
        return cached

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """``grad log p_t(x) = -eps_hat / sigma(t)``."""
        return self.sde.score_from_eps(self(x, t).eps, batch_times(t, x))


def _floats(values: Tensor | Sequence[float]) -> list[float]:
    """A tensor or a sequence of numbers as a flat list of Python floats."""
    if isinstance(values, Tensor):
        return values.reshape(-1).tolist()
    return [float(v) for v in values]


__all__ = ["Denoiser"]
