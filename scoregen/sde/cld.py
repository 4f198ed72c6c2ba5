"""Critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis 2022, "Score-Based Generative
Modeling with Critically-Damped Langevin Diffusion"; reference code nv-tlabs/CLD-SGM).

The data ``x`` is coupled to a velocity ``v`` of the same shape, and the state ``u = (x, v)``
diffuses by (their eq. 5, with ``beta(t) = beta0 + beta1 t``, mass ``M``, friction ``Gamma``)::

    dx =  beta M^{-1} v dt,
    dv = -beta x dt - beta Gamma M^{-1} v dt + sqrt(2 Gamma beta) dw,    Gamma^2 = 4 M,

noise entering through the velocity only. Critical damping ``Gamma^2 = 4 M`` makes the drift
matrix ``F = [[0, 1/M], [-1, -Gamma/M]]`` (per dimension) have the double eigenvalue ``-2/Gamma``,
so ``F + (2/Gamma) I`` is nilpotent and, with ``B = int_0^t beta`` and ``r = 2B / Gamma``,

    exp(B F) = e^{-r} [[1 + r, 4B/Gamma^2], [-B, 1 - r]].

The process is stationary at ``N(0, diag(1, M))`` per dimension (the prior), and the covariance
from ``Sigma_0`` is ``Sigma_t = Sigma_inf + exp(BF) (Sigma_0 - Sigma_inf) exp(BF)^T``. With the
initial velocity ``v_0 ~ N(0, gamma M)`` drawn with the data (``Sigma_0 = diag(0, gamma M)``: the
kernel of hybrid score matching, their sec. 3.2) the kernel of the state given ``x_0`` is, per
dimension, ``u_t = (a_x, a_v) x_0 + L_t eps``, ``eps ~ N(0, I_2)``, ``L_t L_t^T = Sigma_t``::

    a_x = e^{-r} (1 + r),               a_v = -B e^{-r},
    Sigma_xx = 1 - e^{-2r} (1 + 2r + (2 - gamma) r^2),
    Sigma_xv = B e^{-2r} (gamma + (2 - gamma) r),
    Sigma_vv = M + e^{-2r} ((gamma - 1) M (1 - r)^2 - B^2),
    L = [[L_xx, 0], [L_xv, L_vv]]:  L_xx = sqrt(Sigma_xx),  L_xv = Sigma_xv / L_xx,
                                    L_vv = sqrt(Sigma_vv - L_xv^2).

(``Sigma_xx = gamma r^2 + O(r^3)`` near ``t = 0``: the coefficients are computed in float64.)

**The velocity score.** The kernel's score is ``-L^{-T} eps``; its velocity part ``-eps_v /
L_vv`` is what a model learns (their "hybrid score matching"), and it fixes the rest: given the
state and ``eps_v`` the two equations of the kernel determine ``x_0`` and ``eps_x``
(:meth:`CLDSDE.x0_from_eps`). So a CLD model predicts the velocity half of ``eps``
(:meth:`CLDSDE.predicted_part`), its input is the whole state ``(2C, H, W)`` or ``(2D,)``
(:meth:`CLDSDE.state_shape`: the velocity stacked after the data along the first axis, as in
CLD-SGM), and samples are the ``x`` part. The eps parameterization adds the posterior mean of
``eps_v`` for Gaussian data (:meth:`CLDSDE.gaussian_eps`), the "mixed score" of the paper's
sec. 3.3.

The generic samplers (Euler–Maruyama, predictor–corrector, the probability-flow ODE) run on
this process from its drift, diffusion and score; the symmetric splitting sampler SSCS
(:mod:`scoregen.samplers.sscs`) uses what :data:`DAMPED_LANGEVIN` names. Defaults are the
paper's: ``beta = 4``, ``M^{-1} = 4`` (so ``Gamma = 1``), ``gamma = 0.04``, ``T = 1``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoregen.infra.shape import bcast
from scoregen.sde.base import FINITE_TERMINAL_SNR, SDE, Params, declare_capability, positive
from scoregen.sde.registry import register

DAMPED_LANGEVIN = declare_capability(
    "damped_langevin",
    "an augmented state (x, v) of critically-damped Langevin dynamics: beta(t), its integral, "
    "the mass M and friction Gamma, so the reverse SDE splits into an exactly solvable linear "
    "part and a velocity-score kick (SSCS)")


@register("cld")
class CLDSDE(SDE):
    """Critically-damped Langevin diffusion of ``(x, v)`` with hybrid score matching's kernel."""

    capabilities = frozenset({DAMPED_LANGEVIN, FINITE_TERMINAL_SNR})
    # uniform in log t: the velocity kernel's variance grows like t, so the reverse SDE is stiff
    # like 1/t near 0 and steps proportional to t keep Euler-type steps stable at any count
    default_spacing = "log"
    default_sampler = "sscs"
    default_objective = "hsm"

    def __init__(self, beta0: float = 4.0, beta1: float = 0.0, mass: float = 0.25,
                 gamma: float = 0.04, T: float = 1.0, t_min: float = 1e-3) -> None:
        super().__init__(T=T, t_min=t_min)
        self.beta0 = positive("beta0", beta0)
        if not (isinstance(beta1, int | float) and math.isfinite(beta1) and beta1 >= 0):
            raise ValueError(f"beta1 must be a finite number >= 0, got {beta1!r}")
        self.beta1 = float(beta1)
        self.mass = positive("mass", mass)
        self.gamma = positive("gamma", gamma)
        if self.gamma > 1:
            raise ValueError(f"gamma (initial velocity variance / M) must lie in (0, 1], got "
                             f"{gamma}")
        self.friction = 2 * math.sqrt(self.mass)  # critical damping Gamma^2 = 4 M

    # -- schedule ---------------------------------------------------------------------------------
    def beta(self, t: Tensor) -> Tensor:
        """``beta(t) = beta0 + beta1 t``."""
        return self.beta0 + self.beta1 * t

    def beta_integral(self, t: Tensor) -> Tensor:
        """``B(t) = int_0^t beta = beta0 t + beta1 t^2 / 2``."""
        return self.beta0 * t + 0.5 * self.beta1 * t**2

    def kernel(self, t: Tensor) -> dict[str, Tensor]:
        """``a_x, a_v`` and the covariance ``s_xx, s_xv, s_vv`` with its Cholesky factor
        ``l_xx, l_xv, l_vv`` at ``t`` (float64, ``t``'s shape; module docstring)."""
        self.check_t(t)
        B = self.beta_integral(torch.as_tensor(t).detach().to(torch.float64))
        M, g = self.mass, self.gamma
        r = 2 * B / self.friction
        e1, e2 = torch.exp(-r), torch.exp(-2 * r)
        s_xx = -torch.expm1(-2 * r) - e2 * (2 * r + (2 - g) * r**2)
        s_xv = B * e2 * (g + (2 - g) * r)
        s_vv = M + e2 * ((g - 1) * M * (1 - r) ** 2 - B**2)
        l_xx = s_xx.clamp_min(1e-300).sqrt()
        l_xv = s_xv / l_xx
        l_vv = (s_vv - l_xv**2).clamp_min(1e-300).sqrt()
        return {"a_x": e1 * (1 + r), "a_v": -B * e1, "s_xx": s_xx, "s_xv": s_xv, "s_vv": s_vv,
                "l_xx": l_xx, "l_xv": l_xv, "l_vv": l_vv}

    def _coef(self, t: Tensor, like: Tensor) -> dict[str, Tensor]:
        """:meth:`kernel` broadcast against the data half of ``like``, in its dtype."""
        k = self.kernel(torch.as_tensor(t, device=like.device))
        return {name: bcast(v, like).to(like.dtype) for name, v in k.items()}

    # -- the state --------------------------------------------------------------------------------
    def state_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(2 D_0, *D_rest)``: the velocity stacked after the data along the first axis."""
        if len(data_shape) == 0:
            raise ValueError("cld needs samples with at least one axis, got shape ()")
        return (2 * data_shape[0], *data_shape[1:])

    @staticmethod
    def split(u: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, v)`` of a state ``u: (B, 2 D_0, ...)``."""
        if u.shape[1] % 2:
            raise ValueError(f"a cld state has an even first axis (data, then velocity), got "
                             f"shape {tuple(u.shape)}")
        return u.chunk(2, dim=1)

    def data_from_state(self, x: Tensor) -> Tensor:
        return self.split(x)[0]

    def predicted_part(self, v: Tensor) -> Tensor:
        """The velocity half: a CLD model predicts ``eps_v`` (or the velocity score)."""
        return self.split(v)[1]

    def _velocity_part(self, x: Tensor, w: Tensor) -> Tensor:
        """``w``'s velocity half when it is state-shaped like ``x``, else ``w`` itself."""
        return self.split(w)[1] if w.shape == x.shape else w

    # -- the kernel as operations -----------------------------------------------------------------
    def perturb(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``x = a_x x0 + L_xx eps_x``, ``v = a_v x0 + L_xv eps_x + L_vv eps_v``."""
        if eps.shape[1:] != self.state_shape(tuple(x0.shape[1:])) or len(eps) != len(x0):
            raise ValueError(f"eps has shape {tuple(eps.shape)} but x0 has {tuple(x0.shape)} "
                             f"(cld states are {self.state_shape(tuple(x0.shape[1:]))})")
        c = self._coef(torch.as_tensor(t, dtype=x0.dtype), x0)
        ex, ev = self.split(eps)
        return torch.cat([c["a_x"] * x0 + c["l_xx"] * ex,
                          c["a_v"] * x0 + c["l_xv"] * ex + c["l_vv"] * ev], dim=1)

    def x0_from_eps(self, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``x0`` from the state and ``eps_v`` (``eps`` state-shaped or its velocity half): the
        kernel's two equations ``x = a_x x0 + L_xx eps_x``, ``v - L_vv eps_v = a_v x0 + L_xv
        eps_x`` give ``x0 = (L_xx (v - L_vv eps_v) - L_xv x) / (a_v L_xx - a_x L_xv)``."""
        xx, v = self.split(x)
        c = self._coef(t, xx)
        ev = self._velocity_part(x, eps)
        det = c["a_v"] * c["l_xx"] - c["a_x"] * c["l_xv"]
        return (c["l_xx"] * (v - c["l_vv"] * ev) - c["l_xv"] * xx) / det

    def eps_from_x0(self, x: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """``L^{-1} (u - (a_x, a_v) x0)``, state-shaped."""
        xx, v = self.split(x)
        c = self._coef(t, xx)
        ex = (xx - c["a_x"] * x0) / c["l_xx"]
        return torch.cat([ex, (v - c["a_v"] * x0 - c["l_xv"] * ex) / c["l_vv"]], dim=1)

    def score_from_eps(self, eps: Tensor, t: Tensor) -> Tensor:
        """``-L^{-T} eps``: ``s_v = -eps_v / L_vv``, ``s_x = -(eps_x + L_xv s_v) / L_xx``."""
        ex, ev = self.split(eps)
        c = self._coef(t, ex)
        s_v = -ev / c["l_vv"]
        return torch.cat([-(ex + c["l_xv"] * s_v) / c["l_xx"], s_v], dim=1)

    def eps_from_score(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """``-L^T score``; a velocity score alone gives ``eps_v = -L_vv s_v``."""
        c = self._coef(t, self.split(x)[0])
        if score.shape != x.shape:
            return -c["l_vv"] * score
        s_x, s_v = self.split(score)
        return torch.cat([-(c["l_xx"] * s_x + c["l_xv"] * s_v), -c["l_vv"] * s_v], dim=1)

    def scale_noise(self, eps: Tensor, t: Tensor) -> Tensor:
        """``L_t eps``."""
        ex, ev = self.split(eps)
        c = self._coef(t, ex)
        return torch.cat([c["l_xx"] * ex, c["l_xv"] * ex + c["l_vv"] * ev], dim=1)

    def kernel_matrices(self, t: Tensor, data_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """``A = [a_x I; a_v I]`` and ``C = [[S_xx I, S_xv I], [S_xv I, S_vv I]]``."""
        k = self.kernel(torch.as_tensor(t, dtype=torch.float64))
        eye = torch.eye(math.prod(data_shape), dtype=torch.float64)
        A = torch.cat([k["a_x"] * eye, k["a_v"] * eye])
        C = torch.cat([torch.cat([k["s_xx"] * eye, k["s_xv"] * eye], 1),
                       torch.cat([k["s_xv"] * eye, k["s_vv"] * eye], 1)])
        return A, C

    # -- prior and lift ---------------------------------------------------------------------------
    def prior_from_normal(self, z: Tensor) -> Tensor:
        """``N(0, diag(1, M))`` per dimension: ``(z_x, sqrt(M) z_v)``."""
        zx, zv = self.split(z)
        return torch.cat([zx, math.sqrt(self.mass) * zv], dim=1)

    def prior_logp(self, x: Tensor) -> Tensor:
        xx, v = self.split(x)
        d = xx[0].numel()
        return (-0.5 * (xx**2).flatten(1).sum(1) - 0.5 * (v**2).flatten(1).sum(1) / self.mass
                - d * math.log(2 * math.pi) - 0.5 * d * math.log(self.mass))

    def lift(self, x0: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(x0, v0)`` with ``v0 = sqrt(gamma M) z_v`` and ``log N(v0; 0, gamma M I)``; then
        ``log p(x0) >= E[log p(x0, v0) - log N(v0; 0, gamma M)]`` (the paper's eq. 16)."""
        zv = self.split(z)[1]
        var = self.gamma * self.mass
        log_q = -0.5 * (zv**2).flatten(1).sum(1) - 0.5 * zv[0].numel() * math.log(
            2 * math.pi * var)
        return torch.cat([x0, math.sqrt(var) * zv.to(x0.dtype)], dim=1), log_q.to(x0.dtype)

    # -- forward and reverse dynamics -------------------------------------------------------------
    def _beta_like(self, t: Tensor, like: Tensor) -> Tensor:
        self.check_t(t)
        return bcast(self.beta(torch.as_tensor(t, dtype=torch.float64)), like).to(like.dtype)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """``beta F u``: ``(beta v / M, -beta (x + Gamma v / M))``."""
        xx, v = self.split(x)
        b = self._beta_like(t, xx)
        return torch.cat([b * v / self.mass, -b * (xx + self.friction / self.mass * v)], dim=1)

    def diffuse(self, z: Tensor, t: Tensor, dt: float | Tensor = 1.0) -> Tensor:
        """``(0, sqrt(2 Gamma beta dt) z_v)``."""
        zx, zv = self.split(z)
        b = self._beta_like(t, zx)
        return torch.cat([torch.zeros_like(zx), (2 * self.friction * b * dt).sqrt() * zv], dim=1)

    def diffusion2(self, v: Tensor, t: Tensor, scale: float = 1.0) -> Tensor:
        """``(0, scale 2 Gamma beta v_v)``."""
        vx, vv = self.split(v)
        b = self._beta_like(t, vx)
        return torch.cat([torch.zeros_like(vx), scale * 2 * self.friction * b * vv], dim=1)

    # -- the network's preconditioning ------------------------------------------------------------
    def _data_covariance(self, t: Tensor, sigma_data: float) -> dict[str, Tensor]:
        """Per-dimension covariance of the state for data ``N(0, sigma_data^2 I)``: ``c_xx,
        c_xv, c_vv`` (float64), with the kernel."""
        k = self.kernel(t)
        sd2 = sigma_data**2
        k.update(c_xx=k["a_x"] ** 2 * sd2 + k["s_xx"], c_xv=k["a_x"] * k["a_v"] * sd2 + k["s_xv"],
                 c_vv=k["a_v"] ** 2 * sd2 + k["s_vv"])
        return k

    def network_input(self, x: Tensor, t: Tensor, sigma_data: float) -> Tensor:
        """``(x / sqrt(c_xx), v / sqrt(c_vv))``: each half at unit variance for Gaussian data."""
        k = self._data_covariance(t, sigma_data)
        xx, v = self.split(x)
        return torch.cat([xx * bcast(k["c_xx"].rsqrt(), xx).to(x.dtype),
                          v * bcast(k["c_vv"].rsqrt(), v).to(x.dtype)], dim=1)

    def noise_condition(self, t: Tensor) -> Tensor:
        """``-lambda_x / 4`` with ``lambda_x = log(a_x / sqrt(Sigma_xx))`` the log-SNR of the data
        half of the kernel (VP's ``c_noise`` on the ``x`` marginal)."""
        k = self.kernel(t)
        return -(torch.log(k["a_x"]) - 0.5 * torch.log(k["s_xx"])) / 4

    def gaussian_eps(self, x: Tensor, t: Tensor, sigma_data: float) -> tuple[Tensor, Tensor]:
        """``E[eps_v | u] = L_vv (C^{-1} u)_v`` and ``sqrt(1 - L_vv^2 (C^{-1})_vv)`` for data
        ``N(0, sigma_data^2 I)`` (``Cov(eps, u) = L^T``, ``C = Var(u)``)."""
        k = self._data_covariance(t, sigma_data)
        det = k["c_xx"] * k["c_vv"] - k["c_xv"] ** 2
        xx, v = self.split(x)
        w_x, w_v = -k["l_vv"] * k["c_xv"] / det, k["l_vv"] * k["c_xx"] / det
        mean = bcast(w_x, xx).to(x.dtype) * xx + bcast(w_v, v).to(x.dtype) * v
        std = (1 - k["l_vv"] ** 2 * k["c_xx"] / det).clamp_min(0).sqrt()
        return mean, bcast(std, xx).to(x.dtype)

    def params(self) -> Params:
        return {"beta0": self.beta0, "beta1": self.beta1, "mass": self.mass,
                "gamma": self.gamma, **super().params()}
