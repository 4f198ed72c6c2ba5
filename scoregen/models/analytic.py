"""Gaussian mixtures with exact perturbed densities and scores under any SDE: the oracle.

Data ``x0 ~ sum_k w_k N(mu_k, Sigma_k)`` pushed through ``x_t = alpha x0 + sigma eps`` stays
a mixture (Karras et al. 2022, app. B.1 for the isotropic case)::

    p_t(x) = sum_k w_k N(x; alpha mu_k, C_k),        C_k = alpha^2 Sigma_k + sigma^2 I.

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

Known coordinates. Given the coordinates ``x_K = v`` of a data sample, the rest is again a
mixture (:meth:`GaussianMixture.condition`): component ``k`` becomes
``N(mu_U + S_UK S_KK^{-1} (v - mu_K), S_UU - S_UK S_KK^{-1} S_KU)`` with weight
``∝ w_k N(v; mu_K, S_KK)`` (Bishop 2006, sec. 2.3.1): the exact reference for inpainting.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor

from scoregen.infra.registry import Registry
from scoregen.infra.shape import bcast
from scoregen.infra.spec import check_params, parse_spec
from scoregen.models.prediction import Prediction, check_prediction, from_x0_eps
from scoregen.sde.base import SDE


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
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        return sde.marginal(x0, torch.tensor(float(t), dtype=torch.float64), eps)

    # -- exact quantities at time t ----------------------------------------------------------------
    def _per_component(
        self, x: Tensor, alpha: Tensor, sigma: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated residuals ``y = U^T (x - alpha mu)``, variances and log-joint ``(B, K)``."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        if xf.shape[1] != self.dim:
            raise ValueError(f"x has {xf.shape[1]} values per sample; the mixture has {self.dim}")
        a = alpha.to(torch.float64).reshape(-1, 1, 1)
        s = sigma.to(torch.float64).reshape(-1, 1, 1)
        resid = xf[:, None, :] - a * self.means[None]  # (B, K, D)
        y = torch.einsum("kji,bkj->bki", self.evecs, resid)
        var = a**2 * self.evals[None] + s**2
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
        alpha, sigma = self._coefs(sde, t, x)
        *_, log_joint = self._per_component(x, alpha, sigma)
        log_r = torch.log_softmax(log_joint, dim=1)
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
        their flat order) with component weights updated by the evidence.
        """
        m = torch.as_tensor(mask, dtype=torch.bool).reshape(-1)
        v = torch.as_tensor(known, dtype=torch.float64).reshape(-1)
        if m.shape != (self.dim,) or v.shape != (self.dim,):
            raise ValueError(f"known and mask must hold {self.dim} values, got "
                             f"{tuple(v.shape)} and {tuple(m.shape)}")
        if m.all() or not m.any():
            raise ValueError("mask must mark some but not all coordinates as known")
        S = self.covariances()
        S_kk, S_uk, S_uu = S[:, m][:, :, m], S[:, ~m][:, :, m], S[:, ~m][:, :, ~m]
        resid = v[m][None] - self.means[:, m]  # (K, Dk)
        sol = torch.linalg.solve(S_kk, resid[..., None])[..., 0]
        means = self.means[:, ~m] + torch.einsum("kuj,kj->ku", S_uk, sol)
        covs = S_uu - S_uk @ torch.linalg.solve(S_kk, S_uk.transpose(1, 2))
        covs = 0.5 * (covs + covs.transpose(1, 2))
        logdet = torch.linalg.slogdet(S_kk)[1]
        log_w = torch.log(self.weights) - 0.5 * ((resid * sol).sum(-1) + logdet)
        return GaussianMixture(means, covs, torch.softmax(log_w, 0), labels=self.labels)

    def _coefs(self, sde: SDE | None, t: Tensor | float | None, x: Tensor) -> tuple[Tensor, Tensor]:
        if sde is None:
            one = torch.ones((), dtype=torch.float64, device=x.device)
            return one, torch.zeros_like(one)
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        return sde.marginal_params(t)

    def log_prob(
        self, x: Tensor, sde: SDE | None = None, t: Tensor | float | None = None
    ) -> Tensor:
        """``log p_t(x)`` under ``sde`` at ``t`` (data density if ``sde`` is None): ``(B,)``."""
        alpha, sigma = self._coefs(sde, t, x)
        *_, log_joint = self._per_component(x, alpha, sigma)
        return torch.logsumexp(log_joint, dim=1).to(x.dtype)

    def responsibilities(
        self, x: Tensor, sde: SDE | None = None, t: Tensor | float | None = None
    ) -> Tensor:
        """``p(k | x_t = x)``: ``(B, K)``."""
        alpha, sigma = self._coefs(sde, t, x)
        *_, log_joint = self._per_component(x, alpha, sigma)
        return torch.softmax(log_joint, dim=1)

    def denoise(self, x: Tensor, sde: SDE, t: Tensor | float, cond: Tensor | None = None
                ) -> Prediction:
        """Exact ``(E[x0 | x_t = x], E[eps | x_t = x])`` at time ``t`` (scalar or ``(B,)``);
        given labels ``cond: (B,)``, the class-conditional ones."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        alpha, sigma = sde.marginal_params(t)
        y, var, log_joint = self._per_component(x, alpha, sigma)
        log_joint = self._class_mask(cond, log_joint)
        r = torch.softmax(log_joint, dim=1)  # (B, K)
        a = alpha.to(torch.float64).reshape(-1, 1, 1)
        # E_k[x0 | x] = mu_k + U_k (alpha s_k / var) * y
        gain = torch.einsum("kij,bkj->bki", self.evecs, a * self.evals[None] / var * y)
        x0 = torch.einsum("bk,bki->bi", r, self.means[None] + gain)
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        eps = (xf - bcast(alpha.to(torch.float64), xf) * x0) / bcast(sigma.to(torch.float64), xf)
        return Prediction(x0.reshape(x.shape).to(x.dtype), eps.reshape(x.shape).to(x.dtype))

    def score(self, x: Tensor, sde: SDE, t: Tensor | float, cond: Tensor | None = None
              ) -> Tensor:
        """Exact ``grad_x log p_t(x) = -sum_k r_k C_k^{-1} (x - alpha mu_k)`` (given labels
        ``cond``: ``grad_x log p_t(x | y)``)."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        alpha, sigma = sde.marginal_params(t)
        y, var, log_joint = self._per_component(x, alpha, sigma)
        log_joint = self._class_mask(cond, log_joint)
        r = torch.softmax(log_joint, dim=1)
        s = -torch.einsum("bk,kij,bkj->bi", r, self.evecs, y / var)
        return s.reshape(x.shape).to(x.dtype)

    def entropy(self, n: int = 200_000, generator: torch.Generator | None = None) -> float:
        """Monte-Carlo differential entropy ``-E[log p(x0)]`` in nats (std error ~ 1/sqrt(n))."""
        return float(-self.log_prob(self.sample(n, generator)).mean())

    def model(self, sde: SDE, prediction: str = "eps") -> OracleModel:
        """The exact model under ``sde`` with the sampler interface, predicting ``prediction``."""
        return OracleModel(self, sde, prediction)


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
        t64 = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        out = from_x0_eps(pair, self.prediction, self.sde.alpha(t64).to(x.dtype),
                          self.sde.sigma(t64).to(x.dtype))
        return out

    def __repr__(self) -> str:
        return f"OracleModel({self.mixture.n_components} components, {self.sde!r})"


# -- presets -------------------------------------------------------------------------------------
PRESETS: Registry[Callable[..., GaussianMixture]] = Registry("mixture preset")


@PRESETS.register("ring8")
def ring8(radius: float = 1.0, std: float = 0.1) -> GaussianMixture:
    """Eight isotropic Gaussians evenly spaced on a circle in 2-D (std 0.1 at radius 1)."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return GaussianMixture(means, std**2)


def random_mixture(dim: int, components: int = 8, seed: int = 0) -> GaussianMixture:
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
    return GaussianMixture(means, covs, w)


@PRESETS.register("mix16")
def mix16() -> GaussianMixture:
    """16-D mixture of 8 anisotropic Gaussians (:func:`random_mixture`, seed 0)."""
    return random_mixture(16, 8, seed=0)


@PRESETS.register("mix64")
def mix64() -> GaussianMixture:
    """64-D mixture of 8 anisotropic Gaussians (:func:`random_mixture`, seed 0)."""
    return random_mixture(64, 8, seed=0)


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
