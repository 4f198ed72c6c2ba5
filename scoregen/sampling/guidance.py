"""Conditioning and guidance: one wrapper turns (model, labels, guidance) into a plain model.

Scale convention (one for every kind of guidance): with the unconditional and conditional
scores ``s_u = grad log p_t(x)`` and ``s_c = grad log p_t(x | y)``, guidance with scale
``w`` samples with

    s_w = s_u + w (s_c - s_u),        i.e.  eps_w = eps_u + w (eps_c - eps_u)

(``score = -eps / sigma``), so ``w = 0`` is unconditional, ``w = 1`` exact conditional
sampling and ``w > 1`` sharpens ``p_t(x) p_t(y | x)^w``. This is Ho & Salimans 2022's
``eps_c + w' (eps_c - eps_u)`` with ``w = 1 + w'`` (the convention of Imagen, SD and
diffusers' ``guidance_scale``).

- **Classifier-free guidance** (Ho & Salimans 2022): ``eps_c`` and ``eps_u`` come from one
  class-conditional network, ``eps_u`` with the extra *null* label ``num_classes``. Both are
  evaluated in **one batched network call** on ``2B`` rows (``w = 0`` or ``1`` need one half
  only and evaluate ``B`` rows).
- **Classifier guidance** (Song et al. 2021, sec. 5 and app. I; Dhariwal & Nichol 2021,
  Algorithm 2): ``s_c - s_u = grad_x log p_t(y | x)`` from a noise-conditional classifier
  ``classifier(x, t) -> logits (B, C)`` (normalised by ``log_softmax``), so ``eps_w = eps_u -
  w sigma grad_x log p_t(y | x)``; the model gives ``eps_u`` (with the null label if it is
  conditional).
- **Guidance interval** (Kynkäänniemi et al. 2024): the scale ``w`` applies only for ``t`` in
  ``[t_lo, t_hi]``; outside it, ``w = 1`` (plain conditional sampling).
- **Dynamic thresholding** of ``x0_hat`` (Saharia et al. 2022, sec. 2.3; DPM-Solver's
  ``correcting_x0_fn``): ``s = max(quantile_p(|x0_hat|), max_value)`` per sample, ``x0_hat <-
  clip(x0_hat, -s, s) * max_value / s``, and ``eps_hat = (x - alpha x0_hat) / sigma``.

NFE convention: a sampler's NFE counts calls of the guided model (one per ``(x0_hat, eps_hat)``
the sampler asks for), the number the samplers are compared on. Each classifier-free call
is one network call on ``2B`` rows, so it costs about twice an unguided evaluation;
:attr:`Guided.rows` counts rows evaluated per sample (``2`` per CFG call), and
:func:`scoregen.sample` reports it as ``info["network_rows_per_sample"]``.

:class:`Guided` follows :class:`scoregen.models.prediction.Model` (it is an unconditional model
to everything downstream, peers included) and also gives the pair directly
(:meth:`Guided.predict_pair`), which :class:`~scoregen.sampling.denoiser.Denoiser` uses: the
network's outputs are converted to pairs once and combined as pairs, never round-tripped
through the prediction type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scoregen.infra.shape import batch_times, bcast
from scoregen.models.prediction import (
    Model,
    Prediction,
    check_model,
    output_from_pair,
    predict_pair,
)
from scoregen.sde.base import SDE

Classifier = Callable[[Tensor, Tensor], Tensor]  # (x (B, *D), t (B,)) -> logits (B, C)


@dataclass(frozen=True)
class Guidance:
    """Guidance settings (module docstring for the formulas).

    Attributes:
        scale: ``w``; 0 unconditional, 1 conditional (default), > 1 guided.
        classifier: a noise-conditional classifier ``(x, t) -> logits``; ``None`` for
            classifier-free guidance.
        interval: ``(t_lo, t_hi)``: apply ``scale`` only there (``w = 1`` elsewhere); ``None``
            (default) applies it at every ``t``.
        threshold: quantile ``p`` of dynamic thresholding (e.g. 0.995); ``None`` (default): off.
        max_value: the data bound of thresholding (1 for data in ``[-1, 1]``).
    """

    scale: float = 1.0
    classifier: Classifier | None = None
    interval: tuple[float, float] | None = None
    threshold: float | None = None
    max_value: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.scale, int | float) and torch.isfinite(torch.tensor(self.scale))
                and self.scale >= 0):
            raise ValueError(f"guidance scale must be a finite number >= 0 (0: unconditional, "
                             f"1: conditional), got {self.scale!r}")
        if self.interval is not None:
            lo, hi = self.interval
            if not lo <= hi:
                raise ValueError(f"guidance interval must be (t_lo, t_hi) with t_lo <= t_hi, "
                                 f"got {self.interval!r}")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"threshold is a quantile in (0, 1] (e.g. 0.995), got "
                             f"{self.threshold!r}")
        if not self.max_value > 0:
            raise ValueError(f"threshold max_value must be > 0, got {self.max_value!r}")


def num_classes(model: object) -> int | None:
    """The number of classes of a class-conditional model, else ``None``."""
    n = getattr(model, "num_classes", None)
    return int(n) if n else None


def check_labels(labels: Tensor | int | list[int], n_classes: int | None, batch: int | None = None
                 ) -> Tensor:
    """``labels`` as an int64 ``(B,)`` tensor; clear errors for bad labels."""
    if n_classes is None:
        raise ValueError("labels (cond) were given but the model is not class-conditional; "
                         "train it with model.num_classes, or sample without cond/--class")
    y = torch.as_tensor(labels)
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise ValueError(f"labels must be integers, got {y.tolist()[:8]}")
    y = y.to(torch.int64)
    if y.ndim == 0 and batch is not None:
        y = y.expand(batch)
    if y.ndim != 1 or (batch is not None and y.shape[0] != batch):
        raise ValueError(f"labels must have shape ({batch},) (one per sample), got "
                         f"{tuple(y.shape)}")
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        raise ValueError(f"label {int(y[bad][0])} is outside [0, {n_classes}) for a model with "
                         f"{n_classes} classes")
    return y


class Guided:
    """``model`` conditioned on ``labels`` with :class:`Guidance`, as a plain model.

    ``labels: (B,)`` (``None`` only with thresholding alone). Calls with a different batch
    size than ``labels`` raise an error.
    """

    def __init__(self, model: Model, labels: Tensor | None, guidance: Guidance,
                 batch: int | None = None) -> None:
        check_model(model, model.sde)
        self.model = model
        self.sde: SDE = model.sde
        self.prediction = model.prediction
        self.guidance = guidance
        self.n_classes = num_classes(model)
        self.rows = 0.0  # network rows evaluated per sample (module docstring: NFE)
        self._batch = 1
        g = guidance
        if labels is None:
            if g.scale != 1.0 or g.classifier is not None:
                raise ValueError("guidance needs labels (cond): the classes to guide towards")
            self.labels = None
            return
        if g.classifier is None and self.n_classes is None and g.scale != 1.0:
            raise ValueError("guidance on an unconditional model: classifier-free guidance "
                             "needs a class-conditional model (model.num_classes); give a "
                             "classifier for classifier guidance, or drop guidance")
        if g.classifier is None:
            self.labels = check_labels(labels, self.n_classes, batch)
        else:
            y = torch.as_tensor(labels)
            self.labels = check_labels(y, int(y.max()) + 1 if y.numel() else 1, batch)

    # -- pieces ---------------------------------------------------------------------------------
    def _pair(self, x: Tensor, t: Tensor, y: Tensor | None) -> Prediction:
        """The pair of the model inside (labels ``y``, or none), converted once."""
        self.rows += x.shape[0] / max(self._batch, 1)
        return predict_pair(self.model, x, t, y)

    def _null(self, like: Tensor) -> Tensor | None:
        return None if self.n_classes is None else torch.full_like(like, self.n_classes)

    def _scale(self, t: Tensor) -> Tensor:
        w = torch.full_like(t, float(self.guidance.scale))
        if self.guidance.interval is not None:
            lo, hi = self.guidance.interval
            w = torch.where((t >= lo) & (t <= hi), w, torch.ones_like(w))
        return w

    def _log_p_y_grad(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """``grad_x log p_t(y | x)`` of the classifier (autograd, also under ``no_grad``)."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = self.guidance.classifier(xg, t)
            logp = torch.log_softmax(logits, dim=-1).gather(1, y[:, None].to(logits.device))
            (grad,) = torch.autograd.grad(logp.sum(), xg)
        return grad

    def guided_pair(self, x: Tensor, t: Tensor) -> Prediction:
        """The guided ``(x0_hat, eps_hat)`` (module docstring), ``x: (B, *D)``, ``t: (B,)``.

        Both halves of classifier-free guidance are pairs at the same ``x_t``, and ``x_t =
        alpha x0 + sigma eps`` is linear, so ``eps_w = eps_u + w (eps_c - eps_u)`` and ``x0_w =
        x0_u + w (x0_c - x0_u)`` are one consistent pair: no conversion after the network's."""
        y, g = self.labels, self.guidance
        if y is None:
            return self._pair(x, t, None)
        y = y.to(x.device)
        w = self._scale(t)
        if g.classifier is not None:
            u = self._pair(x, t, self._null(y))  # s_w = s_u + w grad log p_t(y | x)
            score = self.sde.score_from_eps(u.eps, t) + bcast(w.to(x.dtype), x) * \
                self._log_p_y_grad(x, t, y)
            eps = self.sde.eps_from_score(x, t, score)
            return Prediction(self.sde.x0_from_eps(x, t, eps), eps)
        if bool((w == 1).all()):
            return self._pair(x, t, y)
        if bool((w == 0).all()):
            return self._pair(x, t, self._null(y))
        both = self._pair(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, self._null(y)]))
        (x0_c, x0_u), (eps_c, eps_u) = both.x0.chunk(2), both.eps.chunk(2)
        wb = bcast(w.to(x.dtype), x)
        return Prediction(x0_u + wb * (x0_c - x0_u), eps_u + wb * (eps_c - eps_u))

    def guided_eps(self, x: Tensor, t: Tensor) -> Tensor:
        """``eps_w(x, t)`` (module docstring), ``x: (B, *D)``, ``t: (B,)``."""
        return self.guided_pair(x, t).eps

    def predict_pair(self, x: Tensor, t: Tensor) -> Prediction:
        """The guided ``(x0_hat, eps_hat)``, thresholded if asked."""
        t = batch_times(t, x)
        self._batch = x.shape[0]
        if self.labels is not None and self.labels.shape[0] != x.shape[0]:
            raise ValueError(f"the model was given {self.labels.shape[0]} labels but called on "
                             f"a batch of {x.shape[0]}")
        pair = self.guided_pair(x, t)
        if self.guidance.threshold is None:
            return pair
        x0 = dynamic_threshold(pair.x0, self.guidance.threshold, self.guidance.max_value)
        return Prediction(x0, self.sde.eps_from_x0(x, t, x0))

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        t = batch_times(t, x)
        return output_from_pair(self.predict_pair(x, t), self.prediction, x, t, self.sde)


def dynamic_threshold(x0: Tensor, p: float, max_value: float = 1.0) -> Tensor:
    """Saharia et al. 2022: ``s = max(quantile_p |x0|, max_value)`` per sample; clip to
    ``[-s, s]`` and rescale by ``max_value / s`` (``x0: (B, *D)``)."""
    s = torch.quantile(x0.abs().flatten(1).to(torch.float64), p, dim=1).to(x0.dtype)
    s = s.clamp_min(max_value)
    s = bcast(s, x0)
    return torch.maximum(torch.minimum(x0, s), -s) * (max_value / s)


def guidance_scale(model: Model, cond: Tensor | int | None = None,
                   guidance: float | Guidance | None = None) -> float | None:
    """The guidance scale ``w`` a sampler will see: ``guidance`` (or its ``.scale``), 1 for
    labels alone, the scale of a model guided already (:class:`Guided`), ``None`` unguided."""
    if isinstance(guidance, Guidance):
        return float(guidance.scale)
    if guidance is not None:
        return float(guidance)
    if cond is not None:
        return 1.0
    if isinstance(model, Guided) and model.labels is not None:
        return float(model.guidance.scale)
    return None


def guide(model: Model, cond: Tensor | int | None = None, guidance: float | Guidance | None = None,
          *, classifier: Classifier | None = None, interval: tuple[float, float] | None = None,
          threshold: float | None = None, batch: int | None = None) -> Model:
    """``model`` itself when nothing is asked, else a :class:`Guided` view.

    ``cond``: labels ``(B,)`` (or one int for the whole batch of size ``batch``);
    ``guidance``: the scale ``w`` (or a whole :class:`Guidance`); with ``cond`` and no
    ``guidance``, ``w = 1`` (plain conditional). Guidance without ``cond`` is an error.
    """
    g = guidance if isinstance(guidance, Guidance) else Guidance(
        1.0 if guidance is None else float(guidance), classifier, interval, threshold)
    if cond is None:
        if guidance is not None or g.classifier is not None:
            raise ValueError("guidance needs labels: pass cond= (the classes to sample)")
        return model if g.threshold is None else Guided(model, None, g)
    labels = torch.as_tensor(cond)
    if labels.ndim == 0 and batch is not None:
        labels = labels.expand(batch)
    return Guided(model, labels, g, batch)


__all__ = [
    "Classifier",
    "Guidance",
    "Guided",
    "check_labels",
    "dynamic_threshold",
    "guidance_scale",
    "guide",
    "num_classes",
]
