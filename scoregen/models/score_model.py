"""``ScoreModel``: a raw network turned into an eps / x0 / v / EDM model for one SDE.

The wrapper plays the role of EDM's preconditioner (Karras et al. 2022, sec. 5 and
Table 1, ``EDMPrecond``) for every SDE here. With ``x_t = alpha x0 + sigma eps``, data std
``sigma_data`` and the EDM noise level ``sigma_e = sigma / alpha = exp(-lambda)``:

    c_in    = 1 / sqrt(alpha^2 sigma_data^2 + sigma^2)        (unit-variance network input)
    c_noise = log(sigma_e) / 4 = -lambda / 4                  (the network's noise condition;
                                                               lambda clamped at -20)
    F       = network(c_in x_t, c_noise)

so one architecture fits VP, sub-VP and VE (the input has unit variance and the condition
depends on the log-SNR only; ``c_in x_t = x~ / sqrt(sigma_e^2 + sigma_data^2)`` is EDM's own
``c_in`` on ``x~ = x_t / alpha``). The output ``F`` becomes the prediction by the model's
parameterization, ``c_skip x_t + c_out F`` (eps, x0, v, EDM's denoiser reported as x0, or a
consistency function with ``f(x, t_min) = x / alpha(t_min)``): the formulas live with every
other prediction-type rule in :mod:`scoregen.models.prediction`
(:data:`~scoregen.models.prediction.PARAMETERIZATIONS`).
A process without the scalar kernel gives these quantities itself: the network's input
(:meth:`~scoregen.sde.base.SDE.network_input`, the whole state, e.g. CLD's ``(x, v)``), its
noise condition (:meth:`~scoregen.sde.base.SDE.noise_condition`) and, for ``eps``, the Gaussian
posterior of the predicted noise (:meth:`~scoregen.sde.base.SDE.gaussian_eps`); the network
then maps the state to the data's shape. A process that is an ``nn.Module`` (a learned schedule,
:mod:`scoregen.sde.vdm`) is a submodule: its parameters train and are saved with the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from scoregen.infra.shape import batch_times, bcast
from scoregen.models.prediction import Model, parameterization, retarget
from scoregen.sde.base import SCALAR_KERNEL, SDE

#: The noise condition sees log-SNRs clamped below at this value: ``lambda(T) = -inf`` of a
#: process with zero terminal SNR (:mod:`scoregen.sde.vp`) becomes a finite input, the same
#: for every time whose ``alpha < e^-20 sigma`` (no other process here comes near it).
LOG_SNR_FLOOR = -20.0


class ScoreModel(nn.Module):
    """A network wrapped as a :class:`scoregen.models.prediction.Model` for ``sde``.

    Args:
        network: ``net(x_in: (B, *D), c_noise: (B,)) -> (B, *D)`` (see
            :mod:`scoregen.models.registry`).
        sde: the process the model is trained for.
        prediction: ``eps``, ``x0``, ``v``, ``edm`` (EDM-preconditioned denoiser, reported
            to samplers as ``x0``) or a consistency function (``consistency``,
            ``consistency-eps``, ...: reported as ``x0``, the identity at ``t_min``).
        sigma_data: standard deviation of the data (0.5 suits data in [-1, 1]; EDM's value).
    """

    def __init__(self, network: nn.Module, sde: SDE, prediction: str = "eps",
                 sigma_data: float = 0.5) -> None:
        super().__init__()
        self._output = parameterization(prediction)
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.network = network
        self.sde = sde
        self.parameterization = prediction
        self.prediction = self._output.reports
        self.sigma_data = float(sigma_data)

    @property
    def sigma_min(self) -> float | None:
        """The noise level ``sigma(t_min) / alpha(t_min)`` where a consistency function is the
        identity; ``None`` for other parameterizations (read at each call: a learned schedule
        moves it)."""
        if not self._output.boundary:
            return None
        t_min = torch.tensor(self.sde.t_min, dtype=torch.float64)
        with torch.no_grad():
            return float(self.sde.sigma(t_min) / self.sde.alpha(t_min))

    @property
    def consistency(self) -> bool:
        """Whether the model is a consistency function (Song et al. 2023): its ``x0``
        prediction maps ``x_t`` to the end of its probability-flow trajectory, not to the
        posterior mean."""
        return self._output.boundary

    def coefficients(self, t: Tensor) -> dict[str, Tensor]:
        """``alpha, sigma, c_in, c_noise, c_skip, c_out`` at ``t: (B,)``, in float64 (``c_skip``
        is ``None`` where the parameterization has no skip term)."""
        t64 = t.detach().to(torch.float64)
        alpha, sigma = self.sde.alpha(t64), self.sde.sigma(t64)
        c_skip, c_out = self._output.at(alpha, sigma, self.sigma_data, self.sigma_min)
        return {
            "alpha": alpha,
            "sigma": sigma,
            "c_in": torch.rsqrt(alpha**2 * self.sigma_data**2 + sigma**2),
            "c_noise": -self.sde.log_snr(t64).clamp_min(LOG_SNR_FLOOR) / 4,
            "c_skip": c_skip,
            "c_out": c_out,
        }

    @property
    def data_shape(self) -> tuple[int, ...] | None:
        """The event shape ``D`` the network was built for (stored in checkpoints)."""
        shape = getattr(self.network, "spec", {}).get("shape")
        return tuple(shape) if shape is not None else None

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional network (label ``num_classes`` is the null label),
        else ``None``."""
        return getattr(self.network, "num_classes", 0) or None

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """The ``prediction``-type output at ``x: (B, *D)``, ``t: ()`` or ``(B,)``; ``cond``:
        labels ``(B,)`` of a class-conditional network (``None``: the null label)."""
        if self.data_shape is not None:
            state = self.sde.state_shape(self.data_shape)
            if tuple(x.shape[1:]) != state:
                what = ("" if state == self.data_shape
                        else f" (states {state} under {self.sde.name})")
                raise ValueError(f"the model is for data of shape {self.data_shape}{what}, got x "
                                 f"of shape {tuple(x.shape)}; pass (batch, *{state})")
        t = batch_times(t, x)
        dtype = next(self.network.parameters()).dtype
        if cond is not None and self.num_classes is None:
            raise ValueError("labels (cond) were given but the model is not class-conditional; "
                             "train it with model.num_classes, or sample without cond/--class")
        args = () if cond is None else (cond,)
        if SCALAR_KERNEL not in self.sde.capabilities:
            x_in = self.sde.network_input(x, t, self.sigma_data).to(dtype)
            c_noise = self.sde.noise_condition(t).to(dtype)
            F = self.network(x_in, c_noise, *args).to(x.dtype)
            return self._output.kernel_output(x, F, t, self.sde, self.sigma_data)
        c = self.coefficients(t)
        x_in = (bcast(c["c_in"], x) * x).to(dtype)
        F = self.network(x_in, c["c_noise"].to(dtype), *args).to(x.dtype)
        return self._output.output(x, F, c["alpha"], c["sigma"], self.sigma_data,
                                   self.sigma_min)

    def under(self, other_sde: SDE) -> Model:
        """This model under another SDE (log-SNR matching,
        :func:`scoregen.models.prediction.retarget`)."""
        return retarget(self, other_sde)

    def config(self) -> dict[str, Any]:
        """Everything that rebuilds the model (weights aside); stored in checkpoints."""
        return {
            "network": dict(getattr(self.network, "spec", {})),
            "sde": self.sde.config(),
            "prediction": self.parameterization,
            "sigma_data": self.sigma_data,
        }

    def extra_repr(self) -> str:
        return f"prediction={self.parameterization!r}, sde={self.sde!r}"


def build_model(config: dict[str, Any]) -> ScoreModel:
    """Inverse of :meth:`ScoreModel.config` (fresh weights)."""
    from scoregen.models.registry import build_network
    from scoregen.sde import from_config

    if config.get("kind") == "classifier":
        raise ValueError("this is a noise-conditional classifier, not a score model; use it "
                         "for classifier guidance (scoregen sample RUN --classifier CLF_RUN, "
                         "scoregen.training.checkpoint.load_classifier)")
    net_cfg = dict(config["network"])
    net = build_network(net_cfg.pop("name"), net_cfg.pop("shape"), **net_cfg)
    return ScoreModel(net, from_config(config["sde"]), config.get("prediction", "eps"),
                      config.get("sigma_data", 0.5))
