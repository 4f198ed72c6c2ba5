"""The one abstract SDE every noise process in scoregen derives from.

All processes here are linear SDEs with Gaussian marginals of one form
(Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 5 and app. B;
Kingma et al. 2021, "Variational Diffusion Models", sec. 2)::

    dx = f(t) x dt + g(t) dw,       x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I).

A subclass gives ``alpha(t)`` and ``sigma(t)`` (and ``T``, ``t_min``). The drift and
diffusion coefficients follow from them (Kingma et al. 2021, eq. 21-22 / app. A):

    f(t)   = d log alpha / dt
    g(t)^2 = d sigma^2 / dt - 2 f(t) sigma^2

and are derived here by autograd unless the subclass gives a closed form. Everything else
(marginal sampling, log-SNR, prior, reverse-SDE and probability-flow drifts) lives once in
this class.

**The kernel as operations.** Samplers, losses and conversions do not read ``alpha`` and
``sigma`` to perturb data or to undo a perturbation: they ask the process (:meth:`SDE.perturb`,
:meth:`SDE.x0_from_eps`, :meth:`SDE.eps_from_x0`, :meth:`SDE.eps_from_score`,
:meth:`SDE.score_from_eps`, :meth:`SDE.prior_from_normal`, :meth:`SDE.prior_logp`,
:meth:`SDE.state_shape`, :meth:`SDE.data_from_state`). The scalar kernel above is the default
implementation of every one of them; a process with an augmented state (critically-damped
Langevin), a per-frequency schedule (blurring) or a learned schedule overrides what it must.
What a process offers beyond the generic reverse SDE is declared in :attr:`SDE.capabilities`
(:data:`CAPABILITIES`); samplers declare what they require, and
:func:`scoregen.sampling.api.sample` refuses a pair that does not fit with a message naming
the missing capability.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from scoregen.infra.shape import bcast

Params = dict[str, Any]
CHECKED = ("alpha", "sigma", "f", "g2", "log_snr")  # coefficient methods that check their times

SCALAR_KERNEL = "scalar_kernel"
DIAGONAL_KERNEL = "diagonal_kernel"
FINITE_TERMINAL_SNR = "finite_terminal_snr"
#: What a process may offer beyond drift, diffusion, the prior and the kernel operations
#: (which every process has), and what needs it.
CAPABILITIES: dict[str, str] = {
    SCALAR_KERNEL: "a perturbation kernel x_t = alpha(t) x0 + sigma(t) eps with scalar alpha "
                   "and sigma, so log-SNR is defined (exponential integrators, DDIM, ancestral "
                   "steps, log-SNR grids, re-targeting)",
    DIAGONAL_KERNEL: "a perturbation kernel diagonal in an orthonormal basis B, B x_t = alpha_k(t) "
                     "B x0 + sigma_k(t) B eps with one alpha_k, sigma_k per coordinate k (the "
                     "scalar kernel is the case B = I), so Gaussian posterior and DDIM steps "
                     "apply coordinate by coordinate",
    FINITE_TERMINAL_SNR: "alpha(T) > 0, so the log-SNR, the drift and the x0 of an eps "
                         "prediction are finite at T (a solver that chooses its own steps "
                         "from T; a process rescaled to zero terminal SNR lacks it)",
}


def declare_capability(name: str, description: str) -> str:
    """Add a capability a process offers to :data:`CAPABILITIES` (a process's own file declares
    it, next to the process; samplers and objectives may then require it). Returns ``name``."""
    known = CAPABILITIES.get(name)
    if known is not None and known != description:
        raise ValueError(f"capability {name!r} is declared already, as {known!r}")
    CAPABILITIES[name] = description
    return name


def _checked_times(method: Callable[[Any, Tensor], Tensor]) -> Callable[[Any, Tensor], Tensor]:
    """``method(self, t)`` that first checks ``t`` lies in ``[0, T]`` (:meth:`SDE.check_t`)."""
    if getattr(method, "_checks_times", False):
        return method

    @functools.wraps(method)
    def checked(self: SDE, t: Tensor) -> Tensor:
        self.check_t(t)
        return method(self, t)

    checked._checks_times = True  # type: ignore[attr-defined]
    return checked


class SDE:
    """Base class of a linear SDE with marginals ``x_t = alpha(t) x_0 + sigma(t) eps``.

    Subclasses set ``name`` (the registry key), implement :meth:`alpha` and :meth:`sigma`,
    and may override :meth:`f`, :meth:`g2`, :meth:`t_from_log_snr` and :meth:`prior_std`
    with closed forms. Times are tensors of shape ``()`` or ``(B,)``; coefficients come back
    with the same shape and dtype.

    Attributes:
        name: the registry key, set by :func:`scoregen.sde.registry.register`.
        capabilities: what the process offers (:data:`CAPABILITIES`); the scalar kernel for
            every subclass that keeps the default kernel operations.
        T: final time of the forward process; the prior lives there.
        t_min: smallest time samplers integrate to and training samples (the model is never
            asked for ``t < t_min``); the valid time range of the process is ``[0, T]``.
        default_spacing: the time grid ``spacing="auto"`` picks for this process:
            ``"data"`` (uniform in log-SNR where the data is resolved, geometric above; see
            :mod:`scoregen.sampling.grid`) for every scalar kernel shipped, never worse than
            uniform in log-SNR on the cells of ``experiments/default_grid.py``
            (docs/fast-samplers.md); a new SDE sets its own (a process without log-SNR a
            spacing in ``t``).
        default_sampler: the sampler ``sampler="auto"`` takes where the recommended one
            (:mod:`scoregen.sampling.recommend`, for scalar kernels) does not run on the
            process: Euler–Maruyama on the reverse SDE runs on every process.
        default_objective: the training objective ``objective: {name: auto}`` picks
            (:mod:`scoregen.training.objectives`).
    """

    name: str = "sde"
    default_spacing: str = "data"
    default_sampler: str = "euler_maruyama"
    capabilities: frozenset[str] = frozenset({SCALAR_KERNEL, DIAGONAL_KERNEL, FINITE_TERMINAL_SNR})
    default_objective: str = "dsm"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every ``alpha``/``sigma``/``f``/``g2``/``log_snr`` a subclass defines checks its
        times, so a time outside ``[0, T]`` (or NaN) is a ``ValueError`` naming the SDE, never
        a silent value."""
        super().__init_subclass__(**kwargs)
        for name in CHECKED:
            if name in cls.__dict__:
                setattr(cls, name, _checked_times(cls.__dict__[name]))

    def __init__(self, T: float = 1.0, t_min: float = 1e-3) -> None:
        if not (T > 0 and math.isfinite(T)):
            raise ValueError(f"T must be a positive finite number, got {T}")
        if not 0 < t_min < T:
            raise ValueError(f"t_min must satisfy 0 < t_min < T={T}, got t_min={t_min}")
        self.T = float(T)
        self.t_min = float(t_min)

    # -- the two functions a subclass must give ------------------------------------------
    def alpha(self, t: Tensor) -> Tensor:
        """Signal scale ``alpha(t)`` of the marginal."""
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        """Noise scale ``sigma(t)`` of the marginal."""
        raise NotImplementedError

    # -- derived coefficients (override with closed forms where known) --------------------
    @_checked_times
    def f(self, t: Tensor) -> Tensor:
        """Drift coefficient ``f(t) = d log alpha(t) / dt`` (autograd by default)."""
        return _time_derivative(lambda s: torch.log(self.alpha(s)), t)

    @_checked_times
    def g2(self, t: Tensor) -> Tensor:
        """Squared diffusion ``g(t)^2 = d sigma^2/dt - 2 f(t) sigma^2`` (autograd by default)."""
        dvar = _time_derivative(lambda s: self.sigma(s) ** 2, t)
        return dvar - 2 * self.f(t) * self.sigma(t) ** 2

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """Forward drift ``f(t) x``; ``x: (B, *D)``, ``t: ()`` or ``(B,)``."""
        return bcast(self.f(t), x) * x

    def diffusion(self, t: Tensor) -> Tensor:
        """Diffusion coefficient ``g(t)``."""
        return self.g2(t).clamp_min(0).sqrt()

    def log_snr(self, t: Tensor) -> Tensor:
        """Half log signal-to-noise ratio ``lambda(t) = log(alpha(t) / sigma(t))``.

        Decreasing in ``t``. DDIM and DPM-Solver integrate exactly in ``lambda``
        (Lu et al. 2022, eq. 3.4).
        """
        return torch.log(self.alpha(t)) - torch.log(self.sigma(t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr` on ``[0, T]``, by bisection (values outside are clamped).

        Subclasses with a closed form override this; the shared tests check the round trip.
        """
        return bisect_log_snr(self.log_snr, lam, self.T)

    def alpha_from_log_snr(self, lam: Tensor) -> Tensor:
        """``alpha`` at the time whose log-SNR is ``lam`` (then ``sigma = alpha e^{-lam}``).

        By :meth:`t_from_log_snr` here; processes with a closed form in ``lam`` override it
        (variance preserving: ``alpha^2 = sigmoid(2 lam)``; variance exploding: ``1``), which
        saves solvers that step in log-SNR a coefficient call per evaluation.
        """
        return self.alpha(self.t_from_log_snr(lam))

    # -- marginals -------------------------------------------------------------------------
    def check_t(self, t: Tensor) -> None:
        """Raise ``ValueError`` unless every time lies in the process range ``[0, T]``."""
        t = torch.as_tensor(t).detach()
        if t.numel() == 0:
            return
        if t.numel() == 1:  # the common case of samplers: one time per step
            lo = hi = float(t)
        else:
            lo, hi = (float(v) for v in torch.aminmax(t.reshape(-1)))
        tol = 1e-6 * self.T
        if lo >= -tol and hi <= self.T + tol:  # False for NaN too
            return
        if not torch.isfinite(t).all():
            raise ValueError(f"{self.name}: times must be finite numbers, got {t}")
        raise ValueError(
            f"{self.name}: time outside the SDE's range [0, {self.T}] (got min {lo:.6g}, max "
            f"{hi:.6g}); pass times with 0 <= t <= {self.T}"
        )

    def marginal_params(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha(t), sigma(t))`` after checking that ``t`` is in range."""
        self.check_t(t)
        return self.alpha(t), self.sigma(t)

    # -- the perturbation kernel as operations (module docstring) ---------------------------
    def perturb(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """A sample of ``x_t | x_0``: ``alpha(t) x0 + sigma(t) eps`` (Song et al. 2021, eq. 29).

        ``x0: (B, *D)``, ``eps: (B, *state_shape(D))``, ``t: ()`` or ``(B,)``."""
        if eps.shape[1:] != self.state_shape(tuple(x0.shape[1:])) or len(eps) != len(x0):
            raise ValueError(f"eps has shape {tuple(eps.shape)} but x0 has {tuple(x0.shape)}")
        t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
        alpha, sigma = self.marginal_params(t)
        return bcast(alpha, x0) * x0 + bcast(sigma, x0) * eps

    def x0_from_eps(self, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """The ``x0`` with ``perturb(x0, t, eps) = x``: ``(x - sigma eps) / alpha``."""
        alpha, sigma = self._coefficients_like(t, x)
        return (x - sigma * eps) / alpha

    def eps_from_x0(self, x: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """The ``eps`` with ``perturb(x0, t, eps) = x``: ``(x - alpha x0) / sigma``."""
        alpha, sigma = self._coefficients_like(t, x)
        return (x - alpha * x0) / sigma

    def score_from_eps(self, eps: Tensor, t: Tensor) -> Tensor:
        """Score of the perturbation kernel at ``perturb(x0, t, eps)``: ``-eps / sigma(t)``;
        with ``eps_hat = E[eps | x_t]`` it is ``grad log p_t(x)`` (Vincent 2011)."""
        return -eps / bcast(self.sigma(torch.as_tensor(t)), eps)

    def eps_from_score(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Inverse of :meth:`score_from_eps`: ``eps = -sigma(t) score``."""
        return -bcast(self.sigma(torch.as_tensor(t)), x) * score

    def state_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Event shape of the diffusing state for data of event shape ``data_shape``: the same
        here (an augmented process such as critically-damped Langevin enlarges it)."""
        return tuple(data_shape)

    def data_from_state(self, x: Tensor) -> Tensor:
        """The data part ``(B, *D)`` of a state ``(B, *state_shape(D))``: all of it here (callers
        pass states: :func:`scoregen.sample` applies it only to results of the state's shape)."""
        return x

    def predicted_part(self, v: Tensor) -> Tensor:
        """The part of a state-shaped noise or score ``v`` that a model predicts, of the data's
        shape: all of it here (critically-damped Langevin: the velocity half). A model's
        ``eps`` or ``score`` output is this part, and :meth:`x0_from_eps` and
        :meth:`eps_from_score` accept it (:mod:`scoregen.models.prediction`)."""
        return v

    def scale_noise(self, eps: Tensor, t: Tensor) -> Tensor:
        """The noise the kernel adds for a standard normal ``eps`` of the state's shape,
        ``perturb(x0, t, eps) - perturb(x0, t, 0)``: ``sigma(t) eps`` here, ``L_t eps`` for a
        kernel covariance ``Sigma_t = L_t L_t^T``."""
        return bcast(self.sigma(torch.as_tensor(t)).to(eps.dtype), eps) * eps

    def lift(self, x0: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """The state at ``t = 0`` of data ``x0`` whose auxiliary part (if any) is drawn from the
        standard normals ``z`` (state-shaped), with the log-density of that draw ``(B,)``: ``x0``
        and ``0`` here (critically-damped Langevin draws the initial velocity). Likelihoods of
        data under an augmented process are bounds through it (Dockhorn et al. 2022, eq. 16)."""
        return x0, x0.new_zeros(x0.shape[0])

    # -- a kernel diagonal in an orthonormal basis (DIAGONAL_KERNEL) --------------------------
    def to_basis(self, x: Tensor) -> Tensor:
        """Coordinates of ``x: (B, *D)`` in the orthonormal basis in which the kernel is
        diagonal: ``x`` itself here (blurring: the 2-D DCT of each channel)."""
        return x

    def from_basis(self, y: Tensor) -> Tensor:
        """Inverse of :meth:`to_basis` (its transpose: the basis is orthonormal)."""
        return y

    def diagonal_kernel(self, t: Tensor, data_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """``(alpha_k(t), sigma_k(t))`` in the basis of :meth:`to_basis` for times ``t`` of shape
        ``()`` or ``(N,)``: ``alpha(t)``, ``sigma(t)`` of ``t``'s shape here (one value for
        every coordinate); ``(*t.shape, *data_shape)`` for a kernel with one per coordinate."""
        return self.alpha(t), self.sigma(t)

    def diagonal_posterior(self, t: Tensor, s: Tensor, data_shape: tuple[int, ...]
                           ) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`gaussian_posterior` ``(c_x, c_0, std)`` of every coordinate of the basis, for
        ``s < t`` (:meth:`posterior` for the scalar kernel)."""
        if SCALAR_KERNEL in self.capabilities:
            return self.posterior(t, s)
        return gaussian_posterior(*self.diagonal_kernel(t, data_shape),
                                  *self.diagonal_kernel(s, data_shape))

    def diagonal_transition(self, s: Tensor, t: Tensor, data_shape: tuple[int, ...]
                            ) -> tuple[Tensor, Tensor]:
        """:func:`gaussian_transition` ``(alpha_ts, sigma_ts)`` of every coordinate of the basis
        (:meth:`transition` for the scalar kernel)."""
        if SCALAR_KERNEL in self.capabilities:
            return self.transition(s, t)
        return gaussian_transition(*self.diagonal_kernel(s, data_shape),
                                   *self.diagonal_kernel(t, data_shape))

    # -- the kernel as matrices, and the network's preconditioning -----------------------------
    def kernel_matrices(self, t: Tensor, data_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """The kernel at one time ``t`` as dense float64 matrices on flattened data and states,
        ``x_t | x0 ~ N(A x0, C)`` with ``A: (S, D)`` and ``C: (S, S)`` (``D``, ``S``: the numbers
        of data and state values): ``alpha I`` and ``sigma^2 I`` here. The exact mixture oracle
        (:mod:`scoregen.models.analytic`) and the shared tests use them for every other kernel."""
        t = torch.as_tensor(t, dtype=torch.float64)
        eye = torch.eye(math.prod(data_shape), dtype=torch.float64)
        return self.alpha(t) * eye, self.sigma(t) ** 2 * eye

    def network_input(self, x: Tensor, t: Tensor, sigma_data: float) -> Tensor:
        """The state scaled to unit variance for data of std ``sigma_data`` (EDM's ``c_in``):
        ``x / sqrt(alpha^2 sigma_data^2 + sigma^2)``, ``t: (B,)``. :class:`~scoregen.models.
        ScoreModel` asks a process without the scalar kernel for it."""
        t64 = t.detach().to(torch.float64)
        c_in = torch.rsqrt(self.alpha(t64) ** 2 * sigma_data**2 + self.sigma(t64) ** 2)
        return bcast(c_in, x).to(x.dtype) * x

    def noise_condition(self, t: Tensor) -> Tensor:
        """The scalar the network is conditioned on, ``-lambda(t) / 4`` (EDM's ``c_noise``)."""
        return -self.log_snr(t.detach().to(torch.float64)) / 4

    def gaussian_eps(self, x: Tensor, t: Tensor, sigma_data: float) -> tuple[Tensor, Tensor]:
        """Mean and std of the predicted part of ``eps`` given ``x_t = x`` when the data are
        ``N(0, sigma_data^2 I)`` (the Wiener filter): ``(sigma c_in^2 x, alpha sigma_data
        c_in)``. The ``eps`` parameterization is ``mean + std F`` (:mod:`scoregen.models.
        prediction`); for critically-damped Langevin it is the "mixed score" of Dockhorn et al."""
        t64 = t.detach().to(torch.float64)
        alpha, sigma = self.alpha(t64), self.sigma(t64)
        c_in2 = 1 / (alpha**2 * sigma_data**2 + sigma**2)
        return (bcast(sigma * c_in2, x).to(x.dtype) * x,
                bcast(alpha * sigma_data * c_in2.sqrt(), x).to(x.dtype))

    def _coefficients_like(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        """``alpha(t)``, ``sigma(t)`` broadcast against ``x`` in its dtype."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        return bcast(self.alpha(t), x), bcast(self.sigma(t), x)

    # -- Gaussian transitions between two times ---------------------------------------------
    def transition(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``x_t | x_s ~ N(alpha_ts x_s, sigma_ts^2 I)`` for ``s < t``: ``(alpha_ts, sigma_ts)``
        (:func:`gaussian_transition`)."""
        return gaussian_transition(self.alpha(s), self.sigma(s), self.alpha(t), self.sigma(t))

    def posterior(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``q(x_s | x_t, x0) = N(c_x x_t + c_0 x0, std^2 I)`` for ``s < t``: ``(c_x, c_0, std)``
        (:func:`gaussian_posterior`). With the discrete DDPM schedule and ``s = t - 1/N`` this is
        Ho et al. 2020, eq. 6-7."""
        return gaussian_posterior(self.alpha(t), self.sigma(t), self.alpha(s), self.sigma(s))

    # -- prior at T -------------------------------------------------------------------------
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior at ``T`` (``sigma(T)``)."""
        return float(self.sigma(torch.tensor(self.T, dtype=torch.float64)))

    def prior_from_normal(self, z: Tensor) -> Tensor:
        """A prior sample from a standard normal draw ``z`` of the state's shape:
        ``prior_std * z`` (samplers draw ``z`` from their per-sample noise stream)."""
        return self.prior_std() * z

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``x_T`` of the given ``(B, *state)`` shape (:meth:`prior_from_normal`)."""
        z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return self.prior_from_normal(z)

    def prior_logp(self, x: Tensor) -> Tensor:
        """``log N(x; 0, prior_std^2 I)`` summed over all but the batch dimension: ``(B,)``."""
        s = self.prior_std()
        d = x[0].numel()
        log_norm = d * (math.log(s) + 0.5 * math.log(2 * math.pi))
        return -0.5 * (x**2).flatten(1).sum(1) / s**2 - log_norm

    # -- reverse-time dynamics given a score -----------------------------------------------------
    def diffuse(self, z: Tensor, t: Tensor, dt: float | Tensor = 1.0) -> Tensor:
        """``G(t) sqrt(dt) z``: the noise of ``dx = drift dt + G(t) dw`` over a step ``dt`` for a
        standard normal ``z`` of the state's shape (here ``sqrt(g^2 dt) z``)."""
        return bcast((self.g2(t) * dt).sqrt(), z) * z

    def diffusion2(self, v: Tensor, t: Tensor, scale: float = 1.0) -> Tensor:
        """``scale G(t) G(t)^T v``, the diffusion matrix times a state-shaped ``v`` (here
        ``scale g^2 v``): the reverse SDE and the probability flow use it on the score."""
        return scale * bcast(self.g2(t), v) * v

    def reverse_drift(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Drift of the reverse SDE ``f(x, t) - G G^T score`` (Song et al. 2021, eq. 6)."""
        return self.drift(x, t) - self.diffusion2(score, t)

    def ode_drift(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Probability-flow ODE ``dx/dt = f(x, t) - G G^T score / 2`` (Song et al. 2021, eq. 13)."""
        return self.drift(x, t) - self.diffusion2(score, t, 0.5)

    # -- identity, serialisation -------------------------------------------------------------------
    def params(self) -> Params:
        """Constructor arguments that rebuild this SDE (stored in checkpoints)."""
        return {"T": self.T, "t_min": self.t_min}

    def config(self) -> Params:
        """``{"name": ..., **params}``; :func:`scoregen.sde.from_config` inverts it."""
        return {"name": self.name, **self.params()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SDE) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items() if not isinstance(v, list))
        return f"{type(self).__name__}({args})"


def gaussian_transition(alpha_s: Tensor, sigma_s: Tensor, alpha_t: Tensor, sigma_t: Tensor
                        ) -> tuple[Tensor, Tensor]:
    """``x_t | x_s ~ N(alpha_ts x_s, sigma_ts^2)`` for ``s < t`` of the marginals ``alpha_s x0 +
    sigma_s eps`` and ``alpha_t x0 + sigma_t eps``: ``alpha_ts = alpha_t / alpha_s``,
    ``sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2`` (Kingma et al. 2021, eq. 32). Elementwise,
    so it serves one coefficient per coordinate as well."""
    alpha_ts = alpha_t / alpha_s
    var_ts = sigma_t ** 2 - alpha_ts**2 * sigma_s ** 2
    return alpha_ts, var_ts.clamp_min(0).sqrt()


def gaussian_posterior(alpha_t: Tensor, sigma_t: Tensor, alpha_s: Tensor, sigma_s: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """``q(x_s | x_t, x0) = N(c_x x_t + c_0 x0, std^2)`` for ``s < t``: ``(c_x, c_0, std)`` with
    ``c_x = alpha_ts sigma_s^2 / sigma_t^2``, ``c_0 = alpha_s sigma_ts^2 / sigma_t^2``, ``std^2 =
    sigma_ts^2 sigma_s^2 / sigma_t^2`` (Kingma et al. 2021, eq. 33); elementwise."""
    alpha_ts, sigma_ts = gaussian_transition(alpha_s, sigma_s, alpha_t, sigma_t)
    var_t, var_s = sigma_t ** 2, sigma_s ** 2
    c_x = alpha_ts * var_s / var_t
    c_0 = alpha_s * sigma_ts**2 / var_t
    return c_x, c_0, (sigma_ts**2 * var_s / var_t).sqrt()


def bisect_log_snr(log_snr: Callable[[Tensor], Tensor], lam: Tensor, T: float) -> Tensor:
    """The time in ``[0, T]`` where the decreasing ``log_snr`` equals ``lam``, by bisection."""
    lam64 = lam.detach().to(torch.float64)
    lo = torch.zeros_like(lam64)
    hi = torch.full_like(lam64, T)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        too_noisy = log_snr(mid) < lam64  # lambda decreases: answer lies below mid
        hi = torch.where(too_noisy, mid, hi)
        lo = torch.where(too_noisy, lo, mid)
    return (0.5 * (lo + hi)).to(lam.dtype)


def _time_derivative(fn, t: Tensor) -> Tensor:
    """Elementwise ``d fn(t) / dt`` by autograd; works under ``no_grad`` and inference mode."""
    with torch.inference_mode(False), torch.enable_grad():
        tt = t.detach().clone().requires_grad_(True)
        y = fn(tt)
        if not y.requires_grad:  # constant in t (e.g. alpha = 1 for VE)
            return torch.zeros_like(t)
        (d,) = torch.autograd.grad(y.sum(), tt, allow_unused=True, materialize_grads=True)
    return d.detach()


def positive(name: str, value: float) -> float:
    """Validate a schedule parameter that must be a positive finite number."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def increasing(lo_name: str, lo: float, hi_name: str, hi: float) -> None:
    """Validate that a schedule's endpoints increase (e.g. ``beta_min < beta_max``)."""
    if not lo < hi:
        raise ValueError(f"{lo_name} must be smaller than {hi_name}, got {lo} >= {hi}")
