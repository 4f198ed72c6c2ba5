"""The exact Gaussian-mixture oracle: densities, scores and predictions under every SDE."""

from __future__ import annotations

import math

import pytest
import torch

import scoregen.sde as sdes
from scoregen.models.analytic import PRESETS, GaussianMixture, preset, random_mixture
from scoregen.models.prediction import PREDICTIONS, to_x0_eps

ALL = sdes.list()
SCALAR = [n for n in ALL if "scalar_kernel" in sdes.get(n).capabilities]


def small_full_mixture(sde=None) -> GaussianMixture:
    """3 components with full covariances, 4 values a sample: flat, or a 1x2x2 image for a
    process on images."""
    shape = (4,)
    if sde is not None:
        try:
            sde.state_shape(shape)
        except ValueError:
            shape = (1, 2, 2)
    return random_mixture(dim=4, components=3, seed=1, shape=shape)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("frac", [0.05, 0.5, 0.95])
def test_score_is_gradient_of_log_density(name: str, frac: float) -> None:
    """The oracle's score against autograd of its closed-form density, for every kernel (the
    scalar one by rotation, the others by the dense mixture of the kernel's matrices)."""
    sde = sdes.get(name)
    mix = small_full_mixture(sde)
    t = torch.tensor(frac * sde.T, dtype=torch.float64)
    x = mix.sample_t(16, sde, float(t), torch.Generator().manual_seed(0)).requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob(x, sde, t).sum(), x)
    torch.testing.assert_close(mix.score(x.detach(), sde, t), grad, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_pair_is_consistent_with_the_kernel_and_the_score(name: str) -> None:
    """For every kernel: ``x = perturb(x0_hat, t, eps_hat)`` (the posterior means are linear),
    ``score = score_from_eps(eps_hat)``, and every prediction type the process takes converts
    back to the same pair; the dense path agrees with the rotated one on scalar kernels."""
    from scoregen.models.prediction import pair_from_output

    sde = sdes.get(name)
    mix = small_full_mixture(sde)
    t = torch.linspace(sde.t_min, sde.T, 8, dtype=torch.float64)
    x = mix.sample_t(8, sde, 0.3 * sde.T, torch.Generator().manual_seed(2))
    x0, eps = mix.denoise(x, sde, t)
    torch.testing.assert_close(sde.perturb(x0, t, eps), x)
    torch.testing.assert_close(sde.score_from_eps(eps, t), mix.score(x, sde, t))
    kinds = PREDICTIONS if "scalar_kernel" in sde.capabilities else ("eps", "x0", "score")
    for kind in kinds:
        pair = pair_from_output(mix.model(sde, kind)(x, t), kind, x, t, sde)
        torch.testing.assert_close(pair.eps, eps, rtol=1e-6, atol=1e-8)
        if kind != "score":
            torch.testing.assert_close(pair.x0, x0, rtol=1e-6, atol=1e-8)
    if "scalar_kernel" in sde.capabilities:
        solved, log_joint, _ = mix._kernel_terms(x, sde, t)
        torch.testing.assert_close(torch.logsumexp(log_joint, 1), mix.log_prob(x, sde, t))
        torch.testing.assert_close(-torch.einsum("bk,bks->bs", torch.softmax(log_joint, 1),
                                                 solved), mix.score(x, sde, t).flatten(1))


@pytest.mark.parametrize("name", ["cld", "blur"])
def test_posterior_mean_by_monte_carlo_on_other_kernels(name: str) -> None:
    """E[x0 | x_t] of the dense path equals a self-normalised importance estimate over exact
    data samples weighted by the kernel's density."""
    sde = sdes.get(name)
    mix = small_full_mixture(sde)
    t = torch.tensor(0.3, dtype=torch.float64)
    x = mix.sample_t(1, sde, 0.3, torch.Generator().manual_seed(3))
    x0s = mix.sample(200_000, torch.Generator().manual_seed(4))
    A, C = sde.kernel_matrices(t, mix.shape)
    resid = x.reshape(1, -1) - x0s.reshape(len(x0s), -1) @ A.T
    logw = -0.5 * (resid * torch.linalg.solve(C, resid.T).T).sum(1)
    w = torch.softmax(logw, 0)
    ess = 1 / (w**2).sum()
    assert ess > 500
    mc = (w[:, None] * x0s.reshape(len(x0s), -1)).sum(0)
    spread = x0s.reshape(len(x0s), -1).std(0)
    torch.testing.assert_close(mix.denoise(x, sde, t).x0.reshape(-1), mc,
                               atol=float(4 * spread.max() / ess.sqrt()), rtol=0)


@pytest.mark.parametrize("name", SCALAR)
def test_predictions_are_mutually_consistent(name: str) -> None:
    """x = alpha x0_hat + sigma eps_hat, score = -eps_hat / sigma, and each declared
    prediction type converts back to the same pair."""
    sde = sdes.get(name)
    mix = small_full_mixture()
    t = torch.linspace(sde.t_min, sde.T, 8, dtype=torch.float64)
    x = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x0, eps = mix.denoise(x, sde, t)
    a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    torch.testing.assert_close(a * x0 + s * eps, x)
    torch.testing.assert_close(-eps / s, mix.score(x, sde, t))
    for kind in PREDICTIONS:
        out = mix.model(sde, kind)(x, t)
        pair = to_x0_eps(out, kind, x, sde.alpha(t), sde.sigma(t))
        torch.testing.assert_close(pair.eps, eps, rtol=1e-6, atol=1e-8)
        if kind != "score":  # x0 from the score divides by alpha: ill-conditioned near T
            torch.testing.assert_close(pair.x0, x0, rtol=1e-6, atol=1e-8)


def test_posterior_mean_by_monte_carlo() -> None:
    """E[x0 | x_t] of the oracle equals a self-normalised importance estimate."""
    sde = sdes.get("vp")
    mix = preset("ring8")
    t = torch.tensor(0.4, dtype=torch.float64)
    x = torch.tensor([[0.3, 0.2]], dtype=torch.float64)
    x0s = mix.sample(400_000, torch.Generator().manual_seed(3))
    a, s = sde.alpha(t), sde.sigma(t)
    logw = -0.5 * ((x - a * x0s) ** 2).sum(1) / s**2
    w = torch.softmax(logw, 0)
    mc = (w[:, None] * x0s).sum(0)
    ess = 1 / (w**2).sum()
    assert ess > 1000
    torch.testing.assert_close(mix.denoise(x, sde, t).x0[0], mc, atol=4 / math.sqrt(ess), rtol=0)


@pytest.mark.parametrize("name", ["vp", "ve", "subvp"])
def test_perturbed_density_integrates_to_one(name: str) -> None:
    sde = sdes.get(name)
    mix = preset("ring8")
    t = torch.tensor(0.3 * sde.T, dtype=torch.float64)
    half = 4 * float(sde.alpha(t) + sde.sigma(t)) + 1.5
    n = 401
    g = torch.linspace(-half, half, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    p = mix.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1), sde, t).exp()
    cell = (g[1] - g[0]) ** 2
    assert abs(float(p.sum() * cell) - 1) < 2e-3


def test_data_samples_match_moments() -> None:
    mix = small_full_mixture()
    x, k = mix.sample(200_000, torch.Generator().manual_seed(4), return_labels=True)
    freq = torch.bincount(k, minlength=3).double() / len(k)
    torch.testing.assert_close(freq, mix.weights, atol=5e-3, rtol=0)
    mean = (mix.weights[:, None] * mix.means).sum(0)
    torch.testing.assert_close(x.mean(0), mean, atol=5e-3, rtol=0)
    sel = x[k == 0]
    torch.testing.assert_close(torch.cov(sel.T), mix.covariances()[0], atol=3e-3, rtol=0)


def test_sample_t_matches_perturbed_density() -> None:
    """Exact x_t samples have the mean log-density of the perturbed mixture (its -entropy)."""
    sde = sdes.get("ve")
    mix = preset("ring8")
    g = torch.Generator().manual_seed(5)
    a = mix.sample_t(20_000, sde, 0.3, g)
    b = mix.sample_t(20_000, sde, 0.3, g)
    la, lb = mix.log_prob(a, sde, 0.3), mix.log_prob(b, sde, 0.3)
    se = float(la.std()) * math.sqrt(2 / 20_000)
    assert abs(float(la.mean() - lb.mean())) < 4 * se
    assert mix.log_prob(a + 0.5, sde, 0.3).mean() < la.mean() - 10 * se


def test_entropy_of_single_gaussian() -> None:
    mix = GaussianMixture(torch.zeros(1, 2), torch.tensor([[0.5, 2.0]]))
    closed = 0.5 * math.log((2 * math.pi * math.e) ** 2 * 0.5 * 2.0)
    assert abs(mix.entropy(100_000, torch.Generator().manual_seed(0)) - closed) < 0.02


def test_image_shaped_mixture() -> None:
    mix = GaussianMixture(torch.zeros(2, 16), 0.1, shape=(1, 4, 4))
    x = mix.sample(5)
    assert x.shape == (5, 1, 4, 4)
    sde = sdes.get("vp")
    out = mix.model(sde)(x.float(), torch.full((5,), 0.5))
    assert out.shape == x.shape and out.dtype == torch.float32


def test_presets() -> None:
    assert {"ring8", "mix16", "mix64", "mix8x8"} <= set(PRESETS.list())
    torch.testing.assert_close(preset("mix8x8").means, preset("mix64").means)
    assert preset("mix8x8").sample(2).shape == (2, 1, 8, 8)
    assert preset("ring8").dim == 2 and preset("mix16").dim == 16 and preset("mix64").dim == 64
    with pytest.raises(KeyError, match="known mixture presets"):
        preset("ring9")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"means": torch.zeros(3), "covs": 1.0}, r"means must have shape \(K, D\)"),
        ({"means": torch.zeros(2, 2), "covs": torch.ones(3, 2)}, "covs must be"),
        ({"means": torch.zeros(2, 2), "covs": -torch.ones(2, 2)}, "positive definite"),
        ({"means": torch.zeros(2, 2), "covs": 1.0, "weights": torch.tensor([1.0, -1.0])},
         "weights must be"),
        ({"means": torch.zeros(2, 4), "covs": 1.0, "shape": (3,)}, "does not hold"),
    ],
)
def test_bad_mixture_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)


def test_wrong_dimension_input() -> None:
    with pytest.raises(ValueError, match="values per sample"):
        preset("ring8").log_prob(torch.zeros(3, 5))
