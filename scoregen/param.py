"""The one place that knows prediction types: eps, x0, score and v.

Every prediction a model can make converts to and from the pair ``(x0_hat, eps_hat)``
given ``x_t = alpha x0 + sigma eps`` (the marginal of every SDE here):

- ``eps``:   eps_hat
- ``x0``:    x0_hat = (x - sigma eps_hat) / alpha
- ``score``: grad log p_t(x) = -eps_hat / sigma      (Vincent 2011; Song et al. 2021, eq. 7)
- ``v``:     v = alpha eps - sigma x0                (Salimans & Ho 2022, sec. 4)

Inverting ``v``: ``[x; v] = [[alpha, sigma], [-sigma, alpha]] [x0; eps]`` gives
``x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)`` and ``eps = (sigma x + alpha v) / (alpha^2
+ sigma^2)``.

:class:`Denoiser` wraps any model (a network wrapper or the exact mixture oracle) for the
samplers: it expands ``t`` to the batch, converts the model's prediction to
``(x0_hat, eps_hat)`` and counts network evaluations (NFE). :func:`retarget` re-uses a model
trained for one SDE under another by matching log-SNR.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from scoregen._shape import batch_times, bcast
from scoregen.sde.base import SDE

PREDICTIONS = ("eps", "x0", "score", "v")


@runtime_checkable
class Model(Protocol):
    """What samplers call: ``model(x: (B, *D), t: (B,)) -> prediction: (B, *D)``.

    ``prediction`` is one of :data:`PREDICTIONS`; ``sde`` is the process the prediction is
    defined for (its ``alpha``, ``sigma`` give the conversions). A class-conditional model
    also has ``num_classes`` and accepts ``model(x, t, cond=labels)`` with int64 labels
    ``(B,)`` in ``[0, num_classes]`` (``num_classes`` is the null label, i.e. unconditional);
    guidance (:mod:`scoregen.guidance`) wraps it into a plain model again.
    """

    prediction: str
    sde: SDE

    def __call__(self, x: Tensor, t: Tensor) -> Tensor: ...


class Prediction(NamedTuple):
    """A model output as the pair ``(x0_hat, eps_hat)``."""

    x0: Tensor
    eps: Tensor


def check_prediction(kind: str) -> str:
    """Validate a prediction type name."""
    if kind not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {kind!r}; known: {', '.join(PREDICTIONS)}")
    return kind


def to_x0_eps(pred: Tensor, kind: str, x: Tensor, alpha: Tensor, sigma: Tensor) -> Prediction:
    """Convert a ``kind`` prediction at ``x_t = x`` into ``(x0_hat, eps_hat)``.

    ``alpha``, ``sigma``: shape ``()`` or ``(B,)``; ``x``, ``pred``: ``(B, *D)``.
    """
    a, s = bcast(alpha, x), bcast(sigma, x)
    if kind == "eps":
        return Prediction((x - s * pred) / a, pred)
    if kind == "x0":
        return Prediction(pred, (x - a * pred) / s)
    if kind == "score":
        eps = -s * pred
        return Prediction((x - s * eps) / a, eps)
    if kind == "v":
        norm = a**2 + s**2
        return Prediction((a * x - s * pred) / norm, (s * x + a * pred) / norm)
    raise ValueError(f"unknown prediction type {kind!r}; known: {', '.join(PREDICTIONS)}")


def from_x0_eps(pair: Prediction, kind: str, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Express ``(x0_hat, eps_hat)`` as a ``kind`` prediction (inverse of :func:`to_x0_eps`)."""
    x0, eps = pair
    a, s = bcast(alpha, x0), bcast(sigma, x0)
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "score":
        return -eps / s
    if kind == "v":
        return a * eps - s * x0
    raise ValueError(f"unknown prediction type {kind!r}; known: {', '.join(PREDICTIONS)}")


class Denoiser:
    """A model seen by a sampler: returns ``(x0_hat, eps_hat)`` and counts NFE.

    ``nfe`` grows by one per call, i.e. per network evaluation on a batch; samplers never
    estimate it. ``t`` may be a scalar or ``(B,)``. A model with a ``predict_pair(x, t)``
    method (a guided model, :class:`scoregen.guidance.Guided`) gives the pair directly, so
    guidance and thresholding reach every sampler through this one call.
    """

    def __init__(self, model: Model, sde: SDE) -> None:
        check_model(model, sde)
        self.model = model
        self.sde = sde
        self.kind = model.prediction
        self.nfe = 0
        self._coefficients: dict[tuple, tuple[Tensor, Tensor]] = {}  # (t, dtype, device)
        self._grid: dict[float, tuple[float, float]] = {}

    def __call__(self, x: Tensor, t: Tensor) -> Prediction:
        tb = batch_times(t, x)
        pair_fn = getattr(self.model, "predict_pair", None)
        if pair_fn is not None:
            self.nfe += 1
            return pair_fn(x, tb)
        out = self.model(x, tb)
        self.nfe += 1
        if out.shape != x.shape:
            raise ValueError(
                f"model returned shape {tuple(out.shape)} for input {tuple(x.shape)}"
            )
        if (isinstance(t, Tensor) and t.ndim == 0) or isinstance(t, float):
            alpha, sigma = self._scalar_coefficients(float(t), x)
            return to_x0_eps(out, self.kind, x, alpha, sigma)
        return to_x0_eps(out, self.kind, x, self.sde.alpha(tb), self.sde.sigma(tb))

    def precompute(self, ts: Tensor, alpha: Tensor | Sequence[float] | None = None,
                   sigma: Tensor | Sequence[float] | None = None) -> None:
        """Compute ``alpha`` and ``sigma`` of every positive time of a grid in one vectorised
        call (float64), before the sampling loop; a sampler that has them already (the stage
        times of a Runge-Kutta or adaptive step) passes them as ``alpha`` and ``sigma``."""
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


def check_model(model: object, sde: SDE) -> None:
    """Raise a clear error unless ``model`` follows :class:`Model` and was built for ``sde``."""
    if not isinstance(model, Model):
        raise TypeError(
            "a model must be callable as model(x, t) and declare `prediction` and `sde` "
            f"(see scoregen.param.Model); got {type(model).__name__}"
        )
    check_prediction(model.prediction)
    if model.sde != sde:
        raise ValueError(
            f"model was built for {model.sde!r} but sampling uses {sde!r}; "
            "re-target it with scoregen.param.retarget(model, sde) (matches log-SNR) "
            "or sample with the model's own SDE"
        )


class Retargeted:
    """``model`` (built for SDE ``A``) acting as a model for SDE ``B``.

    Both marginals are ``alpha x0 + sigma eps``, so ``x_B`` at ``t_B`` equals, up to the scale
    ``alpha_A(t_A) / alpha_B(t_B)``, a sample of ``A`` at the ``t_A`` with the same log-SNR
    ``lambda_A(t_A) = lambda_B(t_B)``; ``x0`` and ``eps`` are then identical (Kingma et al.
    2021, sec. 3.3: the model depends on the schedule only through the SNR).
    """

    def __init__(self, model: Model, sde: SDE) -> None:
        check_model(model, model.sde)
        self.model = model
        self.sde = sde
        self.prediction = model.prediction
        self.num_classes = getattr(model, "num_classes", None)

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        src = self.model.sde
        t_src = src.t_from_log_snr(self.sde.log_snr(t))
        scale = src.alpha(t_src) / self.sde.alpha(t)
        kw = {} if cond is None else {"cond": cond}
        out = self.model(x * bcast(scale, x), t_src, **kw)
        pair = to_x0_eps(out, self.prediction, x * bcast(scale, x), src.alpha(t_src),
                         src.sigma(t_src))
        return from_x0_eps(pair, self.prediction, self.sde.alpha(t), self.sde.sigma(t))


def retarget(model: Model, sde: SDE) -> Model:
    """``model`` if it already targets ``sde``, else a :class:`Retargeted` view of it."""
    return model if model.sde == sde else Retargeted(model, sde)


__all__ = [
    "PREDICTIONS",
    "Denoiser",
    "Model",
    "Prediction",
    "Retargeted",
    "check_model",
    "check_prediction",
    "from_x0_eps",
    "retarget",
    "to_x0_eps",
]
