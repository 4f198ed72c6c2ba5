"""Probability-flow ODE likelihoods against closed-form densities of Gaussian mixtures."""

from __future__ import annotations

import math

import pytest
import torch

import scoregen.sde as sdes
from scoregen.evaluation.likelihood import log_likelihood
from scoregen.models.analytic import GaussianMixture, preset, random_mixture


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", ["vp", "ve", "linear"])
def test_ode_likelihood_matches_mixture_density(name: str) -> None:
    """log p_{t_min}(x) of ring8 points: with the exact p_T at T the only error is the ODE
    solver's (1e-5 at rtol = atol = 1e-8); with the SDE's Gaussian prior and the default
    tolerances it stays within 5e-3 nats."""
    sde = sdes.get(name)
    mix = preset("ring8")
    x = mix.sample_t(12, sde, sde.t_min, gen(0))
    exact = mix.log_prob(x, sde, sde.t_min)
    model = mix.model(sde)
    tight = log_likelihood(model, sde, x, rtol=1e-8, atol=1e-8,
                           prior_logp=lambda z: mix.log_prob(z, sde, sde.T))
    torch.testing.assert_close(tight.logp, exact, rtol=0, atol=1e-5)
    default = log_likelihood(model, sde, x)
    torch.testing.assert_close(default.logp, exact, rtol=0, atol=5e-3)
    assert default.bpd is None and default.nfe > 10


def test_single_gaussian_flow_is_closed_form() -> None:
    """Data N(m, diag(s^2)): the PF-ODE map is affine per dimension,
    x_T = alpha_T m + sqrt(C_T / C_0) (x - alpha_0 m) with C_t = alpha_t^2 s^2 + sigma_t^2,
    and int div = 0.5 sum log(C_T / C_0). Image-shaped data (1, 2, 2)."""
    sde = sdes.get("vp")
    m = torch.tensor([[0.5, -0.3, 0.0, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[0.04, 0.2, 1.0, 0.5]], dtype=torch.float64)
    mix = GaussianMixture(m, s2, shape=(1, 2, 2))
    x = mix.sample_t(8, sde, sde.t_min, gen(1))
    t0, T = (torch.tensor(v, dtype=torch.float64) for v in (sde.t_min, sde.T))
    c0 = sde.alpha(t0) ** 2 * s2 + sde.sigma(t0) ** 2
    cT = sde.alpha(T) ** 2 * s2 + sde.sigma(T) ** 2
    flat = x.reshape(8, 4)
    x_T = sde.alpha(T) * m + (cT / c0).sqrt() * (flat - sde.alpha(t0) * m)
    res = log_likelihood(mix.model(sde), sde, x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(res.x_T.reshape(8, 4), x_T, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.delta_logp, (0.5 * (cT / c0).log().sum()).expand(8),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(res.prior_logp, sde.prior_logp(res.x_T))
    torch.testing.assert_close(res.logp, res.prior_logp + res.delta_logp)


@pytest.mark.parametrize(("dim", "copies"), [(4, 400), (16, 160)])
@pytest.mark.parametrize("probes", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(dim: int, copies: int, probes: str) -> None:
    """Copies of one point, each with its own fixed probe, give independent Hutchinson
    estimates of the same integral: their mean is the exact-divergence result within
    four standard errors (and they do vary)."""
    sde = sdes.get("vp")
    mix = preset("mix16") if dim == 16 else random_mixture(dim, 3, seed=1)
    x = mix.sample_t(1, sde, sde.t_min, gen(2))
    model = mix.model(sde)
    exact = log_likelihood(model, sde, x, divergence="exact", rtol=1e-6, atol=1e-6).logp
    est = log_likelihood(model, sde, x.expand(copies, dim), divergence="hutchinson",
                         probes=probes, rtol=1e-6, atol=1e-6, seed=3).logp
    se = est.std() / math.sqrt(copies)
    assert se > 1e-3
    assert abs(est.mean() - exact[0]) < 4 * se


def test_more_probes_reduce_variance() -> None:
    sde = sdes.get("vp")
    mix = random_mixture(4, 3, seed=1)
    x = mix.sample_t(1, sde, sde.t_min, gen(4)).expand(100, 4)
    one, four = (log_likelihood(mix.model(sde), sde, x, divergence="hutchinson",
                                n_probes=k).logp.std() for k in (1, 4))
    assert four < 0.7 * one  # ~ 1/sqrt(4) = 0.5 in expectation


def test_dequantized_bits_per_dim() -> None:
    """For a smooth density the discrete bin mass is ~ p(x_k) Delta^D, so
    bpd ~ -(log p(x_k) + D log Delta) / (D ln 2) with Delta = 2 / 255; the one-draw
    dequantization moves log p by at most sum_i |grad_i log p| Delta / 2."""
    sde = sdes.get("vp")
    d, levels = 4, 256
    mix = GaussianMixture(torch.zeros(1, d, dtype=torch.float64), 0.25)  # variance 0.25
    k = torch.randint(64, 192, (6, d), generator=gen(5))
    x = -1 + 2 * k.to(torch.float64) / (levels - 1)
    res = log_likelihood(mix.model(sde), sde, x, dequantize=levels, t_min=1e-5)
    delta = 2 / (levels - 1)
    expected = -(mix.log_prob(x) + d * math.log(delta)) / (d * math.log(2))
    jitter = (x.abs() + delta).sum(1) / 0.25 * delta / 2 / (d * math.log(2))
    assert ((res.bpd - expected).abs() < jitter + 1e-4).all()
    assert (res.bpd - expected).abs().max() > 0  # the dequantization noise is there
    torch.testing.assert_close(res.bpd, -(res.logp + d * math.log(delta)) / (d * math.log(2)))


def test_works_under_inference_mode_and_rejects_bad_options() -> None:
    sde = sdes.get("ve")
    mix = preset("ring8")
    x = mix.sample_t(4, sde, sde.t_min, gen(6))
    with torch.inference_mode():
        res = log_likelihood(mix.model(sde), sde, x)
    assert torch.isfinite(res.logp).all()
    with pytest.raises(ValueError, match="unknown divergence"):
        log_likelihood(mix.model(sde), sde, x, divergence="trace")
    with pytest.raises(ValueError, match="grey levels"):
        log_likelihood(mix.model(sde), sde, x, dequantize=1)
