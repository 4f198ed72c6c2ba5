"""Zero terminal SNR (Lin et al. 2024): exact endpoints, the rescaled schedule, trailing grids,
and every sampler either running from T (no NaN, its order kept on the rest of the grid) or
refusing by the capability it lacks."""

from __future__ import annotations

import math

import pytest
import torch

import scoregen
from scoregen.models import ScoreModel, analytic, build_network
from scoregen.samplers import SAMPLERS, CapabilityError
from scoregen.sampling.grid import time_grid
from scoregen.sde import from_config
from scoregen.sde.base import FINITE_TERMINAL_SNR
from scoregen.training.config import ConfigError, parse_config

VP_FAMILY = ["vp", "vp-cosine", "ddpm"]


def _zts(name: str) -> scoregen.sde.SDE:
    return scoregen.sde.get(name, zero_terminal_snr=True)


@pytest.mark.parametrize("name", VP_FAMILY)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_endpoints_are_exact(name: str, dtype: torch.dtype) -> None:
    sde = _zts(name)
    T, zero = torch.tensor(sde.T, dtype=dtype), torch.tensor(0.0, dtype=dtype)
    assert float(sde.alpha(T)) == 0.0 and float(sde.sigma(T)) == 1.0
    assert float(sde.log_snr(T)) == -math.inf and float(sde.f(T)) == -math.inf
    zero = zero.double()  # in float32 the cosine schedule's own rounding leaves 2e-4 at t = 0
    assert float(sde.alpha(zero)) == 1.0 and float(sde.sigma(zero)) == 0.0
    assert FINITE_TERMINAL_SNR not in sde.capabilities and sde.default_spacing == "trailing"
    assert from_config(sde.config()) == sde and sde != scoregen.sde.get(name)


@pytest.mark.parametrize("name", VP_FAMILY)
def test_rescaled_schedule_formulas(name: str) -> None:
    """alpha_z = (alpha - alpha_T) / (1 - alpha_T); f_z = d log alpha_z / dt (autograd);
    g^2 = -2 f; the log-SNR inverse round-trips."""
    sde, raw = _zts(name), scoregen.sde.get(name)
    t = torch.linspace(0.01, 0.98 * sde.T, 9, dtype=torch.float64)
    a_T = float(raw.alpha(torch.tensor(raw.T, dtype=torch.float64)))
    torch.testing.assert_close(sde.alpha(t), (raw.alpha(t) - a_T) / (1 - a_T), rtol=1e-12,
                               atol=1e-14)
    torch.testing.assert_close(sde.alpha(t) ** 2 + sde.sigma(t) ** 2, torch.ones_like(t))
    tt = t.clone().requires_grad_(True)
    (d,) = torch.autograd.grad(torch.log(sde.alpha(tt)).sum(), tt)
    torch.testing.assert_close(sde.f(t), d, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sde.g2(t), -2 * sde.f(t))
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=0, atol=1e-9)


def test_discrete_schedule_matches_diffusers_rescaling() -> None:
    """diffusers keeps alpha of step 1 where scoregen keeps alpha(0) = 1: the rescaled
    sqrt(alpha_bar) agree to within beta_1 alpha(T)."""
    ddim = pytest.importorskip("diffusers.schedulers.scheduling_ddim")
    sde = _zts("ddpm")
    betas = ddim.rescale_zero_terminal_snr(sde.betas.clone())
    theirs = torch.cumprod(1 - betas, 0).sqrt()
    ours = sde.alpha(torch.arange(1, sde.n + 1, dtype=torch.float64) / sde.n)
    assert float(theirs[-1]) == 0.0 and float(ours[-1]) == 0.0
    assert float((theirs - ours).abs().max()) < 1e-4 * 0.0064


def test_trailing_grid() -> None:
    sde = _zts("ddpm")
    ts = time_grid(sde, 4)
    torch.testing.assert_close(ts, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
    assert torch.equal(ts[:-1] * sde.n, (ts[:-1] * sde.n).round())  # on the DDPM knots
    assert len(time_grid(sde, 4, "trailing", denoise=False)) == 5
    with pytest.raises(ValueError, match="zero terminal SNR"):
        time_grid(sde, 4, "logsnr")
    assert len(time_grid(scoregen.sde.get("vp"), 4, "trailing")) == 5


def _steps(name: str) -> int | None:
    return None if SAMPLERS.meta(name)["nfe_per_step"] is None else 6


@pytest.mark.parametrize("sde_name", ["vp", "ddpm"])
@pytest.mark.parametrize("sampler", [  # every sampler for VP-type processes (not CLD's own)
    n for n in scoregen.samplers.list() if not SAMPLERS.meta(n)["requires"]
    - {FINITE_TERMINAL_SNR} - scoregen.sde.get("vp").capabilities])
def test_every_sampler_runs_from_zero_snr_or_refuses_by_capability(sampler: str,
                                                                   sde_name: str) -> None:
    sde = _zts(sde_name)
    model = analytic.preset("ring8").model(sde, "v")
    if FINITE_TERMINAL_SNR in SAMPLERS.meta(sampler)["requires"]:
        with pytest.raises(CapabilityError, match="finite_terminal_snr"):
            scoregen.sample(model, sde, (64, 2), sampler, _steps(sampler))
        return
    res = scoregen.sample(model, sde, (256, 2), sampler, 6, seed=0)
    assert torch.isfinite(res.x).all()
    radius = res.x.norm(dim=1)
    assert 0.6 < float(radius.median()) < 1.3, float(radius.median())  # the ring of radius 1


@pytest.mark.parametrize(("sampler", "order"), [("ddim", 1), ("dpm_solver++", 2), ("heun", 2),
                                                ("unipc", 3)])
def test_order_is_kept_on_the_rest_of_the_grid(sampler: str, order: int) -> None:
    """Grids [T, t_1, then k log-SNR steps to t_min, 0] with t_1 fixed: the first step from T
    is the same for every k, and the error against k = 400 falls at the sampler's order."""
    sde = _zts("vp")
    model = analytic.preset("ring8").model(sde, "v")
    t1 = 0.9

    def run(k: int) -> torch.Tensor:
        ts = torch.cat([torch.tensor([sde.T], dtype=torch.float64),
                        time_grid(sde, k, "logsnr", T=t1)])
        return scoregen.sample(model, sde, (128, 2), sampler, ts=ts, seed=0,
                               dtype=torch.float64).x

    ref = run(400)
    errs = [float((run(k) - ref).norm(dim=1).mean()) for k in (10, 20, 40)]
    slopes = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert max(slopes) > order - 0.4 and min(slopes) > min(order, 2) - 0.7, (errs, slopes)


def test_eps_models_are_refused_and_v_networks_are_finite_at_the_end() -> None:
    sde = _zts("vp")
    with pytest.raises(ValueError, match="cannot be recovered from an eps prediction"):
        scoregen.sample(analytic.preset("ring8").model(sde, "eps"), sde, (4, 2), "ddim", 5)
    torch.manual_seed(0)
    net = ScoreModel(build_network("mlp", (2,), width=8, depth=1), sde, "v")
    out = net(torch.randn(4, 2), torch.full((4,), sde.T))
    assert torch.isfinite(out).all()
    assert torch.isfinite(scoregen.sample(net, sde, (4, 2), "dpm_solver++", 5).x).all()
    base = {"data": {"name": "moons"}, "sde": {"name": "vp", "zero_terminal_snr": True}}
    with pytest.raises(ConfigError, match=r"model\.prediction: 'eps'"):
        parse_config(base)
    assert parse_config({**base, "model": {"prediction": "v"}}).sde.options == {
        "zero_terminal_snr": True}


def test_nfe_budget_counts_the_first_step() -> None:
    sde = _zts("vp")
    model = analytic.preset("ring8").model(sde, "x0")
    for sampler in ("heun", "dpm_solver++_single", "ddim"):
        res = scoregen.sample(model, sde, (8, 2), sampler, nfe=9)
        assert 7 <= res.nfe <= 9, (sampler, res.nfe)


def test_likelihood_estimators_refuse_zero_terminal_snr() -> None:
    from scoregen.evaluation.bound import variational_bound
    from scoregen.evaluation.likelihood import log_likelihood

    sde = _zts("vp")
    model = analytic.preset("ring8").model(sde, "v")
    with pytest.raises(ValueError, match="infinite drift at T"):
        log_likelihood(model, sde, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="infinite range"):
        variational_bound(model, sde, torch.zeros(4, 2))
