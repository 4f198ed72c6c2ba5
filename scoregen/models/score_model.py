"""``ScoreModel``: a raw network turned into an eps / x0 / v / EDM model for one SDE.

The wrapper plays the role of EDM's preconditioner (Karras et al. 2022, sec. 5 and
Table 1, ``EDMPrecond``) for every SDE here. With ``x_t = alpha x0 + sigma eps``, data std
``sigma_data`` and the EDM noise level ``sigma_e = sigma / alpha = exp(-lambda)``:

    c_in    = 1 / sqrt(alpha^2 sigma_data^2 + sigma^2)        (unit-variance network input)
    c_noise = log(sigma_e) / 4 = -lambda / 4                  (the network's noise condition)
    F       = network(c_in x_t, c_noise)

so one architecture fits VP, sub-VP and VE (the input has unit variance and the condition
depends on the log-SNR only). The output is read as:

- ``eps``: ``eps_hat = sigma c_in^2 x_t + alpha sigma_data c_in F``: the posterior mean of
  ``eps`` for Gaussian data ``N(0, sigma_data^2 I)`` (Wiener filter) plus a learned
  correction scaled by that posterior's std, so ``F`` has unit-variance targets (EDM's
  ``c_skip``/``c_out`` idea, Karras et al. 2022 sec. 5 and app. B.6, written for eps). Near
  ``T`` on VP, ``x0_hat = (x - sigma eps_hat) / alpha`` multiplies eps errors by ``1 /
  alpha``; the skip term makes ``eps_hat ≈ x`` there exactly, also for prior samples far in
  the tails where a plain network extrapolates badly.
- ``x0``: ``x0_hat = F``;
- ``v``:   ``v_hat = c_v F`` with ``c_v = sqrt(alpha^2 + sigma^2 sigma_data^2)``, the std of
  ``v = alpha eps - sigma x0`` (Salimans & Ho 2022), so ``F`` has unit-variance targets;
- ``edm``: ``x0_hat = D = c_skip x_hat + c_out F`` with ``x_hat = x_t / alpha``,
  ``c_skip = sigma_data^2 / (sigma_e^2 + sigma_data^2)``,
  ``c_out = sigma_e sigma_data / sqrt(sigma_e^2 + sigma_data^2)`` (Table 1); note
  ``c_in x_t = x_hat / sqrt(sigma_e^2 + sigma_data^2)``, EDM's own ``c_in``. Samplers see
  ``prediction = "x0"``.

Conversions between prediction types go through :mod:`scoregen.models.prediction` only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from scoregen.infra.shape import batch_times, bcast
from scoregen.models.prediction import Model, retarget
from scoregen.sde.base import SDE

PARAMETERIZATIONS = ("eps", "x0", "v", "edm")


class ScoreModel(nn.Module):
    """A network wrapped as a :class:`scoregen.models.prediction.Model` for ``sde``.

    Args:
        network: ``net(x_in: (B, *D), c_noise: (B,)) -> (B, *D)`` (see
            :mod:`scoregen.models.registry`).
        sde: the process the model is trained for.
        prediction: ``eps``, ``x0``, ``v`` or ``edm`` (EDM-preconditioned denoiser, reported
            to samplers as ``x0``).
        sigma_data: standard deviation of the data (0.5 suits data in [-1, 1]; EDM's value).
    """

    def __init__(self, network: nn.Module, sde: SDE, prediction: str = "eps",
                 sigma_data: float = 0.5) -> None:
        super().__init__()
        if prediction not in PARAMETERIZATIONS:
            raise ValueError(f"unknown prediction {prediction!r}; known: "
                             f"{', '.join(PARAMETERIZATIONS)}")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.network = network
        self.sde = sde
        self.parameterization = prediction
        self.prediction = "x0" if prediction == "edm" else prediction
        self.sigma_data = float(sigma_data)

    def coefficients(self, t: Tensor) -> dict[str, Tensor]:
        """``alpha, sigma, c_in, c_noise`` (and ``c_skip, c_out`` for EDM) at ``t: (B,)``.

        Computed in float64 from the SDE, then returned in float64.
        """
        t64 = t.detach().to(torch.float64)
        alpha, sigma = self.sde.alpha(t64), self.sde.sigma(t64)
        sd2 = self.sigma_data**2
        c = {
            "alpha": alpha,
            "sigma": sigma,
            "c_in": torch.rsqrt(alpha**2 * sd2 + sigma**2),
            "c_noise": -self.sde.log_snr(t64) / 4,
        }
        if self.parameterization == "edm":
            s2 = (sigma / alpha) ** 2
            c["c_skip"] = sd2 / (s2 + sd2)
            c["c_out"] = (sigma / alpha) * self.sigma_data * torch.rsqrt(s2 + sd2)
        elif self.parameterization == "v":
            c["c_out"] = torch.sqrt(alpha**2 + sigma**2 * sd2)
        elif self.parameterization == "eps":
            c["c_skip"] = sigma * c["c_in"] ** 2
            c["c_out"] = alpha * self.sigma_data * c["c_in"]
        return c

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
        if self.data_shape is not None and tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"the model is for data of shape {self.data_shape}, got x of "
                             f"shape {tuple(x.shape)}; pass (batch, *{self.data_shape})")
        t = batch_times(t, x)
        c = self.coefficients(t)
        dtype = next(self.network.parameters()).dtype
        x_in = (bcast(c["c_in"], x) * x).to(dtype)
        if cond is not None and self.num_classes is None:
            raise ValueError("labels (cond) were given but the model is not class-conditional; "
                             "train it with model.num_classes, or sample without cond/--class")
        args = () if cond is None else (cond,)
        F = self.network(x_in, c["c_noise"].to(dtype), *args).to(x.dtype)
        def coef(name: str) -> Tensor:
            return bcast(c[name], x).to(x.dtype)

        if self.parameterization == "edm":
            return coef("c_skip") * (x / coef("alpha")) + coef("c_out") * F
        if self.parameterization == "eps":
            return coef("c_skip") * x + coef("c_out") * F
        if self.parameterization == "v":
            return coef("c_out") * F
        return F

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

    net_cfg = dict(config["network"])
    net = build_network(net_cfg.pop("name"), net_cfg.pop("shape"), **net_cfg)
    return ScoreModel(net, from_config(config["sde"]), config.get("prediction", "eps"),
                      config.get("sigma_data", 0.5))
