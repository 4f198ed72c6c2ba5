"""The shared SDE test-suite: every registered SDE is checked against its own definition.

A new SDE registered in ``scoregen.sde`` is picked up here automatically.
"""

from __future__ import annotations

import math

import pytest
import torch

import scoregen.sde as sdes
from scoregen.sde import SDE

ALL = sdes.list()
SCALAR = [n for n in ALL if "scalar_kernel" in sdes.get(n).capabilities]


def make(name: str) -> SDE:
    return sdes.get(name)


def times(sde: SDE, n: int = 7) -> torch.Tensor:
    return torch.linspace(sde.t_min, sde.T, n, dtype=torch.float64)


def accepts(sde: SDE, shape: tuple[int, ...]) -> bool:
    """Whether ``sde`` diffuses data of event shape ``shape`` (blurring: images only)."""
    try:
        sde.state_shape(shape)
    except ValueError:
        return False
    return True


def small_shape(sde: SDE) -> tuple[int, ...]:
    """A small event shape the process accepts: 2 values, or a 1x2x2 image."""
    return (2,) if accepts(sde, (2,)) else (1, 2, 2)


def linear_map(fn, n: int) -> torch.Tensor:
    """The matrix ``(n_out, n)`` of a linear map of flat batches, from the identity."""
    return fn(torch.eye(n, dtype=torch.float64)).reshape(n, -1).T


@pytest.mark.parametrize("name", ALL)
def test_registry_round_trip(name: str) -> None:
    sde = make(name)
    assert sde.name == name
    assert sdes.from_config(sde.config()) == sde


@pytest.mark.parametrize("name", SCALAR)
def test_closed_forms_match_autograd(name: str) -> None:
    """f = d log alpha/dt and g^2 = d sigma^2/dt - 2 f sigma^2, whatever the subclass says."""
    sde = make(name)
    t = times(sde)
    torch.testing.assert_close(sde.f(t), SDE.f(sde, t), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(sde.g2(t), SDE.g2(sde, t), rtol=1e-6, atol=1e-8)
    assert (sde.g2(t) > 0).all()


@pytest.mark.parametrize("name", SCALAR)
def test_log_snr_inverse(name: str) -> None:
    sde = make(name)
    t = times(sde)
    lam = sde.log_snr(t)
    assert (lam[1:] < lam[:-1]).all(), "log-SNR must decrease in t"
    torch.testing.assert_close(lam, torch.log(sde.alpha(t) / sde.sigma(t)))
    torch.testing.assert_close(sde.t_from_log_snr(lam), t, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(SDE.t_from_log_snr(sde, lam), t, rtol=1e-6, atol=1e-7)
    # a closed-form alpha(lambda) is alpha at the time of that log-SNR
    torch.testing.assert_close(sde.alpha_from_log_snr(lam), sde.alpha(t), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(SDE.alpha_from_log_snr(sde, lam), sde.alpha(t), rtol=1e-6,
                               atol=1e-9)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes(name: str, dtype: torch.dtype) -> None:
    sde = make(name)
    for shape in [s for s in [(5, 3), (5, 1, 4, 4)] if accepts(sde, s[1:])]:
        x0 = torch.randn(shape, dtype=dtype)
        state = (5, *sde.state_shape(shape[1:]))
        t = torch.full((5,), 0.5 * sde.T, dtype=dtype)
        xt = sde.perturb(x0, t, torch.randn(state, dtype=dtype))
        assert xt.shape == state and xt.dtype == dtype
        assert sde.drift(xt, t).shape == state
        score = -torch.randn_like(xt)
        assert sde.reverse_drift(xt, t, score).dtype == dtype
        assert sde.ode_drift(xt, t[0], score).shape == state
        assert sde.diffuse(torch.randn_like(xt), t, 0.01).shape == state
        assert sde.prior_logp(xt).shape == (5,)
        assert sde.prior_sample(state, dtype=dtype).dtype == dtype
        assert sde.data_from_state(xt).shape == shape


@pytest.mark.parametrize("name", SCALAR)
def test_marginal_matches_monte_carlo_simulation(name: str) -> None:
    """Simulate dx = f x dt + g dw by fine Euler-Maruyama from the exact marginal at t_a and
    compare mean and std at t_b with alpha(t_b) x0 and sigma(t_b).

    Tolerances: 4 Monte-Carlo standard errors (n paths) plus the O(dt) bias of the scheme.
    """
    sde = make(name)
    g = torch.Generator().manual_seed(0)
    n, steps = 20_000, 400
    x0 = torch.tensor([1.5, -0.5], dtype=torch.float64)
    t_a, t_b = 0.2 * sde.T, 0.6 * sde.T
    ta = torch.tensor(t_a, dtype=torch.float64)
    x = sde.perturb(x0.expand(n, 2), ta, torch.randn(n, 2, generator=g, dtype=torch.float64))
    dt = (t_b - t_a) / steps
    for k in range(steps):
        t = torch.tensor(t_a + (k + 0.5) * dt, dtype=torch.float64)  # midpoint coefficients
        x = x + sde.drift(x, t) * dt + sde.diffusion(t) * math.sqrt(dt) * torch.randn(
            x.shape, generator=g, dtype=torch.float64)
    tb = torch.tensor(t_b, dtype=torch.float64)
    alpha, sigma = sde.alpha(tb), sde.sigma(tb)
    se_mean = sigma / math.sqrt(n)
    se_std = sigma / math.sqrt(2 * n)
    bias = 5e-3 * (alpha * x0.abs().max() + sigma)
    assert torch.allclose(x.mean(0), alpha * x0, atol=float(4 * se_mean + bias))
    assert torch.allclose(x.std(0), sigma.expand(2), atol=float(4 * se_std + bias))


@pytest.mark.parametrize("name", SCALAR)
def test_moment_odes_fokker_planck(name: str) -> None:
    """For dx = f x dt + g dw the moments obey d alpha/dt = f alpha and
    d sigma^2/dt = 2 f sigma^2 + g^2; check with central differences of the closed forms."""
    sde = make(name)
    # times off the knots of piecewise schedules (ddpm is smooth only between t_i = i/N)
    frac = [0.0513, 0.1377, 0.2891, 0.4433, 0.5617, 0.7129, 0.8461, 0.9377]
    t = torch.tensor(frac, dtype=torch.float64) * sde.T
    h = 1e-6
    d_alpha = (sde.alpha(t + h) - sde.alpha(t - h)) / (2 * h)
    d_var = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(d_alpha, sde.f(t) * sde.alpha(t), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        d_var, 2 * sde.f(t) * sde.sigma(t) ** 2 + sde.g2(t), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", SCALAR)
def test_prior_matches_marginal_at_final_time(name: str) -> None:
    """At T the marginal of data in [-1, 1] is (nearly) the prior: the signal alpha(T) x0 is
    small against the noise and sigma(T) equals the prior std."""
    sde = make(name)
    T = torch.tensor(sde.T, dtype=torch.float64)
    assert float(sde.alpha(T)) < 0.02 * sde.prior_std()
    assert abs(float(sde.sigma(T)) - sde.prior_std()) < 1e-3 * sde.prior_std()
    x = sde.prior_sample((50_000, 2), generator=torch.Generator().manual_seed(1),
                         dtype=torch.float64)
    assert abs(float(x.std()) / sde.prior_std() - 1) < 0.01
    # prior_logp is the matching Gaussian density
    dist = torch.distributions.Normal(0.0, sde.prior_std())
    torch.testing.assert_close(sde.prior_logp(x[:10]), dist.log_prob(x[:10]).sum(1))


def test_posterior_is_bayes_rule() -> None:
    """q(x_s | x_t, x0) from sde.posterior equals Gaussian conditioning of the joint of
    (x_s, x_t) given x0 (checked on VE where both sides are simple)."""
    sde = make("vp")
    t, s = torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    c_x, c_0, std = sde.posterior(t, s)
    a_s, s_s = sde.alpha(s), sde.sigma(s)
    a_ts, s_ts = sde.transition(s, t)
    # joint: x_s = a_s x0 + s_s e1, x_t = a_ts x_s + s_ts e2; Cov(x_s, x_t) = a_ts s_s^2
    var_t = a_ts**2 * s_s**2 + s_ts**2
    torch.testing.assert_close(var_t, sde.sigma(t) ** 2)
    gain = a_ts * s_s**2 / var_t
    torch.testing.assert_close(c_x, gain)
    torch.testing.assert_close(c_0, a_s - gain * a_ts * a_s)
    torch.testing.assert_close(std**2, s_s**2 - gain * a_ts * s_s**2)


def test_ddpm_reproduces_alpha_bar_exactly() -> None:
    sde = sdes.get("ddpm")
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    torch.testing.assert_close(sde.alpha(t) ** 2, alpha_bar, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(sde.sigma(t) ** 2, 1 - alpha_bar, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(sde.alpha_bar(), alpha_bar)
    # g^2 on [t_{i-1}, t_i) is -N log(1 - beta_i) ~ N beta_i
    mid = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    torch.testing.assert_close(sde.g2(mid), -1000 * torch.log1p(-betas))


def test_ddpm_custom_betas() -> None:
    betas = [0.1, 0.2, 0.3]
    sde = sdes.get("ddpm", betas=betas)
    t = torch.tensor([1 / 3, 2 / 3, 1.0], dtype=torch.float64)
    expected = torch.tensor([0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7], dtype=torch.float64)
    torch.testing.assert_close(sde.alpha(t) ** 2, expected)
    assert sdes.from_config(sde.config()) == sde


def test_continuous_vp_matches_discrete_ddpm_within_discretisation_error() -> None:
    """Continuous VP(0.1, 20) is the N -> infinity limit of DDPM with beta_i = b(t_i)/N.

    -log alpha_bar_i = sum_j -log(1 - beta_j) = sum_j beta_j + sum_j beta_j^2/2 + ...,
    while B(t_i) = int_0^{t_i} b. The Riemann sum differs from the integral by at most
    (beta_max - beta_min) t / (2N) and the quadratic term is at most sum_j beta_j^2 / 2 +
    O(beta^3): the difference must lie inside that bound, and be far from zero.
    """
    N = 1000
    disc, cont = sdes.get("ddpm"), sdes.get("vp", beta_min=0.1, beta_max=20.0)
    t = torch.arange(1, N + 1, dtype=torch.float64) / N
    diff = (2 * cont.log_alpha(t) - 2 * disc.log_alpha(t)).abs()  # |log alpha_bar difference|
    betas = torch.linspace(1e-4, 0.02, N, dtype=torch.float64)
    bound = (cont.beta_max - cont.beta_min) * t / (2 * N) + torch.cumsum(betas**2, 0) * 0.51 + (
        betas[0] + (cont.beta_max - cont.beta_min) / N)
    assert (diff <= bound).all()
    assert diff.max() < 0.1  # the two schedules agree to within a few percent in alpha_bar
    torch.testing.assert_close(disc.sigma(t), cont.sigma(t), rtol=0.02, atol=1e-3)


@pytest.mark.parametrize("name", ALL)
def test_time_out_of_range_is_an_error(name: str) -> None:
    sde = make(name)
    shape = small_shape(sde)
    x0 = torch.zeros(2, *shape)
    eps = torch.zeros(2, *sde.state_shape(shape))
    with pytest.raises(ValueError, match="outside the SDE's range"):
        sde.perturb(x0, torch.tensor([0.5, 1.5]) * sde.T, eps)
    with pytest.raises(ValueError, match="outside the SDE's range"):
        sde.perturb(x0, torch.tensor(-0.1), eps)
    with pytest.raises(ValueError, match="finite"):
        sde.perturb(x0, torch.tensor(float("nan")), eps)


def test_mismatched_shapes_are_errors() -> None:
    sde = make("vp")
    with pytest.raises(ValueError, match="eps has shape"):
        sde.perturb(torch.zeros(4, 2), torch.tensor(0.5), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="does not match a batch"):
        sde.perturb(torch.zeros(4, 2), torch.full((3,), 0.5), torch.zeros(4, 2))


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(KeyError, match="known SDEs: blur, cld, ddpm, linear, subvp, vdm, ve, vp"):
        sdes.get("vpp")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("vp", {"beta_min": -0.1}, "beta_min must be a positive"),
        ("vp", {"beta_min": 5.0, "beta_max": 1.0}, "beta_min must be smaller than beta_max"),
        ("subvp", {"beta_max": float("nan")}, "beta_max must be a positive"),
        ("ve", {"sigma_min": 0.0}, "sigma_min must be a positive"),
        ("ve", {"sigma_min": 10.0, "sigma_max": 1.0}, "sigma_min must be smaller"),
        ("ddpm", {"betas": [0.1, 1.5]}, "every beta must lie in"),
        ("ddpm", {"n": 0}, "positive integer"),
        ("ddpm", {"beta_start": 0.02, "beta_end": 0.01}, "beta_start <= beta_end"),
        ("vp-cosine", {"T": 1.0}, "T < 1"),
        ("vp", {"t_min": 2.0}, "t_min must satisfy"),
        ("vp", {"gamma": 1.0}, "bad arguments for SDE 'vp'"),
        ("cld", {"mass": 0.0}, "mass must be a positive"),
        ("cld", {"gamma": 1.5}, r"gamma \(initial velocity variance / M\) must lie in"),
        ("cld", {"beta1": -1.0}, "beta1 must be a finite number >= 0"),
        ("blur", {"min_scale": 0.0}, r"min_scale \(d_min\) must lie in"),
        ("blur", {"logsnr_min": 5.0, "logsnr_max": 1.0}, "logsnr_min must be smaller"),
        ("blur", {"sigma_blur_max": -1.0}, "sigma_blur_max must be a finite number >= 0"),
        ("vdm", {"gamma_min": 3.0, "gamma_max": -3.0}, "gamma_min must be smaller than gamma_max"),
        ("vdm", {"features": 0}, "features must be a positive integer"),
    ],
)
def test_bad_schedule_parameters(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        sdes.get(name, **kwargs)


def test_register_a_new_sde_is_picked_up() -> None:
    """One class in one file: alpha and sigma only; everything else is derived."""

    class Quadratic(SDE):
        name = "test-quadratic"

        def alpha(self, t):
            return 1 - t**2

        def sigma(self, t):
            return t

    try:
        sdes.register("test-quadratic")(Quadratic)
        assert "test-quadratic" in sdes.list()
        sde = sdes.get("test-quadratic", T=0.9)
        t = torch.tensor([0.3], dtype=torch.float64)
        torch.testing.assert_close(sde.f(t), -2 * t / (1 - t**2))
        torch.testing.assert_close(sde.g2(t), 2 * t + 4 * t**3 / (1 - t**2))
    finally:
        sdes.SDES._items.pop("test-quadratic", None)
        sdes.SDES._meta.pop("test-quadratic", None)


# -- the kernel as operations (every registered process) ------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_kernel_operations_invert_each_other(name: str) -> None:
    """perturb, x0_from_eps, eps_from_x0, score_from_eps and eps_from_score are consistent, on
    vectors and images; a normal draw maps to the prior whose log-density prior_logp gives."""
    sde = sdes.get(name)
    g = torch.Generator().manual_seed(0)
    for shape in [s for s in ((5, 3), (2, 1, 4, 4)) if accepts(sde, s[1:])]:
        state = (shape[0], *sde.state_shape(shape[1:]))
        x0 = torch.randn(shape, generator=g, dtype=torch.float64)
        eps = torch.randn(state, generator=g, dtype=torch.float64)
        t = torch.rand(shape[0], generator=g, dtype=torch.float64) * 0.9 + 0.05
        x = sde.perturb(x0, t, eps)
        torch.testing.assert_close(sde.x0_from_eps(x, t, eps), x0)
        torch.testing.assert_close(sde.eps_from_x0(x, t, x0), eps)
        score = sde.score_from_eps(eps, t)
        torch.testing.assert_close(sde.eps_from_score(x, t, score), eps)
        assert sde.data_from_state(x).shape == shape
        # the model's part of eps (all of it, or CLD's velocity half) determines x0 too
        torch.testing.assert_close(sde.x0_from_eps(x, t, sde.predicted_part(eps)), x0)
        torch.testing.assert_close(sde.scale_noise(eps, t), x - sde.perturb(x0, t, 0 * eps))
    shape = small_shape(sde)
    n = math.prod(sde.state_shape(shape))
    z = torch.randn(40_000, *sde.state_shape(shape), generator=g, dtype=torch.float64)
    prior = sde.prior_from_normal(z)
    P = linear_map(lambda e: sde.prior_from_normal(e.reshape(-1, *sde.state_shape(shape))), n)
    cov = P @ P.T
    torch.testing.assert_close(torch.cov(prior.reshape(len(z), -1).T), cov,
                               atol=0.03 * float(cov.abs().max()), rtol=0.02)
    exact = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), cov)
    torch.testing.assert_close(sde.prior_logp(prior[:100]),
                               exact.log_prob(prior[:100].reshape(100, -1)))


# -- every process against its own definition: moments of the linear SDE --------------------------
def _matrices(sde: SDE, t: float, shape: tuple[int, ...]):
    """Drift matrix ``F``, diffusion matrix ``G G^T`` and the kernel ``(A, C)`` at ``t``."""
    state = sde.state_shape(shape)
    n = math.prod(state)
    tt = torch.tensor(t, dtype=torch.float64)
    F = linear_map(lambda e: sde.drift(e.reshape(-1, *state), tt), n)
    GG = linear_map(lambda e: sde.diffusion2(e.reshape(-1, *state), tt), n)
    A, C = sde.kernel_matrices(tt, shape)
    return F, GG, A, C


@pytest.mark.parametrize("name", ALL)
def test_kernel_moments_obey_the_fokker_planck_equations(name: str) -> None:
    """For ``dx = F_t x dt + G_t dw`` the kernel ``N(A_t x0, C_t)`` obeys ``dA/dt = F A`` and
    ``dC/dt = F C + C F^T + G G^T`` (central differences of the closed forms, at times off any
    knot); the kernel matrices agree with perturb, and the diffusion with diffuse."""
    sde = make(name)
    shape = small_shape(sde)
    h = 1e-6
    for frac in (0.0513, 0.2891, 0.5617, 0.8461):
        t = frac * sde.T
        F, GG, A, C = _matrices(sde, t, shape)
        _, _, A_hi, C_hi = _matrices(sde, t + h, shape)
        _, _, A_lo, C_lo = _matrices(sde, t - h, shape)
        scale = float(C.abs().max()) + float(A.abs().max())
        torch.testing.assert_close((A_hi - A_lo) / (2 * h), F @ A, rtol=1e-4, atol=1e-5 * scale)
        torch.testing.assert_close((C_hi - C_lo) / (2 * h), F @ C + C @ F.T + GG, rtol=1e-4,
                                   atol=1e-5 * scale)
        _check_operators(sde, shape, torch.tensor(t, dtype=torch.float64), A, C, GG)


def _check_operators(sde: SDE, shape: tuple[int, ...], t: torch.Tensor, A: torch.Tensor,
                     C: torch.Tensor, GG: torch.Tensor) -> None:
    """perturb's mean is ``A x0``, scale_noise's ``L L^T = C`` and diffuse's ``G G^T`` is the
    diffusion matrix."""
    state = sde.state_shape(shape)
    n, d = math.prod(state), math.prod(shape)
    mean = linear_map(lambda e: sde.perturb(e.reshape(-1, *shape), t,
                                            torch.zeros(len(e), *state, dtype=e.dtype)), d)
    torch.testing.assert_close(mean, A)
    L = linear_map(lambda e: sde.scale_noise(e.reshape(-1, *state), t), n)
    torch.testing.assert_close(L @ L.T, C, rtol=1e-7, atol=1e-12)
    G = linear_map(lambda e: sde.diffuse(e.reshape(-1, *state), t), n)
    torch.testing.assert_close(G @ G.T, GG, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_marginal_moments_match_monte_carlo_simulation_of_the_sde(name: str) -> None:
    """Simulate ``dx = f(x, t) dt + G dw`` by fine Euler-Maruyama from the exact kernel at t_a
    and compare the mean and covariance of the state at t_b with ``A x0`` and ``C`` of the
    closed form (an augmented state, per-frequency scales and scalar kernels alike).

    Tolerances: 4 Monte-Carlo standard errors (n paths) plus the O(dt) bias of the scheme."""
    sde = make(name)
    shape = small_shape(sde)
    state = sde.state_shape(shape)
    g = torch.Generator().manual_seed(0)
    n, steps = 20_000, 400
    x0 = torch.linspace(-1.0, 1.5, math.prod(shape), dtype=torch.float64).reshape(shape)
    t_a, t_b = 0.2 * sde.T, 0.6 * sde.T
    eps = torch.randn(n, *state, generator=g, dtype=torch.float64)
    x = sde.perturb(x0.expand(n, *shape), torch.tensor(t_a, dtype=torch.float64), eps)
    dt = (t_b - t_a) / steps
    for k in range(steps):
        t = torch.tensor(t_a + (k + 0.5) * dt, dtype=torch.float64)  # midpoint coefficients
        z = torch.randn(x.shape, generator=g, dtype=torch.float64)
        x = x + sde.drift(x, t) * dt + sde.diffuse(z, t, dt)
    A, C = sde.kernel_matrices(torch.tensor(t_b, dtype=torch.float64), shape)
    flat = x.reshape(n, -1)
    sd = C.diagonal().sqrt()
    mean = A @ x0.reshape(-1)
    bias = 5e-3 * (float(mean.abs().max()) + float(sd.max()))
    assert ((flat.mean(0) - mean).abs() <= 4 * sd / math.sqrt(n) + bias).all()
    se_cov = (sd[:, None] * sd[None, :]) * math.sqrt(2 / n)
    assert ((torch.cov(flat.T) - C).abs() <= 4 * se_cov + bias * sd.max()).all()


@pytest.mark.parametrize("name", ALL)
def test_prior_is_the_marginal_at_final_time(name: str) -> None:
    """At T the kernel forgets the data (``A_T`` small) and its covariance is the prior's."""
    sde = make(name)
    shape = small_shape(sde)
    n = math.prod(sde.state_shape(shape))
    A, C = sde.kernel_matrices(torch.tensor(sde.T, dtype=torch.float64), shape)
    P = linear_map(lambda e: sde.prior_from_normal(e.reshape(-1, *sde.state_shape(shape))), n)
    assert float(A.abs().max()) < 0.02 * float(P.abs().max())
    torch.testing.assert_close(C, P @ P.T, atol=2e-3 * float(C.abs().max()), rtol=0)


def test_the_name_is_written_once() -> None:
    """The registration decorator sets ``name``; a new module in scoregen/sde is imported with
    the package (discovery), so every shipped process is registered under its own name."""
    for name in ALL:
        assert type(sdes.get(name)).name == name
    assert "scalar_kernel" in sdes.get("vp").capabilities
