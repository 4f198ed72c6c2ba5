"""A learned variance-preserving schedule (Kingma, Salimans, Poole & Ho 2021, "Variational
Diffusion Models", sec. 3-5 and app. H; reference code google-research/vdm).

The process is variance preserving with a monotone network ``gamma(t)`` as its log noise-to-signal
ratio: ``sigma^2 = sigmoid(gamma)``, ``alpha^2 = sigmoid(-gamma)``, so ``lambda = -gamma / 2`` and
(for every VP process, :class:`~scoregen.sde.vp.VariancePreserving`)::

    f(t) = d log alpha / dt = -sigmoid(gamma(t)) gamma'(t) / 2,      g(t)^2 = -2 f(t).

``gamma`` is split into its endpoints and its shape (VDM's ``NoiseSchedule_NNet``, written with
the endpoints as parameters of their own)::

    gamma(t) = gamma_0 + (gamma_1 - gamma_0) h(t),
    h(t) = (g~(t) - g~(t_min)) / (g~(T) - g~(t_min)),
    g~(t) = |w| t + (1/n) sum_j |a_j| (2 sigmoid(|b_j| (2t - 1) + c_j) - 1)
            (w: shape_slope, a: shape_scale, b: shape_weight, c: shape_bias),

``g~`` increasing (positive weights, VDM's ``DenseMonotone``), so ``gamma`` increases whenever
``gamma_0 < gamma_1``; ``gamma(t_min) = gamma_0`` is the noise of the density the model gives at
``t_min`` and ``gamma(T) = gamma_1`` the signal left at ``T``. The variational bound depends on
the schedule only through ``gamma_0``, ``gamma_1`` (their eq. 24: the diffusion loss is an
integral over log-SNR), so the endpoints are trained on the bound and the shape on the variance of
its Monte-Carlo estimate (their sec. 5.2): :meth:`LearnedVPSDE.variance_gradient` multiplies the
gradient reaching ``h`` of example ``i`` by ``2 L_i``, turning ``grad E[L]`` into ``grad E[L^2]``
for the shape parameters alone (:mod:`scoregen.training.objectives.vdm`).

The class is an ``nn.Module``: held by :class:`~scoregen.models.ScoreModel` as its ``sde``, its
parameters are trained with the network (in training mode only: elsewhere its values are
constants without gradients), averaged by the EMA and saved in checkpoints (``sde.*``);
``from_config`` builds the initial schedule (a fixed seed, so equal configs give equal fresh
schedules), and equality compares the parameters too, so a model is sampled with the
schedule it was trained with. Loading checks the schedule: missing parameters, non-finite values or
``gamma_0 >= gamma_1`` are errors. Every sampler runs on it: it is a scalar kernel.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from scoregen.sde.base import Params, increasing
from scoregen.sde.registry import register
from scoregen.sde.vp import VariancePreserving

PARAMETERS = ("gamma_0", "gamma_1", "shape_slope", "shape_scale", "shape_weight", "shape_bias")


class VarianceGradient:
    """Per-example weights ``2 L_i`` for the gradient of the schedule's shape (set after the
    forward pass, read by the backward hooks of :meth:`LearnedVPSDE.variance_gradient`)."""

    def __init__(self) -> None:
        self.weights: Tensor | None = None

    def scale(self, grad: Tensor) -> Tensor:
        if self.weights is None:
            raise RuntimeError("variance_gradient: set .weights (one per example) before the "
                               "backward pass")
        w = self.weights.to(grad)
        if grad.shape[0] % w.shape[0]:
            raise RuntimeError(f"variance_gradient: {grad.shape[0]} times for {w.shape[0]} "
                               "weights")
        return grad * w.repeat(grad.shape[0] // w.shape[0])


@register("vdm")
class LearnedVPSDE(VariancePreserving, nn.Module):
    """VP process with VDM's learned monotone ``gamma(t)`` (log noise-to-signal ratio)."""

    default_objective = "vdm"

    def __init__(self, gamma_min: float = -10.0, gamma_max: float = 10.0, features: int = 1024,
                 T: float = 1.0, t_min: float = 1e-3) -> None:
        nn.Module.__init__(self)
        VariancePreserving.__init__(self, T=T, t_min=t_min)
        for name, value in (("gamma_min", gamma_min), ("gamma_max", gamma_max)):
            if not (isinstance(value, int | float) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        increasing("gamma_min", gamma_min, "gamma_max", gamma_max)
        if not (isinstance(features, int) and features >= 1):
            raise ValueError(f"features must be a positive integer, got {features!r}")
        self.gamma_min, self.gamma_max, self.features = float(gamma_min), float(gamma_max), features
        g = torch.Generator().manual_seed(0)
        self.gamma_0 = nn.Parameter(torch.tensor(self.gamma_min))
        self.gamma_1 = nn.Parameter(torch.tensor(self.gamma_max))
        self.shape_slope = nn.Parameter(torch.tensor(1.0))
        self.shape_scale = nn.Parameter(torch.randn(features, generator=g))
        self.shape_weight = nn.Parameter(torch.randn(features, generator=g))
        self.shape_bias = nn.Parameter(torch.zeros(features))
        self._variance: VarianceGradient | None = None
        self.register_load_state_dict_post_hook(_check_loaded)
        self.eval()  # the schedule is a constant until a model in training mode trains it

    # -- gamma ---------------------------------------------------------------------------------
    def _shape(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``g~(t)`` and ``g~'(t)`` (float64, ``t``'s shape)."""
        p = {n: self._param(f"shape_{n}") for n in ("slope", "scale", "weight", "bias")}
        z = p["weight"].abs() * (2 * t[..., None] - 1) + p["bias"]
        s = torch.sigmoid(z)
        a = p["scale"].abs() / self.features
        value = p["slope"].abs() * t + (a * (2 * s - 1)).sum(-1)
        deriv = p["slope"].abs() + (a * 4 * s * (1 - s) * p["weight"].abs()).sum(-1)
        return value, deriv

    def gamma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``gamma(t)`` and ``gamma'(t)`` in ``t``'s dtype and device (computed in float64)."""
        t = torch.as_tensor(t)
        device = self.gamma_0.device
        tt = t.to(device=device, dtype=torch.float64)
        ends = torch.tensor([self.t_min, self.T], dtype=torch.float64, device=device)
        flat = tt.reshape(-1)
        if not flat.requires_grad and flat.numel() > 1:  # one evaluation per distinct time
            flat, inverse = torch.unique(flat, return_inverse=True)
        else:
            inverse = None
        value, deriv = self._shape(torch.cat([flat, ends]))
        span = value[-1] - value[-2]
        h, dh = (value[:-2] - value[-2]) / span, deriv[:-2] / span
        if inverse is not None:
            h, dh = h[inverse], dh[inverse]
        h, dh = h.reshape(tt.shape), dh.reshape(tt.shape)
        if self._variance is not None and h.requires_grad and h.ndim == 1:
            h.register_hook(self._variance.scale)
            dh.register_hook(self._variance.scale)
        g0, g1 = self._param("gamma_0"), self._param("gamma_1")
        gamma, dgamma = g0 + (g1 - g0) * h, (g1 - g0) * dh
        return (gamma.to(device=t.device, dtype=t.dtype if t.is_floating_point() else None),
                dgamma.to(device=t.device, dtype=t.dtype if t.is_floating_point() else None))

    def _param(self, name: str) -> Tensor:
        """A parameter in float64, carrying gradients only in training mode (a model in
        ``train()`` trains its schedule; elsewhere the schedule's values are constants)."""
        p = getattr(self, name).to(torch.float64)
        return p if self.training else p.detach()

    @contextmanager
    def variance_gradient(self) -> Iterator[VarianceGradient]:
        """Within the block, the gradient that reaches the schedule's shape through each
        example's ``h(t_i)``, ``h'(t_i)`` is multiplied by that example's weight (set
        ``handle.weights = 2 L_i`` after the forward pass); the endpoints are not affected."""
        handle = VarianceGradient()
        self._variance = handle
        try:
            yield handle
        finally:
            self._variance = None

    # -- the VP process -------------------------------------------------------------------------
    def log_alpha(self, t: Tensor) -> Tensor:
        """``log alpha = -softplus(gamma) / 2``."""
        return -0.5 * nn.functional.softplus(self.gamma(t)[0])

    def sigma(self, t: Tensor) -> Tensor:
        """``sqrt(sigmoid(gamma))``."""
        return torch.sigmoid(self.gamma(t)[0]).sqrt()

    def f(self, t: Tensor) -> Tensor:
        gamma, dgamma = self.gamma(t)
        return -0.5 * torch.sigmoid(gamma) * dgamma

    def log_snr(self, t: Tensor) -> Tensor:
        return -0.5 * self.gamma(t)[0]

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """The time with ``gamma(t) = -2 lam``: linear interpolation in a table of ``gamma`` on
        2049 times (made once per parameter values), then three Newton steps with the exact
        ``gamma'``; clamped to ``[0, T]``."""
        target = (-2 * lam.detach()).to(device=self.gamma_0.device, dtype=torch.float64)
        table_t, table_g = self._table()
        k = torch.searchsorted(table_g, target.reshape(-1)).clamp(1, len(table_t) - 1)
        g_lo, g_hi = table_g[k - 1], table_g[k]
        frac = ((target.reshape(-1) - g_lo) / (g_hi - g_lo)).clamp(0, 1)
        t = (table_t[k - 1] + frac * (table_t[k] - table_t[k - 1])).reshape(target.shape)
        with torch.no_grad():
            for _ in range(3):
                gamma, dgamma = self.gamma(t)
                t = (t - (gamma - target) / dgamma).clamp(0, self.T)
        return t.to(device=lam.device, dtype=lam.dtype)

    def _table(self) -> tuple[Tensor, Tensor]:
        """``(t, gamma(t))`` on 2049 uniform times, cached until a parameter changes."""
        key = tuple((id(p), p._version) for p in self.parameters())
        if getattr(self, "_table_key", None) != key:
            t = torch.linspace(0, self.T, 2049, dtype=torch.float64, device=self.gamma_0.device)
            with torch.no_grad():
                self._table_cache = (t, self.gamma(t)[0])
            self._table_key = key
        return self._table_cache

    # -- identity -------------------------------------------------------------------------------
    def params(self) -> Params:
        return {"gamma_min": self.gamma_min, "gamma_max": self.gamma_max,
                "features": self.features, **super().params()}

    def __eq__(self, other: object) -> bool:
        """Same config and the same schedule parameters."""
        if not (isinstance(other, LearnedVPSDE) and self.config() == other.config()):
            return False
        return all(torch.equal(a.detach().cpu(), b.detach().cpu())
                   for a, b in zip(self.parameters(), other.parameters(), strict=True))

    def __hash__(self) -> int:
        return hash(repr(self))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params().items())

    def check(self) -> None:
        """Raise ``ValueError`` unless the schedule is finite and increasing."""
        bad = [n for n, p in self.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise ValueError(f"the learned noise schedule has non-finite parameters "
                             f"({', '.join(bad)})")
        g0, g1 = float(self.gamma_0.detach()), float(self.gamma_1.detach())
        with torch.no_grad():
            ends, _ = self._shape(torch.tensor([self.t_min, self.T], dtype=torch.float64,
                                               device=self.gamma_0.device))
        if not (g0 < g1 and float(ends[1] - ends[0]) > 0):
            raise ValueError(f"the learned noise schedule is not increasing: gamma(t_min) = "
                             f"{g0:.4g}, gamma(T) = {g1:.4g} (it must have gamma(t_min) < "
                             "gamma(T)); the checkpoint's schedule parameters (sde.*) are damaged")


def _check_loaded(module: LearnedVPSDE, incompatible: Any) -> None:
    """After ``load_state_dict``: missing schedule parameters or a schedule that is not
    increasing are errors that say so."""
    missing = [k for k in incompatible.missing_keys if k.rsplit(".", 1)[-1] in PARAMETERS]
    if missing:
        raise ValueError(f"the parameters of the learned noise schedule are missing "
                         f"({', '.join(missing)}): the weights were not saved from a vdm model")
    module.check()


__all__ = ["LearnedVPSDE", "VarianceGradient"]
