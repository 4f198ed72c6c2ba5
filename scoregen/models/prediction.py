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

:func:`retarget` re-uses a model trained for one SDE under another by matching log-SNR.
The samplers see a model through :class:`scoregen.sampling.denoiser.Denoiser`, which
converts its prediction to ``(x0_hat, eps_hat)`` with :func:`to_x0_eps` and counts NFE.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from torch import Tensor

from scoregen.infra.shape import bcast
from scoregen.sde.base import SDE

PREDICTIONS = ("eps", "x0", "score", "v")


@runtime_checkable
class Model(Protocol):
    """What samplers call: ``model(x: (B, *D), t: (B,)) -> prediction: (B, *D)``.

    ``prediction`` is one of :data:`PREDICTIONS`; ``sde`` is the process the prediction is
    defined for (its ``alpha``, ``sigma`` give the conversions). A class-conditional model
    also has ``num_classes`` and accepts ``model(x, t, cond=labels)`` with int64 labels
    ``(B,)`` in ``[0, num_classes]`` (``num_classes`` is the null label, i.e. unconditional);
    guidance (:mod:`scoregen.sampling.guidance`) wraps it into a plain model again.
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


def check_model(model: object, sde: SDE) -> None:
    """Raise a clear error unless ``model`` follows :class:`Model` and was built for ``sde``."""
    if not isinstance(model, Model):
        raise TypeError(
            "a model must be callable as model(x, t) and declare `prediction` and `sde` "
            f"(see scoregen.models.prediction.Model); got {type(model).__name__}"
        )
    check_prediction(model.prediction)
    if model.sde != sde:
        raise ValueError(
            f"model was built for {model.sde!r} but sampling uses {sde!r}; "
            "re-target it with scoregen.models.prediction.retarget(model, sde) (matches log-SNR) "
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
    "Model",
    "Prediction",
    "Retargeted",
    "check_model",
    "check_prediction",
    "from_x0_eps",
    "retarget",
    "to_x0_eps",
]
