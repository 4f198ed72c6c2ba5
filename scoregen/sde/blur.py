"""Blurring diffusion (Hoogeboom & Salimans 2023, "Blurring Diffusion Models"): heat dissipation
and Gaussian noise, one ``alpha`` per frequency of the 2-D DCT.

The heat equation ``du/dtau = Laplacian u`` on an ``H x W`` image with reflecting (Neumann)
boundaries is diagonal in the orthonormal DCT-II basis ``V`` of each channel: frequency ``(k, l)``
decays as ``exp(-Lambda_kl tau)`` with ``Lambda_kl = (pi k / H)^2 + (pi l / W)^2``, and running it
for ``tau = sigma_B^2 / 2`` is a Gaussian blur of std ``sigma_B`` pixels. Inverse heat
dissipation (Rissanen et al. 2023, "Generative Modelling With Inverse Heat Dissipation") uses
``u_t = V^T exp(-Lambda tau_t) V u_0`` plus a little fixed noise; blurring diffusion combines it
with a variance-preserving noise schedule, a Gaussian process with one ``alpha`` per frequency
and a scalar ``sigma`` (their eq. 5-7)::

    V x_t = alpha_kl(t) V x_0 + sigma(t) V eps,     alpha_kl(t) = a(t) d_kl(t),
    d_kl(t) = (1 - d_min) exp(-Lambda_kl tau(t)) + d_min,
    tau(t) = sigma_B(t)^2 / 2,   sigma_B(t) = sigma_B,max sin^2(pi t / 2),

with ``a(t) = sqrt(sigmoid(lambda(t)))``, ``sigma(t) = sqrt(sigmoid(-lambda(t)))`` and the
truncated cosine log-SNR ``lambda(t) = -2 log tan(c_1 t + c_0)``, ``c_0 = arctan(e^{-lambda_max
/ 2})``, ``c_1 = arctan(e^{-lambda_min / 2}) - c_0`` (their appendix: ``sigma_B,max = 20``,
``d_min = 0.001``, ``lambda`` from 10 to -10). So IHD is the case ``a = 1``, ``d_min = 0`` with a
constant small ``sigma``, and the usual VP diffusion the case ``sigma_B,max = 0``. The DC
frequency (``Lambda = 0``, ``d = 1``) carries the plain VP schedule: :meth:`BlurSDE.log_snr` is
its log-SNR (for log-SNR time grids; the kernel is not scalar).

Per frequency the process is a scalar linear SDE ``dy = f_kl y dt + g_kl dw`` in the DCT basis
(Kingma et al. 2021, eq. 21-22, per coordinate)::

    f_kl = d log alpha_kl / dt = sigma^2 lambda' / 2 + d log d_kl / dt,
    g_kl^2 = d sigma^2/dt - 2 f_kl sigma^2 = -sigma^2 (lambda' + 2 d log d_kl / dt) >= 0,

so every generic sampler runs on it, and the Gaussian posterior and DDIM steps apply frequency by
frequency (:data:`~scoregen.sde.base.DIAGONAL_KERNEL`). Images only: flat data are refused with
an error naming the processes for vectors.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from scoregen.infra.shape import bcast
from scoregen.sde.base import DIAGONAL_KERNEL, FINITE_TERMINAL_SNR, SDE, Params
from scoregen.sde.registry import register


@lru_cache(maxsize=16)
def dct_matrix(n: int) -> Tensor:
    """The orthonormal DCT-II matrix ``(n, n)`` (float64): row ``k`` is ``sqrt(2/n) c_k cos(pi
    (2 j + 1) k / (2 n))``, ``c_0 = 1/sqrt(2)``, ``c_k = 1`` otherwise."""
    j = torch.arange(n, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * j[None, :] + 1) * j[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


@register("blur")
class BlurSDE(SDE):
    """Blurring diffusion: heat dissipation per DCT frequency and a truncated-cosine VP noise."""

    capabilities = frozenset({DIAGONAL_KERNEL, FINITE_TERMINAL_SNR})
    default_spacing = "uniform"
    default_sampler = "ddim"

    def __init__(self, sigma_blur_max: float = 20.0, min_scale: float = 0.001,
                 logsnr_min: float = -10.0, logsnr_max: float = 10.0, T: float = 1.0,
                 t_min: float = 1e-3) -> None:
        super().__init__(T=T, t_min=t_min)
        if not (isinstance(sigma_blur_max, int | float) and 0 <= sigma_blur_max < math.inf):
            raise ValueError(f"sigma_blur_max must be a finite number >= 0, got "
                             f"{sigma_blur_max!r}")
        self.sigma_blur_max = float(sigma_blur_max)
        if not (isinstance(min_scale, int | float) and 0 < min_scale <= 1):
            raise ValueError(f"min_scale (d_min) must lie in (0, 1], got {min_scale!r}")
        self.min_scale = float(min_scale)
        if not logsnr_min < logsnr_max:
            raise ValueError(f"logsnr_min must be smaller than logsnr_max, got {logsnr_min} >= "
                             f"{logsnr_max}")
        self.logsnr_min, self.logsnr_max = float(logsnr_min), float(logsnr_max)
        self._c0 = math.atan(math.exp(-0.5 * self.logsnr_max))
        self._c1 = math.atan(math.exp(-0.5 * self.logsnr_min)) - self._c0
        if T > 1:
            raise ValueError(f"blur is defined on [0, 1] (the cosine schedule ends at t = 1), "
                             f"got T={T}")

    # -- the shape: images only -------------------------------------------------------------------
    def state_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(data_shape) != 3:
            raise ValueError(
                f"blur diffuses images of shape (C, H, W) (it blurs in the 2-D DCT of each "
                f"channel); data of shape {tuple(data_shape)} are not images: use vp, ve, cld "
                "or another process for vectors, or reshape the data to (C, H, W)")
        return tuple(data_shape)

    def to_basis(self, x: Tensor) -> Tensor:
        """The 2-D DCT-II of each channel, ``V_H x V_W^T`` (orthonormal)."""
        self.state_shape(tuple(x.shape[1:]))
        vh, vw = (dct_matrix(n).to(x) for n in x.shape[-2:])
        return vh @ x @ vw.T

    def from_basis(self, y: Tensor) -> Tensor:
        vh, vw = (dct_matrix(n).to(y) for n in y.shape[-2:])
        return vh.T @ y @ vw

    # -- the schedule -----------------------------------------------------------------------------
    def log_snr(self, t: Tensor) -> Tensor:
        """``lambda(t) = -2 log tan(c_1 t + c_0)``: the log-SNR of the DC frequency."""
        return -2 * torch.log(torch.tan(self._c1 * t + self._c0))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        t = (torch.atan(torch.exp(-0.5 * lam)) - self._c0) / self._c1
        return t.clamp(0, self.T)

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma(t) = sqrt(sigmoid(-lambda(t)))``: the same noise at every frequency."""
        return torch.sigmoid(-self.log_snr(t)).sqrt()

    def _dlog_snr(self, t: Tensor) -> Tensor:
        """``lambda'(t) = -4 c_1 / sin(2 (c_1 t + c_0))``."""
        return -4 * self._c1 / torch.sin(2 * (self._c1 * t + self._c0))

    def frequencies(self, data_shape: tuple[int, ...]) -> Tensor:
        """``Lambda_kl = (pi k / H)^2 + (pi l / W)^2``: ``(1, H, W)`` float64."""
        _, H, W = self.state_shape(tuple(data_shape))
        k = (math.pi * torch.arange(H, dtype=torch.float64) / H) ** 2
        l_ = (math.pi * torch.arange(W, dtype=torch.float64) / W) ** 2
        return (k[:, None] + l_[None, :])[None]

    def _tau(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Dissipation time ``tau = sigma_B^2 / 2`` and ``dtau/dt``."""
        s = torch.sin(0.5 * math.pi * t)
        sigma_b = self.sigma_blur_max * s**2
        d_sigma_b = self.sigma_blur_max * 0.5 * math.pi * torch.sin(math.pi * t)
        return 0.5 * sigma_b**2, sigma_b * d_sigma_b

    def _per_frequency(self, t: Tensor, data_shape: tuple[int, ...]
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(alpha_kl, sigma, f_kl, g2_kl)`` (float64) of shape ``(*t.shape, 1, H, W)``
        (``sigma`` ``(*t.shape, 1, 1, 1)``)."""
        self.check_t(t)
        t = torch.as_tensor(t).detach().to(torch.float64)
        lam = self.frequencies(data_shape)
        tt = t.reshape(*t.shape, 1, 1, 1)
        tau, d_tau = self._tau(tt)
        decay = torch.exp(-lam * tau)
        d = (1 - self.min_scale) * decay + self.min_scale
        dlog_d = -(1 - self.min_scale) * lam * d_tau * decay / d
        logsnr, dlogsnr = self.log_snr(tt), self._dlog_snr(tt)
        var = torch.sigmoid(-logsnr)
        alpha = torch.sigmoid(logsnr).sqrt() * d
        f = 0.5 * var * dlogsnr + dlog_d
        g2 = -var * (dlogsnr + 2 * dlog_d)
        return alpha, var.sqrt(), f, g2

    def diagonal_kernel(self, t: Tensor, data_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """``(alpha_kl(t), sigma(t))``, broadcastable to ``(*t.shape, C, H, W)``."""
        alpha, sigma, _, _ = self._per_frequency(t, data_shape)
        return alpha, sigma

    # -- the kernel as operations -----------------------------------------------------------------
    def _alpha_like(self, t: Tensor, x: Tensor) -> Tensor:
        alpha = self._per_frequency(torch.as_tensor(t, device=x.device), tuple(x.shape[1:]))[0]
        return alpha.to(x.dtype)

    def _scale(self, coef: Tensor, x: Tensor) -> Tensor:
        """``V^T (coef V x)`` for per-frequency ``coef`` of shape ``(*t.shape, 1, H, W)``."""
        return self.from_basis(coef.to(x) * self.to_basis(x))

    def perturb(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``V^T (alpha_kl V x0) + sigma eps``."""
        if eps.shape != x0.shape:
            raise ValueError(f"eps has shape {tuple(eps.shape)} but x0 has {tuple(x0.shape)}")
        t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
        alpha = self._alpha_like(t, x0)
        return self._scale(alpha, x0) + bcast(self.sigma(t).to(x0.dtype), x0) * eps

    def x0_from_eps(self, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        sigma = bcast(self.sigma(torch.as_tensor(t, dtype=torch.float64)).to(x), x)
        return self._scale(1 / self._alpha_like(t, x), x - sigma * eps)

    def eps_from_x0(self, x: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        sigma = bcast(self.sigma(torch.as_tensor(t, dtype=torch.float64)).to(x), x)
        return (x - self._scale(self._alpha_like(t, x0), x0)) / sigma

    def kernel_matrices(self, t: Tensor, data_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """``A = V^T diag(alpha_kl) V`` (``V``: the DCT of every channel) and ``C = sigma^2 I``."""
        C, H, W = self.state_shape(tuple(data_shape))
        alpha, sigma, _, _ = self._per_frequency(torch.as_tensor(t, dtype=torch.float64),
                                                 data_shape)
        eye = torch.eye(C * H * W, dtype=torch.float64).reshape(-1, C, H, W)
        A = self._scale(alpha, eye).reshape(C * H * W, -1).T
        return A, sigma.reshape(()) ** 2 * torch.eye(C * H * W, dtype=torch.float64)

    # -- forward and reverse dynamics -------------------------------------------------------------
    def _coefficient(self, which: int, t: Tensor, x: Tensor) -> Tensor:
        return self._per_frequency(torch.as_tensor(t, device=x.device), tuple(x.shape[1:]))[which]

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """``V^T (f_kl V x)``."""
        return self._scale(self._coefficient(2, t, x), x)

    def diffuse(self, z: Tensor, t: Tensor, dt: float | Tensor = 1.0) -> Tensor:
        """``V^T (sqrt(g_kl^2 dt) V z)``."""
        return self._scale((self._coefficient(3, t, z) * dt).sqrt(), z)

    def diffusion2(self, v: Tensor, t: Tensor, scale: float = 1.0) -> Tensor:
        """``scale V^T (g_kl^2 V v)``."""
        return self._scale(scale * self._coefficient(3, t, v), v)

    # -- the network's preconditioning ------------------------------------------------------------
    def network_input(self, x: Tensor, t: Tensor, sigma_data: float) -> Tensor:
        """``x / sqrt(a^2 sigma_data^2 + sigma^2)`` with the DC frequency's ``a``: the VP input
        scaling (the blurred frequencies then have less than unit variance)."""
        t64 = t.detach().to(torch.float64)
        var = torch.sigmoid(-self.log_snr(t64))
        c_in = torch.rsqrt((1 - var) * sigma_data**2 + var)
        return bcast(c_in, x).to(x.dtype) * x

    def gaussian_eps(self, x: Tensor, t: Tensor, sigma_data: float) -> tuple[Tensor, Tensor]:
        """The Wiener filter per frequency, ``V^T (sigma / c_kl V x)`` with ``c_kl = alpha_kl^2
        sigma_data^2 + sigma^2``, and the root-mean-square over the frequencies of the posterior
        std ``alpha_kl sigma_data / sqrt(c_kl)`` (one output scale per time)."""
        alpha, sigma, _, _ = self._per_frequency(t.detach(), tuple(x.shape[1:]))
        c = alpha**2 * sigma_data**2 + sigma**2
        mean = self._scale(sigma / c, x)
        std = (alpha**2 * sigma_data**2 / c).mean(dim=(-1, -2, -3)).sqrt()
        return mean, bcast(std.to(x.dtype), x)

    def params(self) -> Params:
        return {"sigma_blur_max": self.sigma_blur_max, "min_scale": self.min_scale,
                "logsnr_min": self.logsnr_min, "logsnr_max": self.logsnr_max,
                **super().params()}


__all__ = ["BlurSDE", "dct_matrix"]
