"""Processes beyond a scalar schedule, against exact answers: critically-damped Langevin (an
augmented state), blurring diffusion (one alpha per DCT frequency) and the learned VDM schedule.

The shared suites (test_sde, test_analytic, test_samplers, test_objectives) check every process
against its own definition; this file checks what is particular to each."""

from __future__ import annotations

import math

import pytest
import torch

import scoregen
from scoregen import sde as sde_lib
from scoregen.evaluation.likelihood import log_likelihood
from scoregen.models import ScoreModel, build_network
from scoregen.models.analytic import GaussianMixture, preset
from scoregen.samplers import CapabilityError
from scoregen.samplers.sscs import linear_part
from scoregen.sde.blur import dct_matrix
from scoregen.training.objectives import build_objective, random_batch
from scoregen.training.objectives.vdm import PHI

F64 = torch.float64


# -- critically-damped Langevin ------------------------------------------------------------------
def test_cld_probability_flow_density_of_the_joint_state_is_the_closed_form() -> None:
    """The probability-flow ODE's log-density of states (x, v) at t_min equals the exact mixture
    density of the CLD kernel within 1e-3 nats (ring8; the exact p_T as the prior)."""
    mix, sde = preset("ring8"), sde_lib.get("cld")
    u = mix.sample_t(8, sde, sde.t_min, torch.Generator().manual_seed(0))
    exact = mix.log_prob(u, sde, sde.t_min)
    res = log_likelihood(mix.model(sde), sde, u, state=True, rtol=1e-6, atol=1e-6,
                         prior_logp=lambda x: mix.log_prob(x, sde, sde.T))
    assert (res.logp - exact).abs().max() < 1e-3, (res.logp - exact)
    assert res.x_T.shape == (8, 4)


def test_cld_data_likelihood_is_a_lower_bound() -> None:
    """Data x0 are lifted with v0 ~ N(0, gamma M): the mean of log p(x0, v0) - log q(v0) lies
    below the exact log p(x0) (by the posterior's KL), and close to it at small t_min."""
    mix, sde = preset("ring8"), sde_lib.get("cld")
    x0 = mix.sample(64, torch.Generator().manual_seed(1))
    res = log_likelihood(mix.model(sde), sde, x0, rtol=1e-5, atol=1e-5, seeds=torch.arange(64))
    exact = float(mix.log_prob(x0).mean())
    gap = exact - float(res.logp.mean())
    assert 0 < gap < 0.5, gap


def test_sscs_linear_part_is_the_exact_ou_transition() -> None:
    """SSCS's analytic half step equals the matrix exponential of beta A and the covariance
    integral of the linear reverse dynamics (Van Loan's block exponential)."""
    sde = sde_lib.get("cld")
    G, M = sde.friction, sde.mass
    A = torch.tensor([[0.0, -1 / M], [1.0, -G / M]], dtype=F64)
    Q = torch.tensor([[0.0, 0.0], [0.0, 2 * G]], dtype=F64)
    for b in (1e-3, 0.05, 0.7):
        e_xx, e_xv, e_vx, e_vv, l_xx, l_xv, l_vv = linear_part(sde, b)
        E = torch.linalg.matrix_exp(b * A)
        torch.testing.assert_close(torch.tensor([[e_xx, e_xv], [e_vx, e_vv]], dtype=F64), E)
        van_loan = torch.linalg.matrix_exp(b * torch.cat([torch.cat([A, Q], 1),
                                                          torch.cat([0 * A, -A.T], 1)]))
        cov = van_loan[:2, 2:] @ E.T
        L = torch.tensor([[l_xx, 0.0], [l_xv, l_vv]], dtype=F64)
        torch.testing.assert_close(L @ L.T, cov, rtol=1e-8, atol=1e-15)


def test_cld_velocity_model_network_and_shapes() -> None:
    """A CLD model reads the state (2x the first axis) and predicts the velocity noise; samples
    are the data part; its eps parameterization is the exact posterior for Gaussian data."""
    sde = sde_lib.get("cld")
    net = build_network("mlp", (2,), width=16, depth=1, in_shape=[4])
    model = ScoreModel(net, sde)
    u = torch.randn(5, 4)
    assert model(u, torch.full((5,), 0.5)).shape == (5, 2)
    out = scoregen.sample(model, sde, (7, 2), "euler_maruyama", 4)
    assert out.x.shape == (7, 2)
    with pytest.raises(ValueError, match=r"states \(4,\) under cld"):
        model(torch.randn(5, 2), torch.full((5,), 0.5))
    # a fresh network (F = 0) is the Gaussian-data posterior: exact for N(0, sigma_data^2 I)
    gauss = GaussianMixture(torch.zeros(1, 2), 0.25)
    x = gauss.sample_t(6, sde, 0.3, torch.Generator().manual_seed(0)).float()
    t = torch.full((6,), 0.3)
    torch.testing.assert_close(model(x, t), gauss.model(sde)(x, t), rtol=1e-4, atol=1e-5)


# -- blurring diffusion --------------------------------------------------------------------------
def test_dct_is_orthonormal_and_diagonalises_the_kernel() -> None:
    for n in (1, 2, 8):
        V = dct_matrix(n)
        torch.testing.assert_close(V @ V.T, torch.eye(n, dtype=F64))
    sde = sde_lib.get("blur")
    A, C = sde.kernel_matrices(torch.tensor(0.4, dtype=F64), (2, 4, 4))
    V = torch.kron(torch.eye(2, dtype=F64), torch.kron(dct_matrix(4), dct_matrix(4)))
    D = V @ A @ V.T
    torch.testing.assert_close(D, torch.diag(D.diagonal()), atol=1e-12, rtol=0)
    alpha, sigma = sde.diagonal_kernel(torch.tensor(0.4, dtype=F64), (2, 4, 4))
    torch.testing.assert_close(D.diagonal(), alpha.expand(2, 4, 4).reshape(-1))
    torch.testing.assert_close(C, sigma.reshape(()) ** 2 * torch.eye(32, dtype=F64))


def test_blurring_mean_is_the_heat_equation_a_gaussian_blur_of_std_sigma_b() -> None:
    """The dissipation of the kernel's mean is the heat equation run for tau = sigma_B^2 / 2 (the
    link to inverse heat dissipation): an impulse away from the borders spreads into a Gaussian
    of variance sigma_B^2 pixels^2; the DC frequency (the image mean) is kept."""
    sde = sde_lib.get("blur", min_scale=1e-9)
    t = torch.tensor(0.5, dtype=F64)
    sigma_b = sde.sigma_blur_max * math.sin(math.pi * 0.5 / 2) ** 2
    # a 1 x 257 image: far from the borders the cosine series is the free-space heat kernel
    impulse = torch.zeros(1, 1, 1, 257, dtype=F64)
    impulse[..., 128] = 1.0
    blurred = sde.perturb(impulse, t, torch.zeros_like(impulse))[0, 0, 0]
    a = torch.sigmoid(sde.log_snr(t)).sqrt()
    profile = blurred / a
    pos = torch.arange(257, dtype=F64) - 128
    assert abs(float(profile.sum()) - 1) < 1e-9  # DC kept
    var = float((profile * pos**2).sum())
    assert abs(var / sigma_b**2 - 1) < 0.02, (var, sigma_b**2)


def test_blur_refuses_flat_data_and_log_snr_samplers_by_capability() -> None:
    sde = sde_lib.get("blur")
    mix = preset("ring8")
    with pytest.raises(ValueError, match=r"blur diffuses images of shape \(C, H, W\)"):
        scoregen.sample(mix.model(sde), sde, (4, 2), "ddim", 5)
    img = preset("mix8x8")
    with pytest.raises(CapabilityError, match="scalar_kernel") as err:
        scoregen.sample(img.model(sde), sde, (4, 1, 8, 8), "dpm_solver++", 5)
    assert "samplers that run on 'blur': ancestral, ddim" in str(err.value)
    out = scoregen.sample(img.model(sde), sde, (4, 1, 8, 8), "ddim", 5, dtype=F64)
    assert out.x.shape == (4, 1, 8, 8) and torch.isfinite(out.x).all()


def test_cld_refuses_samplers_without_its_capabilities() -> None:
    sde, mix = sde_lib.get("cld"), preset("ring8")
    for name, missing in (("ddim", "diagonal_kernel"), ("unipc", "scalar_kernel")):
        with pytest.raises(CapabilityError, match=missing):
            scoregen.sample(mix.model(sde), sde, (4, 2), name, 5)
    with pytest.raises(CapabilityError, match="damped_langevin"):
        scoregen.sample(mix.model(sde_lib.get("vp")), sde_lib.get("vp"), (4, 2), "sscs", 5)
    with pytest.raises(CapabilityError, match="needs the scalar kernel"):
        scoregen.sample(mix.model(sde), sde, (4, 2), "euler_maruyama", 5, variable="snr")
    with pytest.raises(ValueError, match="spacing 'logsnr' is a formula in log-SNR"):
        scoregen.sample(mix.model(sde), sde, (4, 2), "sscs", 5, spacing="logsnr")
    with pytest.raises(ValueError, match="re-targeted to another SDE by matching log-SNR"):
        scoregen.models.prediction.retarget(mix.model(sde), sde_lib.get("vp"))


def test_ddim_with_eta_one_is_ancestral_per_frequency() -> None:
    """On the diagonal kernel too: DDIM(eta=1) draws from the per-frequency posterior."""
    sde, mix = sde_lib.get("blur"), preset("mix8x8")
    kw = {"spacing": "quadratic", "seed": 3, "dtype": F64}
    a = scoregen.sample(mix.model(sde), sde, (16, 1, 8, 8), "ancestral", 12, **kw)
    d = scoregen.sample(mix.model(sde), sde, (16, 1, 8, 8), "ddim", 12, eta=1.0, **kw)
    torch.testing.assert_close(a.x, d.x, rtol=1e-9, atol=1e-9)


# -- the learned schedule (VDM) --------------------------------------------------------------------
def test_learned_schedule_is_monotone_with_its_endpoints() -> None:
    sde = sde_lib.get("vdm", gamma_min=-7.0, gamma_max=6.0)
    t = torch.linspace(0, 1, 501, dtype=F64)
    gamma, dgamma = sde.gamma(t)
    assert (dgamma > 0).all() and (gamma[1:] > gamma[:-1]).all()
    ends = sde.gamma(torch.tensor([sde.t_min, sde.T], dtype=F64))[0]
    torch.testing.assert_close(ends, torch.tensor([-7.0, 6.0], dtype=F64))
    torch.testing.assert_close(sde.sigma(t) ** 2, torch.sigmoid(gamma))
    torch.testing.assert_close(sde.alpha(t) ** 2 + sde.sigma(t) ** 2, torch.ones_like(t))


def _vdm_pieces():
    sde = sde_lib.get("vdm", features=16)
    torch.manual_seed(0)
    model = ScoreModel(build_network("mlp", (2,), width=16, depth=1), sde).double().train()
    x0 = preset("ring8").sample(32, torch.Generator().manual_seed(0))
    return sde, model, random_batch(x0, 0, sde=sde)


def test_schedule_shape_gets_the_gradient_of_the_squared_loss_and_endpoints_of_the_loss() -> None:
    """With ``variance=True`` one backward pass gives the network and the endpoints grad E[L] and
    the schedule's shape grad E[L^2] (VDM sec. 5.2), as two separate autograd passes do."""
    sde, model, batch = _vdm_pieces()
    objective = build_objective("vdm", sde)
    objective(model, batch).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    per = build_objective("vdm", sde, variance=False).per_example(model, batch)
    names, params = zip(*model.named_parameters(), strict=True)
    g_mean = torch.autograd.grad(per.mean(), params, retain_graph=True)
    g_square = torch.autograd.grad((per**2).mean(), params)
    for name, gm, gs in zip(names, g_mean, g_square, strict=True):
        want = gs if name.startswith("sde.shape_") else gm
        torch.testing.assert_close(got[name], want, rtol=1e-7, atol=1e-12, msg=name)
    assert got["sde.shape_scale"].abs().sum() > 0 and got["sde.gamma_0"].abs() > 0


def test_vdm_loss_is_the_exact_negative_log_likelihood_with_exact_scores() -> None:
    """With the exact oracle the bound is tight: the mean per-example estimate equals -log
    p_{t_min}(x) / D (up to the prior's mismatch), under a fixed and under the learned schedule."""
    mix = preset("ring8")
    x0 = mix.sample(1500, torch.Generator().manual_seed(2))
    for name in ("vp", "vdm"):
        sde = sde_lib.get(name)
        per = build_objective("vdm", sde).per_example(mix.model(sde), random_batch(x0, 3, sde=sde))
        exact = -mix.log_prob(x0, sde, sde.t_min) / 2
        se = float(per.std()) / math.sqrt(len(per))
        assert abs(float(per.mean() - exact.mean())) < 4 * se + 0.01, (per.mean(), exact.mean())


def test_low_discrepancy_times_cover_the_interval_evenly() -> None:
    sde = sde_lib.get("vp")
    batch = random_batch(torch.zeros(256, 2, dtype=F64), 0)
    t = build_objective("vdm", sde).times(batch)
    u = ((t - sde.t_min) / (sde.T - sde.t_min)).sort().values
    # a Kronecker sequence: every gap below 2.7 / n (three gap lengths, phi^2 apart)
    assert float(u.diff().max()) < 2.7 / 256 and 0 <= float(u[0]) < 2.7 / 256
    assert abs(PHI - 0.6180339887) < 1e-9
    assert batch.offset != random_batch(torch.zeros(4, 2), 0, step=1).offset


def test_learned_schedule_equality_and_refusal_of_a_fresh_schedule() -> None:
    sde, model, _ = _vdm_pieces()
    fresh = sde_lib.get("vdm", features=16)
    assert fresh == sde and sde_lib.from_config(sde.config()) == sde
    with torch.no_grad():
        sde.gamma_1.add_(0.5)
    assert fresh != sde
    with pytest.raises(ValueError, match="retarget"):
        scoregen.sample(model, fresh, (4, 2), "ddim", 5)
    out = scoregen.sample(model, model.sde, (4, 2), "unipc", 5)
    assert torch.isfinite(out.x).all()


def test_learned_schedule_is_saved_with_the_model_and_checked_on_load(tmp_path) -> None:
    from scoregen.training.checkpoint import (
        CheckpointError,
        load_model,
        load_state,
        save_checkpoint,
    )

    _, model, _ = _vdm_pieces()
    model = model.float()
    with torch.no_grad():
        model.sde.shape_scale.mul_(1.5)
        model.sde.gamma_0.sub_(1.0)
    save_checkpoint(tmp_path, 1, model)
    loaded = load_model(tmp_path)
    assert loaded.sde == model.sde and loaded.sde is not model.sde
    assert loaded.sde != sde_lib.from_config(loaded.sde.config())  # trained, not fresh
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("sde.")}
    with pytest.raises(CheckpointError, match="parameters of the learned noise schedule are "
                                              "missing"):
        load_state(loaded, state, tmp_path)
    bad = dict(model.state_dict())
    bad["sde.gamma_0"] = torch.tensor(30.0)
    with pytest.raises(CheckpointError, match="not increasing"):
        load_state(loaded, bad, tmp_path)
