"""Sample-quality metrics against closed forms and their estimator properties."""

from __future__ import annotations

import math

import pytest
import scipy.linalg
import torch

from scoregen.evaluation import metrics as M
from scoregen.models.analytic import GaussianMixture, preset


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def normal(n: int, mu: float, s: float, seed: int, d: int = 1) -> torch.Tensor:
    return mu + s * torch.randn(n, d, generator=gen(seed), dtype=torch.float64)


# -- identical sets ----------------------------------------------------------------------------
def test_identical_sets_give_zero() -> None:
    x = normal(400, 0.0, 1.0, 0, d=3)
    assert M.sliced_wasserstein(x, x) == 0.0
    assert M.energy_distance(x, x, unbiased=False) == pytest.approx(0.0, abs=1e-12)
    assert M.mmd_rbf(x, x, unbiased=False) == pytest.approx(0.0, abs=1e-12)
    # U-statistics of a set against itself are off by the left-out diagonal only: O(1/N)
    assert abs(M.mmd_rbf(x, x)) < 2 / len(x)
    assert abs(M.energy_distance(x, x)) < 2.01 * float(torch.pdist(x).mean()) / len(x)
    # the same empirical measure with repeated atoms (unequal sizes): still exactly 0
    assert M.sliced_wasserstein(x, x.repeat(3, 1)) == pytest.approx(0.0, abs=1e-12)


def test_unbiased_estimators_average_to_zero_and_biased_ones_do_not() -> None:
    """Over independent pairs from one distribution the U-statistics average to 0 within
    their standard error; the V-statistics are positive."""
    u_mmd, v_mmd, u_en = [], [], []
    for seed in range(12):
        x, y = normal(150, 0.0, 1.0, 2 * seed, 2), normal(150, 0.0, 1.0, 2 * seed + 1, 2)
        u_mmd.append(M.mmd_rbf(x, y, bandwidth=1.0))
        v_mmd.append(M.mmd_rbf(x, y, bandwidth=1.0, unbiased=False))
        u_en.append(M.energy_distance(x, y))
    for vals in (u_mmd, u_en):
        t = torch.tensor(vals)
        assert abs(t.mean()) < 4 * t.std() / math.sqrt(len(t))
    assert min(v_mmd) > 0 and sum(v_mmd) / len(v_mmd) > 4 * abs(sum(u_mmd) / len(u_mmd))


# -- sliced Wasserstein --------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "m", "mu2", "s2"), [(4000, 4000, 3.0, 1.0), (4000, 2500, 1.0, 2.0)])
def test_swd_in_1d_is_gaussian_w2(n: int, m: int, mu2: float, s2: float) -> None:
    """W2(N(mu1, s1^2), N(mu2, s2^2)) = sqrt((mu1 - mu2)^2 + (s1 - s2)^2)."""
    x, y = normal(n, 0.0, 1.0, 1), normal(m, mu2, s2, 2)
    exact = math.sqrt(mu2**2 + (1 - s2) ** 2)
    mc_err = math.sqrt(1 / n + s2**2 / m + (1 + s2**2) / min(n, m))  # mean and spread errors
    assert M.sliced_wasserstein(x, y) == pytest.approx(exact, abs=3 * mc_err)


def test_swd_unequal_sizes_is_exact_on_empirical_measures() -> None:
    """Shifting every atom by c moves the empirical measure by exactly c, any sizes."""
    x = normal(300, 0.0, 1.0, 3)
    assert M.sliced_wasserstein(x, x.repeat(2, 1) + 0.7) == pytest.approx(0.7, rel=1e-12)


def test_swd_of_a_shift_averages_projections() -> None:
    """y = x + v: each projection is shifted by theta.v, E[(theta.v)^2] = |v|^2 / D."""
    d = 5
    x = normal(200, 0.0, 1.0, 4, d)
    v = torch.tensor([1.0, -2.0, 0.5, 0.0, 1.5], dtype=torch.float64)
    sw = M.sliced_wasserstein(x, x + v, n_projections=2000)
    assert sw == pytest.approx(float(v.norm()) / math.sqrt(d), rel=0.05)
    assert M.sliced_wasserstein(x, x + v, seed=3) == M.sliced_wasserstein(x, x + v, seed=3)
    assert M.sliced_wasserstein(x, x + v, seed=3) != M.sliced_wasserstein(x, x + v, seed=4)


# -- MMD and energy --------------------------------------------------------------------------
def test_mmd_symmetric_and_biased_form_nonnegative() -> None:
    x, y = normal(300, 0.0, 1.0, 5, 2), normal(200, 0.1, 1.2, 6, 2)
    assert M.mmd_rbf(x, y) == pytest.approx(M.mmd_rbf(y, x), rel=1e-9, abs=1e-12)
    assert M.median_bandwidth(x, y) == M.median_bandwidth(y, x)
    for seed in range(5):
        a, b = normal(100, 0.0, 1.0, 10 + seed, 2), normal(80, 0.0, 1.0, 20 + seed, 2)
        assert M.mmd_rbf(a, b, unbiased=False) >= 0
        assert M.energy_distance(a, b, unbiased=False) >= 0
    far = normal(300, 3.0, 1.0, 7, 2)
    assert M.mmd_rbf(x, far) > 20 * abs(M.mmd_rbf(x, normal(300, 0.0, 1.0, 8, 2)))


def _mean_abs_normal(m: float, s: float) -> float:
    """E|Z| for Z ~ N(m, s^2)."""
    return s * math.sqrt(2 / math.pi) * math.exp(-(m**2) / (2 * s**2)) + m * math.erf(
        m / (s * math.sqrt(2)))


def test_energy_distance_closed_form_1d() -> None:
    """N(0,1) vs N(mu,1): 2 E|X-Y| - E|X-X'| - E|Y-Y'| with X-Y ~ N(-mu, 2)."""
    mu, n = 1.0, 3000
    exact = 2 * _mean_abs_normal(mu, math.sqrt(2)) - 2 * _mean_abs_normal(0.0, math.sqrt(2))
    value = M.energy_distance(normal(n, 0.0, 1.0, 9), normal(n, mu, 1.0, 10))
    assert value == pytest.approx(exact, abs=4 * 1.0 / math.sqrt(n))


# -- Frechet ---------------------------------------------------------------------------------
def test_frechet_gaussians_closed_forms() -> None:
    g = gen(11)
    mu1, mu2 = torch.randn(4, generator=g, dtype=torch.float64), torch.zeros(4,
                                                                            dtype=torch.float64)
    a, b = torch.rand(4, generator=g, dtype=torch.float64) + 0.1, torch.rand(
        4, generator=g, dtype=torch.float64) + 0.1
    diag = float((mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert M.frechet_gaussians(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(diag)
    # full covariances: scipy's sqrtm of S1 S2 as an independent reference
    q = torch.randn(4, 4, generator=g, dtype=torch.float64)
    s1, s2 = q @ q.T + 0.1 * torch.eye(4), torch.diag(b) + 0.3
    ref = (mu1 - mu2).pow(2).sum().item() + float(torch.trace(s1 + s2)) - 2 * float(
        scipy.linalg.sqrtm((s1 @ s2).numpy()).real.trace())
    assert M.frechet_gaussians(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)
    assert M.frechet_gaussians(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_samples_matches_closed_form() -> None:
    g = gen(12)
    n, d = 20000, 3
    q1 = torch.randn(d, d, generator=g, dtype=torch.float64)
    q2 = torch.randn(d, d, generator=g, dtype=torch.float64)
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.tensor([1.0, 0.0, -0.5],
                                                                  dtype=torch.float64)
    x = mu1 + torch.randn(n, d, generator=g, dtype=torch.float64) @ q1.T
    y = mu2 + torch.randn(n, d, generator=g, dtype=torch.float64) @ q2.T
    exact = M.frechet_gaussians(mu1, q1 @ q1.T, mu2, q2 @ q2.T)
    assert M.frechet_distance(x, y) == pytest.approx(exact, rel=0.05)
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


# -- mixture-aware -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ring() -> tuple[GaussianMixture, float]:
    mix = preset("ring8")
    return mix, mix.entropy(400_000, gen(0))


def test_nll_gap_zero_for_exact_samples_and_signed_otherwise(ring) -> None:
    mix, h = ring
    x = mix.sample(4000, gen(13))
    se = float(mix.log_prob(x).std()) / math.sqrt(len(x))
    assert abs(M.nll_gap(x, mix, entropy=h)) < 4 * se + 0.01
    assert M.nll_gap(0.7 * x, mix, entropy=h) > 1.0  # pulled off the ring: low density
    assert M.nll_gap(x + 0.3, mix, entropy=h) > 1.0  # shifted
    at_modes = mix.means.repeat(50, 1)  # no within-mode spread: below the entropy
    assert M.nll_gap(at_modes, mix, entropy=h) < -0.5


def test_mode_weight_error(ring) -> None:
    mix, _ = ring
    assert M.mode_weight_error(mix.sample(4000, gen(14)), mix) < 0.05
    one_mode = mix.means[2] + 0.1 * torch.randn(500, 2, generator=gen(15), dtype=torch.float64)
    assert M.mode_weight_error(one_mode, mix) == pytest.approx(1 - 1 / 8, abs=0.01)


# -- registry and floors -----------------------------------------------------------------------
def test_registry_lists_metrics_with_direction() -> None:
    assert {"swd", "mmd", "energy", "nll_gap", "mode_tv", "fd_digits"} <= set(M.METRICS.list())
    for name in M.METRICS:
        meta = M.METRICS.meta(name)
        assert meta["target"] in ("reference", "mixture") and "lower_is_better" in meta
    with pytest.raises(KeyError, match="known metrics"):
        M.METRICS.get("fid")


def test_evaluate_reports_floors_below_bad_values(ring) -> None:
    mix, _ = ring
    bad = 0.6 * mix.sample(1000, gen(16))
    out = M.evaluate(bad, mixture=mix)
    assert set(out) == {"swd", "mmd", "energy", "nll_gap", "mode_tv"}
    for name in ("swd", "mmd", "energy", "nll_gap"):
        assert out[name].floor is not None and out[name].value > 3 * abs(out[name].floor), name
    good = M.with_floor("swd", mix.sample(1000, gen(17)), mix.sample(1000, gen(18)),
                        mix.sample(1000, gen(19)))
    assert good.value < 2 * good.floor


def test_bad_input_is_rejected() -> None:
    x = normal(10, 0.0, 1.0, 0, 2)
    with pytest.raises(ValueError, match="values per sample"):
        M.sliced_wasserstein(x, normal(10, 0.0, 1.0, 0, 3))
    with pytest.raises(ValueError, match="NaN"):
        M.mmd_rbf(x, x * float("nan"))
    with pytest.raises(TypeError, match="GaussianMixture"):
        M.nll_gap(x, x)
