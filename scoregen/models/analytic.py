"""Gaussian mixtures with exact perturbed densities and scores under any SDE: the oracle.

Data ``x0 ~ sum_k w_k N(mu_k, Sigma_k)`` pushed through ``x_t = alpha x0 + sigma eps`` stays
a mixture (Karras et al. 2022, app. B.1 for the isotropic case)::

    p_t(x) = sum_k w_k N(x; alpha mu_k, C_k),        C_k = alpha^2 Sigma_k + sigma^2 I.

So does any linear Gaussian kernel ``x_t | x0 ~ N(A_t x0, S_t)`` (an augmented state,
per-frequency scales: :meth:`scoregen.sde.base.SDE.kernel_matrices`): ``p_t = sum_k w_k N(A_t
mu_k, C_k)`` with ``C_k = A_t Sigma_k A_t^T + S_t``, ``score = -sum_k r_k C_k^{-1} (x - A_t
mu_k)`` and ``E[x0 | x_t = x] = sum_k r_k (mu_k + Sigma_k A_t^T C_k^{-1} (x - A_t mu_k))``; the
noise follows from the kernel, ``E[eps | x] = eps_from_x0(x, t, E[x0 | x])`` (it is linear).
Processes without the scalar kernel take this dense path (one Cholesky factor per component and
distinct time); the scalar kernel keeps the rotated one below.

With ``Sigma_k = U_k diag(s_k) U_k^T`` every ``C_k`` shares the eigenvectors ``U_k`` and has
eigenvalues ``alpha^2 s_k + sigma^2``, so densities, scores and posterior means cost one
rotation per component, at any ``t``. With responsibilities ``r_k(x) = p(k | x_t = x)``:

    score(x)      = -sum_k r_k C_k^{-1} (x - alpha mu_k)
    E[x0 | x_t=x] =  sum_k r_k (mu_k + alpha Sigma_k C_k^{-1} (x - alpha mu_k))
    E[eps | x_t=x] = (x - alpha E[x0 | x]) / sigma

The posterior mean is computed directly (not from the score), so it stays exact where
``alpha`` is tiny. :meth:`GaussianMixture.model` gives an object with the sampler model
interface (:class:`scoregen.models.prediction.Model`), so every sampler can run on an exact score.

Classes. Each component carries a class label ``c(k)`` (by default its own index). The
class-conditional law is the mixture restricted to the class's components, so under the
SDE ``p_t(x | y) = sum_{c(k)=y} w_k N(x; alpha mu_k, C_k) / sum_{c(k)=y} w_k``: its score
and posterior mean are the formulas above with the responsibilities renormalised over
``{k : c(k) = y}``. The exact noisy classifier is the summed responsibilities,
``p_t(y | x) = sum_{c(k)=y} r_k(x)``, so ``grad log p_t(y | x) = score(x | y) - score(x)``
holds exactly: classifier-free and classifier guidance at scale 1 both give exact
conditional sampling (:mod:`scoregen.sampling.guidance`).

Linear measurements. Given ``y = A x0 + sigma_y n`` (any matrix ``A``, ``sigma_y >= 0``) the
posterior is again a mixture (:meth:`GaussianMixture.posterior`, :class:`LinearPosterior`):
component ``k`` becomes ``N(mu_k + K_k (y - A mu_k), S_k - K_k A S_k)`` with ``K_k = S_k A^T
G_k^{-1}``, ``G_k = A S_k A^T + sigma_y^2 I``, and weight ``∝ w_k N(y; A mu_k, G_k)`` (Bishop
2006, sec. 2.3.3): the exact reference for inverse problems. Known coordinates
(:meth:`GaussianMixture.condition`) are the case of ``A`` selecting them with ``sigma_y = 0``:
``N(mu_U + S_UK S_KK^{-1} (v - mu_K), S_UU - S_UK S_KK^{-1} S_KU)`` with weight ``∝ w_k N(v;
mu_K, S_KK)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from scoregen.infra.registry import Registry
from scoregen.infra.shape import bcast
from scoregen.infra.spec import check_params, parse_spec
from scoregen.models.prediction import Prediction, check_prediction, output_from_pair
from scoregen.sde.base import SCALAR_KERNEL, SDE


class GaussianMixture:
    """A mixture of ``K`` Gaussians in ``D`` dimensions (samples may be reshaped to ``shape``).

    Args:
        means: ``(K, D)``.
        covs: ``(K, D)`` diagonal variances, ``(K, D, D)`` full covariances, or a float
            (shared isotropic variance).
        weights: ``(K,)`` non-negative, normalised here; uniform when omitted.
        shape: event shape of one sample (default ``(D,)``), e.g. ``(1, 8, 8)``.
        labels: ``(K,)`` class of each component (default: component ``k`` is class ``k``);
            classes must be ``0 .. C-1``, each with at least one component.

    All computation is float64 internally; outputs take the dtype of the input.
    """

    def __init__(
        self,
        means: Tensor,
        covs: Tensor | float,
        weights: Tensor | None = None,
        shape: tuple[int, ...] | None = None,
        labels: Tensor | None = None,
    ) -> None:
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        K, D = means.shape
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.ndim == 0:
            covs = covs.expand(K, D)
        if covs.shape == (K, D):
            evals, evecs = covs, torch.eye(D, dtype=torch.float64).expand(K, D, D)
        elif covs.shape == (K, D, D):
            if not torch.allclose(covs, covs.transpose(1, 2)):
                raise ValueError("covariances must be symmetric")
            evals, evecs = torch.linalg.eigh(covs)
        else:
            raise ValueError(f"covs must be a float, (K, D)=({K}, {D}) or (K, D, D); "
                             f"got {tuple(covs.shape)}")
        if not (evals > 0).all():
            raise ValueError("covariances must be positive definite")
        weights = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else (
            torch.as_tensor(weights, dtype=torch.float64))
        if weights.shape != (K,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be {K} non-negative numbers with a positive sum")
        self.shape = (D,) if shape is None else tuple(shape)
        if math.prod(self.shape) != D:
            raise ValueError(f"shape {self.shape} does not hold {D} values")
        self.means, self.evals, self.evecs = means, evals.contiguous(), evecs.contiguous()
        self.weights = weights / weights.sum()
        labels = torch.arange(K) if labels is None else torch.as_tensor(labels)
        if (labels.shape != (K,) or labels.is_floating_point() or labels.min() < 0
                or torch.unique(labels).numel() != int(labels.max()) + 1):
            raise ValueError(f"labels must give each of the {K} components a class 0..C-1, "
                             f"every class used; got {labels.tolist()}")
        self.labels = labels.to(torch.int64)

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.labels.max()) + 1

    def restrict(self, y: int) -> GaussianMixture:
        """The class-conditional law ``p(x | y)``: the components of class ``y``."""
        if not 0 <= int(y) < self.num_classes:
            raise ValueError(f"class {y} is outside [0, {self.num_classes})")
        keep = self.labels == int(y)
        return GaussianMixture(self.means[keep], self.covariances()[keep], self.weights[keep],
                               self.shape)

    def with_classes(self, classes: int) -> GaussianMixture:
        """The same mixture with component ``k`` in class ``k mod classes`` (e.g. ``ring8`` with
        2 classes: every other Gaussian of the ring, so the classes interleave)."""
        if not (isinstance(classes, int) and not isinstance(classes, bool)
                and 1 <= classes <= self.n_components):
            raise ValueError(f"classes must be an integer in [1, {self.n_components}] (one class "
                             f"per component at most), got {classes!r}")
        out = copy.copy(self)
        out.labels = torch.arange(self.n_components) % classes
        return out

    def class_weights(self) -> Tensor:
        """``p(y)``: ``(C,)``."""
        return torch.zeros(self.num_classes, dtype=torch.float64).index_add_(
            0, self.labels, self.weights)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def covariances(self) -> Tensor:
        """Full covariances ``(K, D, D)``."""
        return self.evecs @ torch.diag_embed(self.evals) @ self.evecs.transpose(1, 2)

    # -- sampling --------------------------------------------------------------------------------
    def sample(
        self, n: int, generator: torch.Generator | None = None, return_labels: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Exact data samples ``(n, *shape)`` (float64), optionally with component labels."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[k] + torch.einsum("nij,nj->ni", self.evecs[k], self.evals[k].sqrt() * z)
        x = x.reshape(n, *self.shape)
        return (x, k) if return_labels else x

    def sample_t(
        self, n: int, sde: SDE, t: float, generator: torch.Generator | None = None
    ) -> Tensor:
        """Exact samples of ``x_t`` under ``sde`` at time ``t`` (float64)."""
        x0 = self.sample(n, generator)
        eps = torch.randn((n, *sde.state_shape(self.shape)), generator=generator,
                          dtype=torch.float64)
        return sde.perturb(x0, torch.tensor(float(t), dtype=torch.float64), eps)

    # -- exact quantities at time t ----------------------------------------------------------------
    def _rotations(self) -> tuple[Tensor, Tensor, Tensor]:
        """``[U_1 ... U_K]: (D, K D)``, ``[U_1^T; ...; U_K^T]: (K D, D)`` and ``mu_k^T U_k: (K,
        D)``: every component's rotation as one matrix product (computed once)."""
        if getattr(self, "_rot", None) is None:
            K, D = self.n_components, self.dim
            self._rot = (self.evecs.permute(1, 0, 2).reshape(D, K * D).contiguous(),
                         self.evecs.transpose(1, 2).reshape(K * D, D).contiguous(),
                         torch.einsum("kd,kde->ke", self.means, self.evecs))
        return self._rot

    def _per_component(
        self, x: Tensor, alpha: Tensor, sigma: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated residuals ``y = U^T (x - alpha mu)``, variances and log-joint ``(B, K)``."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        if xf.shape[1] != self.dim:
            raise ValueError(f"x has {xf.shape[1]} values per sample; the mixture has {self.dim}")
        a, s = _shared(alpha, sigma)
        K, D = self.n_components, self.dim
        y = (xf @ self._rotations()[0]).reshape(-1, K, D) - a * self._rotations()[2]
        var = a**2 * self.evals[None] + s**2  # (1 or B, K, D)
        log_joint = torch.log(self.weights) - 0.5 * (
            (y**2 / var).sum(-1) + torch.log(var).sum(-1) + self.dim * math.log(2 * math.pi)
        )
        return y, var, log_joint

    def _class_mask(self, cond: Tensor | None, log_joint: Tensor) -> Tensor:
        """``log_joint`` with the components outside each row's class set to ``-inf``
        (label ``num_classes`` is the null label: no restriction)."""
        if cond is None:
            return log_joint
        y = torch.as_tensor(cond, dtype=torch.int64, device=log_joint.device).expand(
            log_joint.shape[0])
        if ((y < 0) | (y > self.num_classes)).any():
            raise ValueError(f"labels must lie in [0, {self.num_classes}] ({self.num_classes} "
                             f"is the null label), got {y.unique().tolist()}")
        keep = (self.labels.to(y.device)[None, :] == y[:, None]) | (y[:, None] == self.num_classes)
        return log_joint.masked_fill(~keep, -math.inf)

    def class_log_probs(
        self, x: Tensor, sde: SDE | None = None, t: Tensor | float | None = None
    ) -> Tensor:
        """The exact noisy classifier ``log p_t(y | x) = log sum_{c(k)=y} r_k(x)``: ``(B, C)``
        (differentiable in ``x``; data-space classifier when ``sde`` is None)."""
        log_r = torch.log_softmax(self._log_joint(x, sde, t), dim=1)
        index = self.labels.to(x.device)
        out = torch.full((x.shape[0], self.num_classes), -math.inf, dtype=log_r.dtype,
                         device=x.device)
        for c in range(self.num_classes):
            out[:, c] = torch.logsumexp(log_r[:, index == c], dim=1)
        return out

    def classifier(self, sde: SDE) -> Callable[[Tensor, Tensor], Tensor]:
        """``classifier(x, t) -> log p_t(y | x)``: the exact noise-conditional classifier."""
        return lambda x, t: self.class_log_probs(x, sde, t)

    def condition(self, known: Tensor, mask: Tensor) -> GaussianMixture:
        """The exact law of the unknown coordinates given ``x[mask] = known[mask]``.

        ``known``, ``mask``: one sample's values and a boolean mask of the event shape (or
        flat ``(D,)``). Returns a mixture over the ``D - |mask|`` unknown coordinates (in
        their flat order) with component weights updated by the evidence: the noiseless
        :meth:`posterior` of the measurement that reads the known coordinates.
        """
        m = torch.as_tensor(mask, dtype=torch.bool).reshape(-1)
        v = torch.as_tensor(known, dtype=torch.float64).reshape(-1)
        if m.shape != (self.dim,) or v.shape != (self.dim,):
            raise ValueError(f"known and mask must hold {self.dim} values, got "
                             f"{tuple(v.shape)} and {tuple(m.shape)}")
        if m.all() or not m.any():
            raise ValueError("mask must mark some but not all coordinates as known")
        A = torch.eye(self.dim, dtype=torch.float64)[m]
        return self.posterior(A, v[m]).mixture

    def posterior(self, A: Tensor | Any, y: Tensor, sigma_y: float = 0.0) -> LinearPosterior:
        """The exact posterior ``p(x | y)`` for ``y = A x + sigma_y n``, ``n ~ N(0, I)``.

        ``A``: a ``(m, D)`` matrix, or an operator with ``matrix()`` and ``flat(y)``
        (:class:`scoregen.sampling.inverse.operators.Operator`); ``y``: one measurement. Each
        component is conditioned like a joint Gaussian (Bishop 2006, sec. 2.3.3): with
        ``G_k = A S_k A^T + sigma_y^2 I`` and ``K_k = S_k A^T G_k^{-1}``,

            mean_k = mu_k + K_k (y - A mu_k),     cov_k = S_k - K_k A S_k,
            w'_k  ∝ w_k N(y; A mu_k, G_k).

        For ``sigma_y = 0`` the posterior lives on the affine set ``{x : A x = y}`` (``A`` of
        full row rank): :class:`LinearPosterior` holds it in coordinates ``z`` of that set.
        """
        if hasattr(A, "matrix"):
            A, y = A.matrix(), A.flat(y)
        A = torch.as_tensor(A, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        sigma_y = float(sigma_y)
        if A.ndim != 2 or A.shape[1] != self.dim or y.shape != (A.shape[0],):
            raise ValueError(f"A must be (m, {self.dim}) and y (m,), got {tuple(A.shape)} and "
                             f"{tuple(y.shape)}")
        if not (math.isfinite(sigma_y) and sigma_y >= 0):
            raise ValueError(f"sigma_y must be a finite number >= 0, got {sigma_y}")
        if not (torch.isfinite(A).all() and torch.isfinite(y).all()):
            raise ValueError("A and y must be finite")
        m = A.shape[0]
        if sigma_y == 0 and int(torch.linalg.matrix_rank(A)) < m:
            raise ValueError("a noiseless measurement needs A of full row rank; give sigma_y > 0")
        S = self.covariances()
        AS = A @ S  # (K, m, D)
        G = AS @ A.T + sigma_y**2 * torch.eye(m, dtype=torch.float64)
        G = 0.5 * (G + G.transpose(1, 2))
        L = torch.linalg.cholesky(G)
        resid = y - self.means @ A.T  # (K, m)
        sol = torch.cholesky_solve(resid[..., None], L)[..., 0]
        means = self.means + torch.einsum("kmd,km->kd", AS, sol)
        covs = S - AS.transpose(1, 2) @ torch.cholesky_solve(AS, L)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(-1)
        log_w = torch.log(self.weights) - 0.5 * ((resid * sol).sum(-1) + logdet
                                                 + m * math.log(2 * math.pi))
        if sigma_y > 0:
            offset, basis = torch.zeros(self.dim, dtype=torch.float64), None
        else:
            offset = A.T @ torch.linalg.solve(A @ A.T, y)  # A^+ y (full row rank)
            basis = _null_basis(A)
            means = (means - offset) @ basis
            covs = basis.T @ covs @ basis
        covs = 0.5 * (covs + covs.transpose(1, 2))
        post = GaussianMixture(means, covs, torch.softmax(log_w, 0), labels=self.labels)
        return LinearPosterior(post, offset, basis, self.shape, A, y, sigma_y,
                               float(torch.logsumexp(log_w, 0)))

    def _coefs(self, sde: SDE | None, t: Tensor | float | None, x: Tensor) -> tuple[Tensor, Tensor]:
        if sde is None:
            one = torch.ones((), dtype=torch.float64, device=x.device)
            return one, torch.zeros_like(one)
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        return sde.marginal_params(t)

    def _log_joint(self, x: Tensor, sde: SDE | None, t: Tensor | float | None) -> Tensor:
        """``log w_k + log N(x; mean_k, C_k)`` at time ``t``: ``(B, K)``."""
        if sde is not None and not _scalar(sde):
            return self._kernel_terms(x, sde, t)[1]
        alpha, sigma = self._coefs(sde, t, x)
        return self._per_component(x, alpha, sigma)[2]

    def _kernel_terms(self, x: Tensor, sde: SDE, t: Tensor | float
                      ) -> tuple[Tensor, Tensor, Tensor]:
        """The dense path (module docstring) for any linear Gaussian kernel, one group of
        samples per distinct time: ``C_k^{-1} (x - A mu_k)`` ``(B, K, S)``, the log-joint
        ``(B, K)`` and ``E[x0 | x, k]`` ``(B, K, D)`` (float64)."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        S = math.prod(sde.state_shape(self.shape))
        if xf.shape[1] != S:
            raise ValueError(f"x has {xf.shape[1]} values per sample; states of the mixture under "
                             f"{sde.name} have {S}")
        t = torch.as_tensor(t, dtype=torch.float64).cpu()
        times = t.reshape(1) if t.ndim == 0 else torch.unique(t)
        B, K = xf.shape[0], self.n_components
        out = (xf.new_empty(B, K, S), xf.new_empty(B, K), xf.new_empty(B, K, self.dim))
        cov = self.covariances().to(xf.device)
        means = self.means.to(xf.device)
        for tt in times:
            A, C = (m.to(xf.device) for m in sde.kernel_matrices(tt, self.shape))
            Ck = A @ cov @ A.T + C  # (K, S, S)
            L = torch.linalg.cholesky(0.5 * (Ck + Ck.transpose(1, 2)))
            c_inv = torch.cholesky_inverse(L)
            logdet = 2 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(-1)
            rows = slice(None) if len(times) == 1 else (t == tt).nonzero().squeeze(1).to(
                xf.device)
            resid = xf[rows][:, None, :] - (means @ A.T)[None]  # (b, K, S)
            sol = torch.einsum("kst,bkt->bks", c_inv, resid)
            out[0][rows] = sol
            out[1][rows] = torch.log(self.weights.to(xf.device)) - 0.5 * (
                (resid * sol).sum(-1) + logdet + S * math.log(2 * math.pi))
            out[2][rows] = means[None] + torch.einsum("kds,bks->bkd", cov @ A.T, sol)
        return out

    def log_prob(
        self, x: Tensor, sde: SDE | None = None, t: Tensor | float | None = None
    ) -> Tensor:
        """``log p_t(x)`` under ``sde`` at ``t`` (data density if ``sde`` is None): ``(B,)``."""
        return torch.logsumexp(self._log_joint(x, sde, t), dim=1).to(x.dtype)

    def responsibilities(
        self, x: Tensor, sde: SDE | None = None, t: Tensor | float | None = None
    ) -> Tensor:
        """``p(k | x_t = x)``: ``(B, K)``."""
        return torch.softmax(self._log_joint(x, sde, t), dim=1)

    def denoise(self, x: Tensor, sde: SDE, t: Tensor | float, cond: Tensor | None = None
                ) -> Prediction:
        """Exact ``(E[x0 | x_t = x], E[eps | x_t = x])`` at time ``t`` (scalar or ``(B,)``);
        given labels ``cond: (B,)``, the class-conditional ones. ``x`` is a state of ``sde``;
        ``x0`` has the data's shape, ``eps`` the state's."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if not _scalar(sde):
            _, log_joint, x0_k = self._kernel_terms(x, sde, t)
            r = torch.softmax(self._class_mask(cond, log_joint), dim=1)
            x0 = torch.einsum("bk,bkd->bd", r, x0_k).reshape(x.shape[0], *self.shape)
            eps = sde.eps_from_x0(x.to(torch.float64), t, x0)
            return Prediction(x0.to(x.dtype), eps.to(x.dtype))
        alpha, sigma = sde.marginal_params(t)
        y, var, log_joint = self._per_component(x, alpha, sigma)
        log_joint = self._class_mask(cond, log_joint)
        r = torch.softmax(log_joint, dim=1)  # (B, K)
        a = _shared(alpha, sigma)[0]
        # E_k[x0 | x] = mu_k + U_k (alpha s_k / var) * y, summed over k with weights r_k
        gain = (r[:, :, None] * a * self.evals[None] / var * y).flatten(1)
        x0 = r @ self.means + gain @ self._rotations()[1]
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        eps = (xf - bcast(alpha.to(torch.float64), xf) * x0) / bcast(sigma.to(torch.float64), xf)
        return Prediction(x0.reshape(x.shape).to(x.dtype), eps.reshape(x.shape).to(x.dtype))

    def score(self, x: Tensor, sde: SDE, t: Tensor | float, cond: Tensor | None = None
              ) -> Tensor:
        """Exact ``grad_x log p_t(x) = -sum_k r_k C_k^{-1} (x - alpha mu_k)`` (given labels
        ``cond``: ``grad_x log p_t(x | y)``)."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if not _scalar(sde):
            solved, log_joint, _ = self._kernel_terms(x, sde, t)
            r = torch.softmax(self._class_mask(cond, log_joint), dim=1)
            return -torch.einsum("bk,bks->bs", r, solved).reshape(x.shape).to(x.dtype)
        alpha, sigma = sde.marginal_params(t)
        y, var, log_joint = self._per_component(x, alpha, sigma)
        log_joint = self._class_mask(cond, log_joint)
        r = torch.softmax(log_joint, dim=1)
        s = -(r[:, :, None] * y / var).flatten(1) @ self._rotations()[1]
        return s.reshape(x.shape).to(x.dtype)

    def entropy(self, n: int = 200_000, generator: torch.Generator | None = None) -> float:
        """Monte-Carlo differential entropy ``-E[log p(x0)]`` in nats (std error ~ 1/sqrt(n))."""
        return float(-self.log_prob(self.sample(n, generator)).mean())

    def model(self, sde: SDE, prediction: str = "eps") -> OracleModel:
        """The exact model under ``sde`` with the sampler interface, predicting ``prediction``."""
        return OracleModel(self, sde, prediction)


def _shared(alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """``alpha``, ``sigma`` as float64 ``(B, 1, 1)``, or ``(1, 1, 1)`` when every row shares
    one time (the variances are then computed once, not once per row)."""
    a = alpha.to(torch.float64).reshape(-1, 1, 1)
    s = sigma.to(torch.float64).reshape(-1, 1, 1)
    if a.shape[0] > 1 and bool((a == a[0]).all()) and bool((s == s[0]).all()):
        a, s = a[:1], s[:1]
    return a, s


def _null_basis(A: Tensor) -> Tensor:
    """An orthonormal basis ``(D, D - m)`` of the null space of a full-row-rank ``A: (m, D)``:
    the unselected coordinates when ``A`` selects coordinates, else from the SVD."""
    selects = ((A == 0) | (A == 1)).all() and (A.sum(1) == 1).all() and (A.sum(0) <= 1).all()
    if selects:
        return torch.eye(A.shape[1], dtype=torch.float64)[:, A.sum(0) == 0]
    return torch.linalg.svd(A, full_matrices=True)[2][A.shape[0]:].T.contiguous()


class LinearPosterior:
    """The exact posterior of a :class:`GaussianMixture` given ``y = A x + sigma_y n``.

    Points are ``x = offset + basis z`` (``basis: (D, d)`` orthonormal; ``None`` means the
    identity, ``sigma_y > 0``), and ``z`` follows :attr:`mixture`: the component posteriors
    with the reweighted weights. For ``sigma_y = 0``, ``offset = A^+ y`` and ``basis`` spans
    the null space of ``A``, so :meth:`log_prob` is the density on the affine set ``{A x =
    y}``; :meth:`coords` projects any ``x`` onto it (:meth:`residual` says how far off it
    was). ``log_evidence`` is ``log p(y)``.
    """

    def __init__(self, mixture: GaussianMixture, offset: Tensor, basis: Tensor | None,
                 shape: tuple[int, ...], A: Tensor, y: Tensor, sigma_y: float,
                 log_evidence: float) -> None:
        self.mixture, self.offset, self.basis, self.shape = mixture, offset, basis, shape
        self.A, self.y, self.sigma_y, self.log_evidence = A, y, sigma_y, log_evidence

    @property
    def weights(self) -> Tensor:
        """Posterior component weights ``p(k | y)``: ``(K,)``."""
        return self.mixture.weights

    def coords(self, x: Tensor) -> Tensor:
        """``z = basis^T (x - offset)``: ``(N, d)`` float64."""
        xf = torch.as_tensor(x).reshape(len(x), -1).to(torch.float64) - self.offset
        return xf if self.basis is None else xf @ self.basis

    def embed(self, z: Tensor) -> Tensor:
        """``x = offset + basis z``: ``(N, *shape)``."""
        x = z if self.basis is None else z @ self.basis.T
        return (x + self.offset).reshape(len(z), *self.shape)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact posterior samples ``(n, *shape)`` (float64)."""
        return self.embed(self.mixture.sample(n, generator))

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x | y)`` of :meth:`coords` (on the affine set when ``sigma_y = 0``): ``(N,)``."""
        return self.mixture.log_prob(self.coords(x))

    def residual(self, x: Tensor) -> Tensor:
        """``||A x - y||`` per sample: ``(N,)``."""
        xf = torch.as_tensor(x).reshape(len(x), -1).to(torch.float64)
        return (xf @ self.A.T - self.y).norm(dim=1)

    def mean(self) -> Tensor:
        """``E[x | y]``: ``(D,)``."""
        return self.embed((self.weights @ self.mixture.means)[None]).reshape(-1)

    def covariance(self) -> Tensor:
        """``Cov[x | y]``: ``(D, D)`` (singular when ``sigma_y = 0``)."""
        mix = self.mixture
        mu = self.weights @ mix.means
        d = mix.means - mu
        cz = torch.einsum("k,kij->ij", self.weights, mix.covariances() + d[:, :, None] * d[:, None])
        return cz if self.basis is None else self.basis @ cz @ self.basis.T


class OracleModel:
    """A :class:`GaussianMixture`'s exact prediction under one SDE (the sampler interface).

    Class-conditional: ``model(x, t, cond=labels)`` is the exact prediction of ``p(x | y)``;
    label ``num_classes`` (the null label) is the unconditional mixture.
    """

    def __init__(self, mixture: GaussianMixture, sde: SDE, prediction: str = "eps") -> None:
        self.mixture = mixture
        self.sde = sde
        self.prediction = check_prediction(prediction)
        self.num_classes = mixture.num_classes

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        pair = self.mixture.denoise(x, self.sde, t, cond)
        return output_from_pair(pair, self.prediction, x, t, self.sde)

    def __repr__(self) -> str:
        return f"OracleModel({self.mixture.n_components} components, {self.sde!r})"


def _scalar(sde: SDE) -> bool:
    """Whether ``sde`` has the scalar kernel (an object that only gives ``marginal_params``,
    e.g. the EDM scale of :mod:`scoregen.evaluation.reference`, has)."""
    return SCALAR_KERNEL in getattr(sde, "capabilities", (SCALAR_KERNEL,))


# -- presets -------------------------------------------------------------------------------------
PRESETS: Registry[Callable[..., GaussianMixture]] = Registry("mixture preset")


@PRESETS.register("ring8")
def ring8(radius: float = 1.0, std: float = 0.1) -> GaussianMixture:
    """Eight isotropic Gaussians evenly spaced on a circle in 2-D (std 0.1 at radius 1)."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return GaussianMixture(means, std**2)


def random_mixture(dim: int, components: int = 8, seed: int = 0,
                   shape: tuple[int, ...] | None = None) -> GaussianMixture:
    """A reproducible mixture in ``dim`` dimensions with full, anisotropic covariances.

    Means uniform in ``[-1, 1]^dim``; covariances ``U diag(s) U^T`` with a random rotation
    and variances log-uniform in ``[0.002, 0.05]``; Dirichlet(2) weights.
    """
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(components, dim, generator=g, dtype=torch.float64) * 2 - 1
    q, _ = torch.linalg.qr(torch.randn(components, dim, dim, generator=g, dtype=torch.float64))
    logs = torch.empty(components, dim, dtype=torch.float64).uniform_(
        math.log(0.002), math.log(0.05), generator=g)
    covs = q @ torch.diag_embed(logs.exp()) @ q.transpose(1, 2)
    covs = 0.5 * (covs + covs.transpose(1, 2))
    u = torch.rand(2, components, generator=g, dtype=torch.float64)
    w = -torch.log(u).sum(0)  # Gamma(2, 1) draws -> Dirichlet(2) after normalising
    return GaussianMixture(means, covs, w, shape)


@PRESETS.register("mix16")
def mix16() -> GaussianMixture:
    """16-D mixture of 8 anisotropic Gaussians (:func:`random_mixture`, seed 0)."""
    return random_mixture(16, 8, seed=0)


@PRESETS.register("mix64")
def mix64() -> GaussianMixture:
    """64-D mixture of 8 anisotropic Gaussians (:func:`random_mixture`, seed 0)."""
    return random_mixture(64, 8, seed=0)


@PRESETS.register("mix8x8")
def mix8x8() -> GaussianMixture:
    """mix64 laid out as 1x8x8 images (for processes on images, e.g. blurring diffusion)."""
    return random_mixture(64, 8, seed=0, shape=(1, 8, 8))


def preset(name: str, classes: int | None = None, **kwargs: object) -> GaussianMixture:
    """A named preset mixture (``PRESETS.list()`` gives the names); ``classes``: component
    ``k`` is class ``k mod classes`` (default: each component its own class), see
    :meth:`GaussianMixture.with_classes`. On the command line: ``ring8:classes=2``."""
    mixture = PRESETS.get(name)(**kwargs)
    return mixture if classes is None else mixture.with_classes(classes)


def from_spec(spec: str | GaussianMixture) -> GaussianMixture:
    """A preset from ``NAME[:KEY=VALUE,...]`` (:mod:`scoregen.infra.spec`), e.g.
    ``ring8:classes=2`` or ``ring8:std=0.05``; a mixture is returned as is. ``classes`` is
    every preset's parameter (:func:`preset`); the others are the preset's own."""
    if isinstance(spec, GaussianMixture):
        return spec
    example = "ring8:classes=2"
    name, params = parse_spec(spec, "mixture preset", example)
    factory = PRESETS.get(name)
    check_params(factory, params, f"mixture preset {name!r}", example, extra=("classes",))
    classes = params.pop("classes", None)
    try:
        return preset(name, classes, **params)
    except (TypeError, ValueError) as err:
        raise ValueError(f"mixture preset {spec!r}: {err}") from None
