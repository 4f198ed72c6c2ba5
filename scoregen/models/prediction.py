"""The one place that knows prediction types (eps, x0, score, v) and how a network's raw
output becomes one (the parameterizations eps, x0, v and EDM's preconditioning).

**Prediction types.** Every prediction a model can make converts to and from the pair
``(x0_hat, eps_hat)`` given ``x_t = alpha x0 + sigma eps`` (the scalar kernel; other kernels
convert through the SDE's kernel operations, :func:`pair_from_output`):

- ``eps``:   eps_hat
- ``x0``:    x0_hat = (x - sigma eps_hat) / alpha
- ``score``: grad log p_t(x) = -eps_hat / sigma      (Vincent 2011; Song et al. 2021, eq. 7)
- ``v``:     v = alpha eps - sigma x0                (Salimans & Ho 2022, sec. 4)

Inverting ``v``: ``[x; v] = [[alpha, sigma], [-sigma, alpha]] [x0; eps]`` gives
``x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)`` and ``eps = (sigma x + alpha v) / (alpha^2
+ sigma^2)``.

A model's prediction is converted to the pair **once per evaluation**: a wrapper (guidance,
inpainting, re-targeting, inverse problems) gives the pair directly through a
``predict_pair(x, t)`` method and wrappers nest by asking the model inside for its pair
(:func:`predict_pair`); only the innermost network's output is converted. The samplers see a
model through :class:`scoregen.sampling.denoiser.Denoiser`, which does the same and counts NFE.
:func:`retarget` re-uses a model trained for one SDE under another by matching log-SNR.

**Parameterizations** (:data:`PARAMETERIZATIONS`): a network's raw output ``F`` at ``x_t`` is
read as ``prediction = c_skip x_t + c_out F`` with coefficients of ``alpha``, ``sigma`` and the
data std ``sigma_data`` (EDM's ``c_skip``/``c_out``, Karras et al. 2022, sec. 5 and Table 1,
written for every process and prediction type), so ``F`` has unit-variance targets:

- ``eps``: ``c_skip = sigma c_in^2``, ``c_out = alpha sigma_data c_in`` with ``c_in = 1 /
  sqrt(alpha^2 sigma_data^2 + sigma^2)``: the posterior mean of ``eps`` for Gaussian data
  ``N(0, sigma_data^2 I)`` (Wiener filter) plus a learned correction scaled by that posterior's
  std; near ``T`` on VP the skip term makes ``eps_hat ≈ x`` exactly.
- ``x0``: ``c_skip = 0``, ``c_out = 1``.
- ``v``: ``c_skip = 0``, ``c_out = sqrt(alpha^2 + sigma^2 sigma_data^2)``, the std of ``v``.
- ``edm``: reported as ``x0``: ``D = c_skip' x~ + c_out' F`` on ``x~ = x_t / alpha`` with
  ``sigma_e = sigma / alpha``, ``c_skip' = sigma_data^2 / (sigma_e^2 + sigma_data^2)``, ``c_out'
  = sigma_e sigma_data / sqrt(sigma_e^2 + sigma_data^2)`` (Table 1), i.e. ``c_skip = c_skip' /
  alpha`` on ``x_t``.
- ``consistency``: a consistency function (Song et al. 2023, "Consistency Models", eq. 7 and
  app. C), reported as ``x0``: ``f = c_skip^cm x~ + c_out^cm F`` with ``c_skip^cm =
  sigma_data^2 / ((sigma_e - sigma_min)^2 + sigma_data^2)`` and ``c_out^cm = (sigma_e -
  sigma_min) sigma_data / sqrt(sigma_e^2 + sigma_data^2)``, ``sigma_min = sigma_e(t_min)``:
  the boundary condition ``f(x, t_min) = x~ = x / alpha(t_min)`` holds exactly (``c_skip^cm
  = 1``, ``c_out^cm = 0``), and away from ``t_min`` it is EDM's preconditioning.
- ``consistency-eps`` / ``-x0`` / ``-v``: the same boundary condition over another base
  parameterization ``p`` (a student initialised from a teacher trained with ``p``). With the
  base's denoiser ``D_p = A x_t + B F`` (its prediction read as ``x0``) and ``rho = c_out^cm /
  c_out^edm = 1 - sigma_min / sigma_e``::

      f = c_skip^cm x~ + rho (D_p - c_skip^edm x~),

  i.e. ``D_p`` read as EDM's ``F`` (``F = (D_p - c_skip^edm x~) / c_out^edm``) inside Song's
  rule; for ``p = edm`` this is ``consistency`` itself, and for ``sigma_e >> sigma_min`` it is
  ``D_p``: the teacher's weights give a consistency function that is its denoising jump.
  These need ``sigma_min``; they declare ``boundary=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from scoregen.infra.shape import bcast
from scoregen.sde.base import SCALAR_KERNEL, SDE

PREDICTIONS = ("eps", "x0", "score", "v")


@runtime_checkable
class Model(Protocol):
    """What samplers call: ``model(x: (B, *D), t: (B,)) -> prediction: (B, *D)``.

    ``prediction`` is one of :data:`PREDICTIONS`; ``sde`` is the process the prediction is
    defined for (its ``alpha``, ``sigma`` give the conversions). A class-conditional model
    also has ``num_classes`` and accepts ``model(x, t, cond=labels)`` with int64 labels
    ``(B,)`` in ``[0, num_classes]`` (``num_classes`` is the null label, i.e. unconditional);
    guidance (:mod:`scoregen.sampling.guidance`) wraps it into a plain model again. A wrapper
    may also give the pair directly, ``model.predict_pair(x, t) -> Prediction``
    (:func:`predict_pair`).
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


def pair_from_output(out: Tensor, kind: str, x: Tensor, t: Tensor, sde: SDE) -> Prediction:
    """A ``kind`` prediction at ``x`` (time ``t: ()`` or ``(B,)``) as ``(x0_hat, eps_hat)`` for
    any kernel: :func:`to_x0_eps` with ``alpha(t)``, ``sigma(t)`` for the scalar kernel, else
    the SDE's kernel operations (``v`` is defined for the scalar kernel only). Without the
    scalar kernel an ``eps`` or ``score`` output is the part of the state's noise or score the
    model predicts (:meth:`~scoregen.sde.base.SDE.predicted_part`, e.g. the velocity half of
    critically-damped Langevin): it gives ``x0_hat``, and ``x0_hat`` the whole ``eps_hat``."""
    if SCALAR_KERNEL in sde.capabilities:
        t64 = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        return to_x0_eps(out, kind, x, sde.alpha(t64).to(x.dtype), sde.sigma(t64).to(x.dtype))
    if kind == "eps":
        x0 = sde.x0_from_eps(x, t, out)
    elif kind == "x0":
        x0 = out
    elif kind == "score":
        x0 = sde.x0_from_eps(x, t, sde.eps_from_score(x, t, out))
    else:
        raise ValueError(f"prediction type {kind!r} needs the scalar kernel; the SDE "
                         f"{sde.name!r} takes eps, x0 or score predictions")
    return Prediction(x0, sde.eps_from_x0(x, t, x0))


def output_from_pair(pair: Prediction, kind: str, x: Tensor, t: Tensor, sde: SDE) -> Tensor:
    """Inverse of :func:`pair_from_output`: the pair as a ``kind`` prediction."""
    if SCALAR_KERNEL in sde.capabilities:
        t64 = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        return from_x0_eps(pair, kind, sde.alpha(t64).to(x.dtype), sde.sigma(t64).to(x.dtype))
    if kind == "x0":
        return pair.x0
    if kind == "eps":
        return sde.predicted_part(pair.eps)
    if kind == "score":
        return sde.predicted_part(sde.score_from_eps(pair.eps, t))
    raise ValueError(f"prediction type {kind!r} needs the scalar kernel; the SDE {sde.name!r} "
                     "takes eps, x0 or score predictions")


def output_shape(x: Tensor, sde: SDE) -> tuple[int, ...]:
    """The shape of a model's output at a state ``x``: the data's (``x``'s own for every
    process whose state is its data)."""
    return tuple(sde.data_from_state(x).shape)


def predict_pair(model: Model, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Prediction:
    """``model``'s ``(x0_hat, eps_hat)`` at ``x: (B, *D)``, ``t: (B,)``: a wrapper's own
    ``predict_pair``, else its output converted once (:func:`pair_from_output`)."""
    kw = {} if cond is None else {"cond": cond}
    pair_fn = getattr(model, "predict_pair", None)
    if pair_fn is not None:
        return pair_fn(x, t, **kw)
    out = model(x, t, **kw)
    if tuple(out.shape) != output_shape(x, model.sde):
        raise ValueError(f"model returned shape {tuple(out.shape)} for input {tuple(x.shape)} "
                         f"(expected {output_shape(x, model.sde)})")
    return pair_from_output(out, model.prediction, x, t, model.sde)


# -- parameterizations: a network's raw output as a prediction ---------------------------------
Coefficients = Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Parameterization:
    """How a network output ``F`` becomes a prediction: ``c_skip x_t + c_out F`` (module
    docstring). ``reports``: the prediction type the model declares; ``coefficients(alpha,
    sigma, sigma_data) -> (c_skip, c_out)``, or ``coefficients(alpha, sigma, sigma_data,
    sigma_min)`` when ``boundary`` (a consistency function: ``sigma_min = sigma(t_min) /
    alpha(t_min)``, where ``f(x, t_min) = x / alpha(t_min)``)."""

    name: str
    reports: str
    coefficients: Coefficients
    boundary: bool = False

    def at(self, alpha: Tensor, sigma: Tensor, sigma_data: float,
           sigma_min: float | None = None) -> tuple[Tensor | None, Tensor]:
        """``(c_skip, c_out)`` (``c_skip`` is ``None`` without a skip term)."""
        if not self.boundary:
            return self.coefficients(alpha, sigma, sigma_data)
        if sigma_min is None:
            raise ValueError(f"parameterization {self.name!r} needs sigma_min (the noise level "
                             "sigma/alpha at t_min, where f(x, t_min) = x / alpha)")
        return self.coefficients(alpha, sigma, sigma_data, sigma_min)

    def output(self, x: Tensor, F: Tensor, alpha: Tensor, sigma: Tensor,
               sigma_data: float, sigma_min: float | None = None) -> Tensor:
        """``c_skip x + c_out F`` with the coefficients computed in the dtype of ``alpha``
        (float64 in :class:`~scoregen.models.ScoreModel`) and cast to ``x``'s."""
        c_skip, c_out = self.at(alpha, sigma, sigma_data, sigma_min)
        out = bcast(c_out, x).to(x.dtype) * F
        return out if c_skip is None else bcast(c_skip, x).to(x.dtype) * x + out

    def kernel_output(self, x: Tensor, F: Tensor, t: Tensor, sde: SDE,
                      sigma_data: float) -> Tensor:
        """The prediction for a process without the scalar kernel, from its kernel: ``eps``:
        the Gaussian-data posterior mean of the predicted noise plus its std times ``F``
        (:meth:`~scoregen.sde.base.SDE.gaussian_eps`, the same rule as the Wiener-filter skip);
        ``x0``: ``F``. ``v`` and ``edm`` are written in ``alpha`` and ``sigma`` (scalar kernel)."""
        if self.name == "x0":
            return F
        if self.name == "eps":
            mean, std = sde.gaussian_eps(x, t, sigma_data)
            return mean + std * F
        raise ValueError(f"the {self.name!r} parameterization needs the scalar kernel; the SDE "
                         f"{sde.name!r} takes eps or x0 (model.prediction)")


def _eps_coefficients(alpha: Tensor, sigma: Tensor, sd: float) -> tuple[Tensor, Tensor]:
    c_in = torch.rsqrt(alpha**2 * sd**2 + sigma**2)
    return sigma * c_in**2, alpha * sd * c_in


def _edm_coefficients(alpha: Tensor, sigma: Tensor, sd: float) -> tuple[Tensor, Tensor]:
    s2 = (sigma / alpha) ** 2
    return sd**2 / (s2 + sd**2) / alpha, (sigma / alpha) * sd * torch.rsqrt(s2 + sd**2)


PARAMETERIZATIONS: dict[str, Parameterization] = {
    p.name: p for p in (
        Parameterization("eps", "eps", _eps_coefficients),
        Parameterization("x0", "x0", lambda a, s, sd: (None, torch.ones_like(a))),
        Parameterization("v", "v", lambda a, s, sd: (None, torch.sqrt(a**2 + s**2 * sd**2))),
        Parameterization("edm", "x0", _edm_coefficients),
    )
}


def _consistency(base: Parameterization) -> Parameterization:
    """The consistency function over ``base`` (module docstring: ``f = c_skip^cm x~ + rho (D_p -
    c_skip^edm x~)``, Song et al. 2023 app. C for ``base = edm``)."""

    def coefficients(alpha: Tensor, sigma: Tensor, sd: float, sigma_min: float
                     ) -> tuple[Tensor, Tensor]:
        c_skip, c_out = base.coefficients(alpha, sigma, sd)
        # the base's prediction as x0 = A x_t + B F: to_x0_eps is linear in (prediction, x)
        one = torch.ones_like(alpha)
        a = to_x0_eps(torch.zeros_like(alpha) if c_skip is None else c_skip, base.reports, one,
                      alpha, sigma).x0
        b = to_x0_eps(c_out, base.reports, torch.zeros_like(alpha), alpha, sigma).x0
        s = sigma / alpha
        rho = 1 - sigma_min / s
        skip_cm = sd**2 / ((s - sigma_min) ** 2 + sd**2)
        skip_edm = sd**2 / (s**2 + sd**2)
        return (skip_cm - rho * skip_edm) / alpha + rho * a, rho * b

    name = "consistency" if base.name == "edm" else f"consistency-{base.name}"
    return Parameterization(name, "x0", coefficients, boundary=True)


PARAMETERIZATIONS.update({c.name: c for c in map(_consistency, list(PARAMETERIZATIONS.values()))})


def parameterization(name: str) -> Parameterization:
    """The :class:`Parameterization` called ``name``; a clear error listing the known ones."""
    if name not in PARAMETERIZATIONS:
        raise ValueError(f"unknown prediction {name!r}; known: {', '.join(PARAMETERIZATIONS)}")
    return PARAMETERIZATIONS[name]


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

    def predict_pair(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Prediction:
        """The pair of the model inside at the matching time: the same pair under both SDEs."""
        src = self.model.sde
        t_src = src.t_from_log_snr(self.sde.log_snr(t))
        scale = src.alpha(t_src) / self.sde.alpha(t)
        return predict_pair(self.model, x * bcast(scale.to(x.dtype), x), t_src, cond)

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return output_from_pair(self.predict_pair(x, t, cond), self.prediction, x, t, self.sde)


def retarget(model: Model, sde: SDE) -> Model:
    """``model`` if it already targets ``sde``, else a :class:`Retargeted` view of it (both
    processes need the scalar kernel: the views are matched by log-SNR)."""
    if model.sde == sde:
        return model
    lacking = [p.name for p in (model.sde, sde) if SCALAR_KERNEL not in p.capabilities]
    if lacking:
        verb = "lacks" if len(lacking) == 1 else "lack"
        raise ValueError(f"a model is re-targeted to another SDE by matching log-SNR, which "
                         f"{' and '.join(map(repr, lacking))} {verb} (no scalar kernel); sample "
                         "it with its own SDE")
    return Retargeted(model, sde)


__all__ = [
    "PARAMETERIZATIONS",
    "PREDICTIONS",
    "Model",
    "Parameterization",
    "Prediction",
    "Retargeted",
    "check_model",
    "check_prediction",
    "from_x0_eps",
    "output_from_pair",
    "output_shape",
    "pair_from_output",
    "parameterization",
    "predict_pair",
    "retarget",
    "to_x0_eps",
]
