"""The fast samplers on exact mixture scores: convergence orders against an independent
high-accuracy solution, exact NFE counts, every SDE at the noise floor, adaptive tolerance,
agreement with k-diffusion (and diffusers, slow), and clear errors for bad options."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from _oracle import smooth_reference
from scipy.integrate import quad

import scoregen
from scoregen import samplers
from scoregen import sde as sde_lib
from scoregen.evaluation.metrics import mode_weight_error, nll_gap
from scoregen.models.analytic import GaussianMixture, preset
from scoregen.samplers import _exp
from scoregen.samplers.adaptive_sde import BrownianPath
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.grid import time_grid
from scoregen.sampling.noise import NoiseSource, seeds_for

F64 = torch.float64
FIXED = ("heun", "dpm_solver++", "dpm_solver++_single", "dpm_solver++_sde", "unipc")
FAST = (*FIXED, "adaptive_sde")
STEPS = (20, 40, 80)

# (sampler, options, order of convergence of the deterministic error)
ORDERS = [
    ("heun", {}, 2),
    ("dpm_solver++", {}, 2),
    ("dpm_solver++", {"solver_type": "taylor"}, 2),
    ("dpm_solver++", {"order": 3}, 3),
    ("dpm_solver++_sde", {"eta": 0.0}, 2),
    ("dpm_solver++_single", {}, 2),
    ("dpm_solver++_single", {"order": 3}, 3),
    ("unipc", {"order": 1}, 2),
    ("unipc", {}, 3),
    ("unipc", {"variant": "bh1"}, 3),
    ("unipc", {"order": 3}, 4),  # UniP-3 + UniC; the first-order warm-up step only shows
]                                # below these step sizes


def _grid(sde, steps):
    return time_grid(sde, steps, "logsnr", denoise=False)


@pytest.fixture(scope="module")
def smooth():
    """:func:`_oracle.smooth_reference`: VP, ring8 (std 0.3), 24 starts, a dopri5 reference."""
    return smooth_reference()


def _errors(smooth, name, opts, steps=STEPS):
    sde, model, x_T, ref = smooth
    return [float((scoregen.sample(model, sde, x_T, name, ts=_grid(sde, n), **opts).x - ref)
                  .pow(2).mean().sqrt()) for n in steps]


def _slope(steps, errors):
    """Least-squares slope of -log(error) against log(steps)."""
    u = torch.tensor([math.log(n) for n in steps], dtype=F64)
    v = torch.tensor([-math.log(e) for e in errors], dtype=F64)
    u = u - u.mean()
    return float((u * (v - v.mean())).sum() / (u * u).sum())


@pytest.mark.parametrize(("name", "opts", "order"), ORDERS)
def test_error_falls_at_the_theoretical_order(smooth, name, opts, order):
    errors = _errors(smooth, name, opts)
    assert errors[0] > errors[1] > errors[2]
    slope = _slope(STEPS, errors)
    assert order - 0.35 < slope < order + 0.6, (errors, slope)


@pytest.mark.parametrize("name", FIXED)
def test_declared_order_is_the_measured_default(name):
    """The registered order is the one measured above with default options (the SDE form,
    eta = 1, is declared as a first-order SDE solver)."""
    measured = {n: o for n, opts, o in ORDERS if not opts}
    assert samplers.meta(name)["order"] == measured.get(name, 1)


@pytest.mark.parametrize("name", ["dpm_solver++", "dpm_solver++_single", "unipc"])
def test_order_3_beats_order_2(smooth, name):
    two, three = (_errors(smooth, name, {"order": k}, steps=(20,))[0] for k in (2, 3))
    assert three < 0.5 * two


def test_reference_dpm_solver_3m_weight_is_only_second_order(smooth, monkeypatch):
    """The reference code's phi_3 weight on D2 (half the exact one) drops 3M to order 2."""
    moments = _exp.moments

    def halved(h, k, midpoint=False):
        c = moments(h, k, midpoint)
        return [*c[:2], c[2] / 2] if k == 3 else c

    monkeypatch.setattr(_exp, "moments", halved)
    steps = (20, 40, 80)
    assert _slope(steps, _errors(smooth, "dpm_solver++", {"order": 3}, steps)) < 2.4


# -- the exponential-integrator helpers ---------------------------------------------------------
@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("z", [-30.0, -2.0, -1.0001, -0.9999, -0.3, -1e-3, -1e-9, 0.7])
def test_phi_matches_its_integral(k, z):
    if k == 0:
        assert _exp.phi(0, z) == pytest.approx(math.exp(z), rel=1e-14)
        return
    exact = quad(lambda v: math.exp((1 - v) * z) * v ** (k - 1) / math.factorial(k - 1), 0, 1,
                 epsabs=0, epsrel=1e-13)[0]
    assert _exp.phi(k, z) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("rs", [[0.0], [0.0, -0.8], [0.0, -0.8, -1.7], [0.0, 0.5, -1.2, 0.9],
                                [0.0, 1 / 3, 2 / 3]])
def test_solve_moments_solves_the_vandermonde_system(rs):
    c = [0.3, -0.2, 0.05, 0.01][: len(rs)]
    w = _exp.solve_moments(rs, c)
    for m, cm in enumerate(c):
        assert sum(wj * r**m for wj, r in zip(w, rs, strict=True)) == pytest.approx(cm, abs=1e-14)
    with pytest.raises(ValueError, match="distinct"):
        _exp.solve_moments([0.0, 0.0], [1.0, 0.0])


@pytest.mark.parametrize("rs", [[0.0], [0.0, -0.8], [0.0, -0.8, -1.7], [0.0, 0.5],
                                [0.0, 1 / 3, 2 / 3]])
@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_exp_step_integrates_polynomials_exactly(rs, eta):
    """sum_j w_j P(r_j) = int_0^h (1+eta) e^{-(1+eta)(h-u)} P(u/h) du for deg P < len(rs)."""
    h = 0.7
    coefs = torch.randn(len(rs), generator=torch.Generator().manual_seed(len(rs))).tolist()

    def poly(r):
        return sum(c * r**m for m, c in enumerate(coefs))

    zero = torch.zeros((), dtype=F64)
    t = _exp.Node(zero, 1.0, 1.0, 0.0)
    s = _exp.Node(zero, 1.0, math.exp(-h), h)
    preds = [torch.full((1,), poly(r), dtype=F64) for r in rs]
    got = float(_exp.exp_step(torch.zeros(1, dtype=F64), t, s, preds, rs, eta=eta))
    rate = 1 + eta
    exact = quad(lambda u: rate * math.exp(-rate * (h - u)) * poly(u / h), 0, h,
                 epsabs=0, epsrel=1e-13)[0]
    assert got == pytest.approx(exact, rel=1e-11, abs=1e-13)


# -- NFE ----------------------------------------------------------------------------------------
class CountingModel:
    """The oracle behind a counter of calls (independent of the Denoiser's own count)."""

    def __init__(self, model):
        self.model, self.prediction, self.sde, self.calls = model, model.prediction, model.sde, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.model(x, t)


def _expected_nfe(name, opts, n, denoise):
    if name == "heun":
        return 2 * n - 1 if denoise else 2 * n
    if name == "dpm_solver++_single":
        order = opts.get("order", 2)
        return order * (n - 1) + 1 if denoise else order * n
    return n  # multistep: exactly one evaluation per step


@pytest.mark.parametrize(("name", "opts"), [(n, {}) for n in FIXED]
                         + [("dpm_solver++", {"order": 3}), ("dpm_solver++_single", {"order": 3}),
                            ("unipc", {"order": 3})])
@pytest.mark.parametrize("denoise", [True, False])
def test_nfe_is_counted_and_exact(name, opts, denoise):
    sde = sde_lib.get("vp")
    model = CountingModel(preset("ring8").model(sde))
    for n in (3, 7, 12):
        model.calls = 0
        ts = time_grid(sde, n, "edm", denoise=denoise)
        res = scoregen.sample(model, sde, (5, 2), name, ts=ts, dtype=F64, **opts)
        assert res.nfe == model.calls == _expected_nfe(name, opts, n, denoise)
        if samplers.meta(name)["nfe_per_step"] == 1:
            assert res.nfe == len(ts) - 1


def test_callback_sees_every_step_and_the_result():
    sde = sde_lib.get("vp")
    model = preset("ring8").model(sde)
    for name in FIXED:
        seen = []
        res = scoregen.sample(model, sde, (4, 2), name, 6, dtype=F64,
                              callback=lambda i, t, x, seen=seen: seen.append((i, float(t), x)))
        assert [i for i, _, _ in seen] == list(range(6))
        assert seen[-1][1] == 0.0 and torch.equal(seen[-1][2], res.x)


# -- every SDE, close to the noise floor -----------------------------------------------------------
@pytest.fixture(scope="module")
def ring8():
    mix = preset("ring8")
    return mix, mix.entropy(100_000, torch.Generator().manual_seed(0))


# nll_gap of exact samples (n = 400) spreads over about +-0.1 nats; wrong samplers leave it.
@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("process", [n for n in sde_lib.list()
                                     if "scalar_kernel" in sde_lib.get(n).capabilities])
def test_every_sde_reaches_the_noise_floor(ring8, name, process):
    mix, entropy = ring8
    sde = sde_lib.get(process)
    model = mix.model(sde)
    if name == "adaptive_sde":
        ts = torch.tensor([sde.T, sde.t_min, 0.0], dtype=F64)
        res = scoregen.sample(model, sde, (400, 2), name, ts=ts, dtype=F64, rtol=0.05, atol=0.05)
    else:
        steps = 100 if samplers.meta(name)["stochastic"] else 25
        res = scoregen.sample(model, sde, (400, 2), name, steps, spacing="logsnr", dtype=F64)
    assert torch.isfinite(res.x).all()
    assert abs(nll_gap(res.x, mix, entropy)) < 0.2
    assert mode_weight_error(res.x, mix) < 0.1


def test_the_noise_floor_check_detects_a_coarse_sampler(ring8):
    mix, entropy = ring8
    sde = sde_lib.get("vp")
    res = scoregen.sample(mix.model(sde), sde, (400, 2), "dpm_solver++_sde", 4, dtype=F64)
    assert abs(nll_gap(res.x, mix, entropy)) > 0.2


# -- identities and cross-checks ------------------------------------------------------------------
@pytest.mark.parametrize("order", [2, 3])
def test_sde_form_with_eta_0_is_the_ode_solver(order):
    sde = sde_lib.get("ve")
    model = preset("ring8").model(sde)
    ode = scoregen.sample(model, sde, (8, 2), "dpm_solver++", 9, dtype=F64, order=order)
    sde_0 = scoregen.sample(model, sde, (8, 2), "dpm_solver++_sde", 9, dtype=F64, order=order,
                            eta=0.0)
    assert torch.equal(ode.x, sde_0.x)


def test_lower_order_final_only_below_10_steps():
    sde = sde_lib.get("vp")
    model = preset("ring8").model(sde)
    for name in ("dpm_solver++", "unipc"):
        for steps, same in ((6, False), (12, True)):
            on, off = (scoregen.sample(model, sde, (8, 2), name, steps, dtype=F64, order=3,
                                       lower_order_final=flag).x for flag in (True, False))
            assert torch.equal(on, off) == same


@pytest.mark.parametrize(("name", "opts"), [("dpm_solver++_sde", {}),
                                            ("heun", {"s_churn": 20.0})])
def test_stochastic_samples_do_not_depend_on_the_batch(name, opts):
    sde = sde_lib.get("vp")
    model = preset("ring8").model(sde)
    batch = scoregen.sample(model, sde, (3, 2), name, 8, seeds=torch.tensor([5, 6, 7]),
                            dtype=F64, **opts).x
    alone = scoregen.sample(model, sde, (1, 2), name, 8, seeds=torch.tensor([6]), dtype=F64,
                            **opts).x
    assert torch.allclose(batch[1:2], alone, rtol=0, atol=1e-12)


def test_heun_churn_adds_noise_within_the_process():
    sde = sde_lib.get("vp")
    model = preset("ring8").model(sde)
    plain = scoregen.sample(model, sde, (16, 2), "heun", 10, dtype=F64)
    churn = scoregen.sample(model, sde, (16, 2), "heun", 10, dtype=F64, s_churn=40.0,
                            s_tmin=0.05, s_tmax=50.0)
    assert churn.nfe == plain.nfe == 19
    assert not torch.allclose(churn.x, plain.x)


@pytest.fixture(scope="module")
def kdiffusion():
    from scoregen.evaluation.peers import PeerUnavailableError, kdiffusion

    try:
        return kdiffusion, kdiffusion.load()
    except PeerUnavailableError as err:
        pytest.skip(str(err))


@pytest.mark.parametrize("process", ["vp", "ve", "linear"])
@pytest.mark.parametrize(("ours", "theirs", "opts"), [
    ("heun", "sample_heun", {"safe_ratio": 0.0, "final": "jump"}),
    ("dpm_solver++", "sample_dpmpp_2m", {"final": "jump"}),
    ("dpm_solver++_sde", "sample_dpmpp_2m_sde", {"eta": 0.7}),
    ("dpm_solver++_sde", "sample_dpmpp_2m_sde", {"eta": 1.0, "solver_type": "taylor"}),
])
def test_matches_k_diffusion(kdiffusion, process, ours, theirs, opts):
    """Same EDM grid and start, our noise draws fed to k-diffusion: equal to round-off (with
    k-diffusion's choices: EDM's corrector on every step, the denoising jump at the end)."""
    peer, kd = kdiffusion
    sde = sde_lib.get(process)
    model = preset("ring8").model(sde)
    x_T = sde.prior_std() * torch.randn(8, 2, generator=torch.Generator().manual_seed(1),
                                        dtype=F64)
    ts = time_grid(sde, 12, "edm")
    res = scoregen.sample(model, sde, x_T, ours, ts=ts, seed=3, **opts)
    sigmas = torch.cat([torch.exp(-sde.log_snr(ts[:-1])), ts.new_zeros(1)])
    kopts = {k: v for k, v in opts.items() if k not in ("safe_ratio", "final")}
    if "eta" in kopts:  # the same draws 1, 2, ... that scoregen.sample hands the sampler
        noise = NoiseSource(seeds_for(8, 3), (2,), F64)
        draws = (noise.draw(j) for j in itertools.count(1))
        kopts["noise_sampler"] = lambda s, s_next: next(draws)
        kopts["solver_type"] = {"taylor": "heun"}.get(kopts.get("solver_type"), "midpoint")
    edm = peer.EDMDenoiser(Denoiser(model, sde), sde, sigmas)
    x = getattr(kd, theirs)(edm, x_T / float(sde.alpha(ts[0])), sigmas, disable=True, **kopts)
    assert torch.allclose(res.x, x, rtol=0, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize(("opts", "cfg"), [({}, {}), ({"variant": "bh1"}, {"solver_type": "bh1"}),
                                           ({"order": 3}, {"solver_order": 3})])
def test_unipc_matches_diffusers(opts, cfg):
    """diffusers' UniPCMultistepScheduler on the discrete DDPM process, stopped before its
    final step; equal up to diffusers' float32 schedule."""
    from scoregen.evaluation.peers import PeerUnavailableError
    from scoregen.evaluation.peers import diffusers_schedulers as peer

    try:
        peer.load()
    except PeerUnavailableError as err:
        pytest.skip(str(err))
    sde = sde_lib.get("ddpm")
    model = preset("ring8").model(sde)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    sched = peer.make_scheduler("UniPCMultistepScheduler", sde, 16, lower_order_final=False, **cfg)
    ts = torch.tensor([(int(k) + 1) / sde.n for k in sched.timesteps], dtype=F64)
    ours = scoregen.sample(model, sde, x_T, "unipc", ts=ts, lower_order_final=False, **opts).x
    den, x = Denoiser(model, sde), x_T.clone()
    for k in sched.timesteps[:-1]:
        x = sched.step(den(x, peer.time_of(k, sde)).eps, k, x).prev_sample
    assert torch.allclose(ours, x, rtol=0, atol=1e-5)


# -- the adaptive SDE solver ---------------------------------------------------------------------
def test_adaptive_sde_reports_its_steps_and_counts_nfe():
    sde = sde_lib.get("vp")
    model = preset("ring8").model(sde)
    runs = {}
    for tol in (0.1, 0.02):
        ts = torch.tensor([sde.T, sde.t_min, 0.0], dtype=F64)
        res = scoregen.sample(model, sde, (200, 2), "adaptive_sde", ts=ts, dtype=F64, rtol=tol,
                              atol=tol)
        used, info = res.info["ts_used"], res.info
        assert used.dtype == F64 and used[0] == sde.T and used[-1] == sde.t_min
        assert (used[1:] < used[:-1]).all() and len(used) == info["accepted"] + 1
        assert res.nfe == 2 * (info["accepted"] + info["rejected"]) + 1 == info["solver_nfe"] + 1
        runs[tol] = res
    assert runs[0.1].nfe < runs[0.02].nfe  # a looser tolerance takes fewer steps
    again = scoregen.sample(model, sde, (200, 2), "adaptive_sde", ts=ts, dtype=F64, rtol=0.02,
                            atol=0.02)
    assert torch.equal(again.x, runs[0.02].x)
    no_denoise = scoregen.sample(model, sde, (20, 2), "adaptive_sde", ts=ts[:2], dtype=F64,
                                 rtol=0.1, atol=0.1)
    info = no_denoise.info
    assert no_denoise.nfe == 2 * (info["accepted"] + info["rejected"])


def test_adaptive_sde_meets_its_tolerance_without_bias():
    """A narrow 2-D Gaussian under VE: the sample spread matches (the paper's resampling of
    rejected noise widens it here), and the error norm is per sample."""
    mix = GaussianMixture(torch.zeros(1, 2, dtype=F64), 0.01)
    sde = sde_lib.get("ve")
    ts = torch.tensor([sde.T, sde.t_min, 0.0], dtype=F64)
    res = scoregen.sample(mix.model(sde), sde, (2000, 2), "adaptive_sde", ts=ts, dtype=F64,
                          rtol=0.05, atol=0.05)
    assert res.info["rejected"] > 0
    assert float(res.x.std(0).mean()) == pytest.approx(0.1, rel=0.04)


def test_brownian_path_remembers_and_bridges():
    """Values asked for out of order form one Brownian motion: variances and covariances."""
    noise = NoiseSource(seeds_for(20_000), (1,), F64)
    path = BrownianPath(noise, torch.zeros(20_000, 1, dtype=F64))
    w1, w_quarter, w_half = path(1.0), path(0.25), path(0.5)
    assert path(0.25) is w_quarter and noise.count == 3  # remembered, one draw each
    w = torch.cat([w_quarter, w_half, w1], dim=1)
    cov = w.T @ w / w.shape[0]
    exact = torch.tensor([[0.25, 0.25, 0.25], [0.25, 0.5, 0.5], [0.25, 0.5, 1.0]], dtype=F64)
    assert torch.allclose(cov, exact, atol=0.04)
    path.forget_before(0.5)
    assert [u for u, _ in path.known] == [0.5, 1.0]


# -- registration and options ----------------------------------------------------------------------
def test_registered_with_their_meta():
    expected = {"heun": (2, False, 2), "dpm_solver++": (2, False, 1),
                "dpm_solver++_single": (2, False, 2), "dpm_solver++_sde": (1, True, 1),
                "unipc": (3, False, 1), "adaptive_sde": (1, True, None)}
    for name, (order, stochastic, nfe) in expected.items():
        meta = samplers.meta(name)
        assert (meta["order"], meta["stochastic"], meta["nfe_per_step"]) == (order, stochastic, nfe)
    assert samplers.meta("adaptive_sde")["tolerance_options"] == ("rtol", "atol")


@pytest.mark.parametrize(("name", "opts", "match"), [
    ("dpm_solver++", {"order": 4}, "order"),
    ("dpm_solver++_single", {"order": 1}, "order"),
    ("dpm_solver++_sde", {"order": 4}, "order"),
    ("unipc", {"order": 4}, "order"),
    ("unipc", {"variant": "bh3"}, "variant"),
    ("dpm_solver++", {"solver_type": "heun"}, "solver_type"),
    ("dpm_solver++_sde", {"eta": -0.5}, "eta"),
    ("heun", {"s_churn": -1.0}, "s_churn"),
    ("heun", {"s_tmin": 2.0, "s_tmax": 1.0}, "s_tmin"),
    ("adaptive_sde", {"rtol": -1e-3}, "rtol"),
    ("adaptive_sde", {"rtol": 0.0, "atol": 0.0}, "rtol"),
    ("adaptive_sde", {"safety": 1.5}, "safety"),
    ("adaptive_sde", {"max_iters": 0}, "max_iters"),
])
def test_bad_options_give_clear_errors(name, opts, match):
    sde = sde_lib.get("vp")
    with pytest.raises(ValueError, match=match):
        scoregen.sample(preset("ring8").model(sde), sde, (2, 2), name, 5, dtype=F64, **opts)


def test_adaptive_sde_stops_at_max_iters():
    sde = sde_lib.get("vp")
    with pytest.raises(RuntimeError, match="max_iters"):
        scoregen.sample(preset("ring8").model(sde), sde, (2, 2), "adaptive_sde", 2, dtype=F64,
                        max_iters=3)
