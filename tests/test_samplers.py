"""The shared sampler suite: every registered sampler on every registered SDE, exact scores.

Parametrised over ``scoregen.samplers.list()`` and its metadata (``order``, ``stochastic``,
``nfe_per_step``, ``requires``, ``tolerance_options``) and over the SDEs that offer what each
sampler requires, so a new sampler module or SDE is tested with no edit here. Samplers that
take the optional ``final`` option are checked to solve the last interval to ``sigma = 0`` at
their order. The model is the exact mixture oracle, so every error measured is the sampler's.
"""

from __future__ import annotations

import itertools
import math
from functools import cache

import pytest
import torch
from _oracle import (
    MIXTURE,
    ORDER_SETTINGS,
    CountingModel,
    mixture_for,
    order_slope,
    pf_ode_reference,
    sampler_sde_pairs,
    spacing_for,
    takes_option,
)

import scoregen
from scoregen import samplers
from scoregen import sde as sde_lib
from scoregen.evaluation import metrics
from scoregen.evaluation.reference import pf_ode_endpoint
from scoregen.models.analytic import preset
from scoregen.sampling.noise import NoiseSource, seeds_for

SAMPLERS = samplers.list()
SDES = sde_lib.list()
N = 1000
FLOOR_FACTOR = 1.6  # generous step counts must land within this factor of the noise floor


def is_adaptive(name: str) -> bool:
    return samplers.meta(name)["nfe_per_step"] is None


def tolerance_opts(name: str, tol: float) -> dict[str, float]:
    return dict.fromkeys(samplers.meta(name).get("tolerance_options", ("rtol", "atol")), tol)


def run(name: str, sde, steps: int | None = None, n: int = N, tol: float = 1e-4, **kw):
    """Sample ``name`` on the exact oracle (ring8; as 1x2 images for a process on images);
    adaptive samplers get ``[T, t_min, 0]`` and ``tol``."""
    mix = mixture_for(sde)
    model = mix.model(sde)
    if "spacing" in kw:
        kw["spacing"] = spacing_for(sde, kw["spacing"])
    if is_adaptive(name):
        ts = torch.tensor([sde.T, sde.t_min, 0.0], dtype=torch.float64)
        return scoregen.sample(model, sde, (n, *mix.shape), name, None, ts=ts,
                               dtype=torch.float64, **tolerance_opts(name, tol), **kw)
    return scoregen.sample(model, sde, (n, *mix.shape), name, steps, dtype=torch.float64, **kw)


@pytest.fixture(scope="module")
def references() -> tuple[torch.Tensor, float]:
    g = torch.Generator().manual_seed(123)
    ref, ref2 = MIXTURE.sample(N, g), MIXTURE.sample(N, g)
    return ref, metrics.sliced_wasserstein(ref2, ref, seed=0)


@pytest.mark.parametrize(("name", "sde_name"), sampler_sde_pairs())
def test_distance_falls_with_steps_and_reaches_the_noise_floor(name, sde_name, references):
    ref, floor = references
    sde = sde_lib.get(sde_name)
    meta = samplers.meta(name)
    if is_adaptive(name):
        # a strong-order-1/2 SDE solver needs ~tol^-2 steps: 1e-2 (Jolicoeur-Martineau et al.'s
        # default) already reaches this floor; ODE solvers get 1e-4
        tight_tol = 1e-2 if meta["stochastic"] else 1e-4
        loose, tight = run(name, sde, tol=1e-1), run(name, sde, tol=tight_tol)
        assert tight.nfe > loose.nfe
    else:
        generous = 200 if meta["stochastic"] or meta["order"] < 2 else 50
        loose, tight = run(name, sde, 3, spacing="edm"), run(name, sde, generous, spacing="edm")
    d_loose = metrics.sliced_wasserstein(loose.x, ref, seed=0)
    d_tight = metrics.sliced_wasserstein(tight.x, ref, seed=0)
    assert d_tight < FLOOR_FACTOR * floor, (d_tight, floor)
    if not is_adaptive(name):
        assert d_loose > d_tight


# -- deterministic samplers: convergence order against a high-accuracy reference --------------
DETERMINISTIC = [n for n in SAMPLERS if not samplers.meta(n)["stochastic"] and not is_adaptive(n)]
SOLVES_FINAL = [n for n in DETERMINISTIC if takes_option(n, "final")]
# smooth in t (the discrete DDPM schedule is only piecewise smooth); the learned schedule, the
# per-frequency and the augmented process with their own grids (_oracle.ORDER_SETTINGS)
ORDER_SDES = tuple(ORDER_SETTINGS)


@pytest.mark.parametrize(("name", "sde_name"),
                         [p for p in sampler_sde_pairs(DETERMINISTIC) if p[1] in ORDER_SDES])
def test_deterministic_error_falls_at_the_declared_order(name, sde_name):
    order = samplers.meta(name)["order"]
    # 40 steps put every solver here in its asymptotic regime on this mixture (the multistep
    # solvers' warm-up and lower-order start fade more slowly than a one-step method's); the
    # first-order flow of CLD in t needs 160
    slope, errors = order_slope(name, sde_name)
    assert slope > 0.75 * order, (errors, slope)


@cache
def _clean_reference(sde_name: str):
    """``(sde, x_T, x_0)``: 32 starts and the exact flow down to ``sigma = 0`` (float64)."""
    sde = sde_lib.get(sde_name)
    x_T = sde.prior_std() * NoiseSource(seeds_for(32, 7), (2,), torch.float64).draw(0)
    return sde, x_T, pf_ode_endpoint(MIXTURE, sde, x_T)


def _endpoint_error(name: str, sde_name: str, steps: int, **opts) -> float:
    sde, x_T, ref = _clean_reference(sde_name)
    out = scoregen.sample(MIXTURE.model(sde), sde, x_T, name, steps, spacing="logsnr", **opts)
    return (out.x - ref).flatten(1).norm(dim=1).median().item()


@pytest.mark.parametrize("name", SOLVES_FINAL)
def test_error_to_sigma_zero_falls_at_the_declared_order_including_the_final_interval(name):
    """Grids ending in 0: the final interval is solved at the sampler's order, so the error
    against the exact flow to sigma = 0 keeps falling at that order where the denoising jump
    stalls at its O(sigma~(t_min)^2) floor (about 6.5e-4 here)."""
    order = samplers.meta(name)["order"]
    per_step = samplers.meta(name)["nfe_per_step"]
    steps = (100 // per_step, 200 // per_step)
    errors = [_endpoint_error(name, "vp", n, final="solve") for n in steps]
    slope = math.log2(errors[0] / errors[1])
    assert slope > 0.75 * order, (errors, slope)
    if order >= 2:
        jump = _endpoint_error(name, "vp", steps[1], final="jump")
        assert errors[1] < jump, (errors, jump)


@pytest.mark.parametrize("name", ["dpm_solver++", "unipc"])
def test_final_interval_keeps_its_order_on_very_fine_grids(name):
    """On 2000 log-SNR steps the history near ``t_min`` spans only a short range in ``tau``:
    the final interval must still find nodes far enough back (its thinned ladder), or it
    falls to low order and the error grows with the steps (mix64, whose smallest data
    variance 0.002 makes the expansion in ``tau`` converge slowly: 1.7e-6 at 2000 steps
    with the newest nodes only, against 3e-8 to 8e-8 with the ladder)."""
    mix, sde = preset("mix64"), sde_lib.get("vp")
    x_T = NoiseSource(seeds_for(8, 7), mix.shape, torch.float64).draw(0)
    ref = pf_ode_endpoint(mix, sde, x_T)
    errors = [(scoregen.sample(mix.model(sde), sde, x_T, name, n, order=3).x - ref)
              .flatten(1).norm(dim=1).median().item() for n in (500, 2000)]
    assert errors[1] < 2e-7 and errors[1] < 2 * errors[0], errors


@pytest.mark.parametrize(("name", "opts", "tight"), [
    ("ode_dopri5", {"rtol": 1e-8, "atol": 1e-8}, 1e-6),
    ("dpm_solver++_adaptive", {"rtol": 1e-5}, 1e-5),
])
def test_adaptive_solvers_solve_the_final_interval_to_their_tolerance(name, opts, tight):
    sde, x_T, ref = _clean_reference("vp")
    grid = torch.tensor([sde.T, sde.t_min, 0.0], dtype=torch.float64)
    errors = {}
    for final in ("solve", "jump"):
        out = scoregen.sample(MIXTURE.model(sde), sde, x_T, name, None, ts=grid, final=final,
                              **opts)
        errors[final] = (out.x - ref).flatten(1).norm(dim=1).median().item()
    assert errors["solve"] < tight < 1e-4 < errors["jump"], errors


@pytest.mark.parametrize("sde_name", ("vp", "ve"))
def test_dopri5_meets_its_tolerance(sde_name):
    sde, x_T, ref = pf_ode_reference(sde_name)
    ts = torch.tensor([sde.T, sde.t_min], dtype=torch.float64)
    nfes = []
    for tol in (1e-4, 1e-6):
        out = scoregen.sample(MIXTURE.model(sde), sde, x_T, "ode_dopri5", None, ts=ts,
                              rtol=tol, atol=tol)
        # local tolerances accumulate over the solve: allow a global error of 100 x tol
        assert (out.x - ref).abs().max() < 100 * tol
        nfes.append(out.nfe)
    assert nfes[1] > nfes[0]


# -- the ancestral chain is Ho et al. 2020, Algorithm 2 -----------------------------------------
@pytest.mark.parametrize("variance", ["transition", "posterior"])
def test_ancestral_reproduces_algorithm_2_step_by_step(variance):
    sde = sde_lib.get("ddpm")
    model = MIXTURE.model(sde)
    seeds = seeds_for(64, 3)
    trace = []
    out = scoregen.sample(model, sde, (64, 2), "ancestral", 1000, seeds=seeds,
                          spacing="uniform", dtype=torch.float64, variance=variance,
                          callback=lambda i, t, x: trace.append(x.clone()))
    assert out.nfe == 1000 and len(trace) == 1000

    # An independent straightforward implementation of Algorithm 2 (Ho et al. 2020).
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas = 1 - betas
    alpha_bar = torch.cumprod(alphas, 0)
    noise = NoiseSource(seeds, (2,), torch.float64)
    x = noise()  # x_T ~ N(0, I)
    for step, t in enumerate(range(1000, 0, -1)):
        i = t - 1
        eps = model(x, torch.full((64,), t / 1000, dtype=torch.float64))
        if variance == "transition":
            var = betas[i]
        else:
            var = betas[i] * (1 - alpha_bar[i - 1]) / (1 - alpha_bar[i]) if t > 1 else 0.0
        z = noise() if t > 1 else torch.zeros_like(x)
        x = (x - betas[i] / (1 - alpha_bar[i]).sqrt() * eps) / alphas[i].sqrt()
        x = x + math.sqrt(var) * z
        torch.testing.assert_close(trace[step], x, rtol=1e-9, atol=1e-9)


def test_euler_maruyama_in_snr_time_is_the_ancestral_sampler():
    """Euler–Maruyama on ``dw = D dv + dB_v`` (docs/samplers.md) is the posterior step."""
    for sde_name in ("vp", "ve", "linear"):
        sde = sde_lib.get(sde_name)
        a = run("ancestral", sde, 12, n=64, spacing="edm", seed=4)
        e = run("euler_maruyama", sde, 12, n=64, spacing="edm", seed=4)
        torch.testing.assert_close(a.x, e.x, rtol=1e-9, atol=1e-9)


def test_ddim_eta_one_is_the_ancestral_sampler_on_the_same_grid():
    for sde_name in ("vp", "ve", "ddpm"):
        sde = sde_lib.get(sde_name)
        a = run("ancestral", sde, 20, n=256, spacing="quadratic", seed=11)
        d = run("ddim", sde, 20, n=256, spacing="quadratic", seed=11, eta=1.0)
        torch.testing.assert_close(a.x, d.x, rtol=1e-9, atol=1e-9)


def test_ddim_eta_zero_is_the_euler_step_of_the_pf_ode_in_the_limit():
    """DDIM(eta=0) is exact in log-SNR; against one explicit Euler step of the PF-ODE in t
    the difference is a local error O(h^2): halving h quarters it. ``ode_euler`` steps in
    ``u = alpha / sigma`` on ``y = x / sigma`` (docs/samplers.md), where Euler *is* DDIM."""
    sde = sde_lib.get("vp")
    model = MIXTURE.model(sde)
    x = sde.prior_std() * NoiseSource(seeds_for(16, 1), (2,), torch.float64).draw(0) * 0.5
    t = torch.tensor(0.5, dtype=torch.float64)
    diffs = []
    for h in (1e-2, 5e-3, 2.5e-3):
        ts = torch.stack([t, t - h])
        ddim = scoregen.sample(model, sde, x, "ddim", None, ts=ts).x
        euler_u = scoregen.sample(model, sde, x, "ode_euler", None, ts=ts).x
        torch.testing.assert_close(euler_u, ddim, rtol=1e-12, atol=1e-12)
        score = sde.score_from_eps(model(x, t.expand(16)), t)
        euler_t = x - h * sde.ode_drift(x, t, score)
        diffs.append((ddim - euler_t).abs().max().item())
    for big, small in itertools.pairwise(diffs):
        assert 3.4 < big / small < 4.6, diffs


# -- NFE is counted, and is what each sampler declares ------------------------------------------
@pytest.mark.parametrize("name", SAMPLERS)
def test_nfe_is_counted_and_matches_the_declared_cost(name):
    sde = sde_lib.get("vp" if not samplers.missing(name, sde_lib.get("vp")) else "cld")
    model = CountingModel(MIXTURE.model(sde))
    steps = 7
    if is_adaptive(name):
        ts = torch.tensor([sde.T, sde.t_min, 0.0], dtype=torch.float64)
        out = scoregen.sample(model, sde, (8, 2), name, None, ts=ts, **tolerance_opts(name, 1e-3))
    else:
        out = scoregen.sample(model, sde, (8, 2), name, steps)
    assert out.nfe == model.calls > 0
    per_step = samplers.meta(name)["nfe_per_step"]
    if per_step is not None:
        intervals = len(out.ts) - 1
        if per_step == 1:
            assert out.nfe == intervals
        assert intervals <= out.nfe <= per_step * intervals


@pytest.mark.parametrize(("name", "opts", "expected"), [
    ("pc", {"n_corrector": 2}, lambda k: 3 * (k - 1) + 1),
    ("pc", {"n_corrector": 0}, lambda k: k),
    ("ode_midpoint", {}, lambda k: 2 * (k - 1) + 1),
    ("ode_rk4", {}, lambda k: 4 * (k - 1) + 1),
])
def test_nfe_formulas(name, opts, expected):
    sde = sde_lib.get("vp")
    for k in (2, 5, 9):
        out = scoregen.sample(MIXTURE.model(sde), sde, (4, 2), name, k, **opts)
        assert out.nfe == expected(k)


# -- bad input ---------------------------------------------------------------------------------
def test_bad_input_gets_clear_errors():
    sde = sde_lib.get("vp")
    model = MIXTURE.model(sde)
    with pytest.raises(KeyError, match="ddim"):
        scoregen.sample(model, sde, (4, 2), "no-such-sampler")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        scoregen.sample(model, sde, (4, 2), "ddim", 0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        scoregen.sample(model, sde, (4, 2), "ddim", ts=torch.tensor([1.0, 0.2, 0.5, 0.0]))
    with pytest.raises(ValueError, match="retarget"):
        scoregen.sample(model, sde_lib.get("ve"), (4, 2), "ddim", 5)
    with pytest.raises(ValueError, match="eta"):
        scoregen.sample(model, sde, (4, 2), "ddim", 5, eta=2.0)
    with pytest.raises(ValueError, match="predictor"):
        scoregen.sample(model, sde, (4, 2), "pc", 5, predictor="langevin")
    with pytest.raises(ValueError, match="variance"):
        scoregen.sample(model, sde, (4, 2), "ancestral", 5, variance="large")
    with pytest.raises(ValueError, match="rtol"):
        scoregen.sample(model, sde, (4, 2), "ode_dopri5", None,
                        ts=torch.tensor([1.0, 1e-3]), rtol=-1.0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        scoregen.sample(model, sde, (4, 2), "ode_euler", 5, eta=0.5)


# -- capabilities: a process without what a sampler requires is refused, by name ---------------
class _GenericVP(type(sde_lib.get("vp"))):
    """A VP process that does not declare its scalar kernel (an unregistered test double)."""

    name = "vp-generic"
    capabilities = frozenset()


def test_a_process_without_a_required_capability_is_refused_by_name():
    sde = _GenericVP()
    assert all(s != "vp-generic" for _, s in sampler_sde_pairs())
    for name in SAMPLERS:
        if "scalar_kernel" not in samplers.meta(name)["requires"]:
            continue
        with pytest.raises(samplers.CapabilityError, match="scalar_kernel") as info:
            scoregen.sample(MIXTURE.model(sde), sde, (4, 2), name, 5)
        assert repr(name) in str(info.value) and "'vp-generic'" in str(info.value)


def test_registration_refuses_an_unknown_capability():
    with pytest.raises(ValueError, match="unknown capabilities"):
        samplers.register("x", order=1, stochastic=False, nfe_per_step=1, requires=("magic",))
