"""The defaults of ``scoregen.sample`` on the exact oracle: ``sampler="auto"`` and the ``data``
spacing, unguided and under classifier-free guidance.

The guided reference is a dopri5 solve of the guided probability-flow ODE from the same
``x_T`` (``scoregen.evaluation.compare.guided_problem``); the default must keep the requested
class as well as the reference does (within one point of its class accuracy) from 10 NFE,
and never blow up. The full grid of scales, budgets and presets (docs/results.md) is the slow
test; the fast one holds the two ring presets at 10 and 20 NFE.
"""

from __future__ import annotations

import math

import pytest
import torch

import scoregen
from scoregen import sde as sde_lib
from scoregen.evaluation.compare import guided_problem, initial_noise
from scoregen.evaluation.reference import pf_ode_endpoint
from scoregen.models import analytic
from scoregen.sampling.grid import data_log_snrs, time_grid
from scoregen.sampling.noise import NoiseSource, seeds_for
from scoregen.sampling.recommend import recommend, resolve

SCALES = (1.0, 2.0, 4.0, 8.0)


def _class_accuracy(mixture: analytic.GaussianMixture, x: torch.Tensor, labels: torch.Tensor
                    ) -> float:
    return float((mixture.class_log_probs(x).argmax(1) == labels).double().mean())


def _check_default(spec: str, w: float, budgets: tuple[int, ...], n: int) -> None:
    """The default sampler at each budget keeps the class within 1 point of the reference
    (from 10 NFE) and stays bounded: its mean endpoint error is below the RMS norm of the
    data (the failures it replaces reached 5-19 on these presets)."""
    problem = guided_problem(spec, "vp", w, n, seed=100_000, rtol=1e-8)
    mixture, ref = problem.mixture, problem.endpoint_reference
    ref_acc = _class_accuracy(mixture, ref, problem.labels)
    scale = float(mixture.sample(4096, torch.Generator().manual_seed(0)).flatten(1)
                  .pow(2).sum(1).mean().sqrt())
    oracle, x_T = mixture.model(problem.sde), initial_noise(problem, n, 100_000)
    for nfe in budgets:
        res = scoregen.sample(oracle, problem.sde, x_T.clone(), nfe=nfe, cond=problem.labels,
                              guidance=w, seeds=seeds_for(n, 100_000))
        assert res.nfe <= nfe
        error = float((res.x - ref).flatten(1).norm(dim=1).mean())
        assert math.isfinite(error) and error < scale, (spec, w, nfe, error, scale)
        if nfe >= 10:
            acc = _class_accuracy(mixture, res.x, problem.labels)
            assert acc >= ref_acc - 0.01, (spec, w, nfe, acc, ref_acc)


@pytest.mark.parametrize("spec", ["ring8", "ring8:classes=2"])
def test_guided_default_keeps_the_class_from_10_nfe(spec):
    for w in SCALES:
        _check_default(spec, w, (10, 20), 200)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["ring8", "ring8:classes=2", "mix64:classes=3"])
def test_guided_default_keeps_the_class_on_every_cell(spec):
    for w in SCALES:
        _check_default(spec, w, (5, 10, 20, 50), 500)


def test_auto_is_the_default_sampler_and_options_override():
    sde = sde_lib.get("vp")
    model = analytic.preset("ring8").model(sde)
    res = scoregen.sample(model, sde, (4, 2), nfe=10)
    assert res.sampler == "unipc" and res.info["options"] == {"order": 2}
    assert res.info["grid"] == sde.default_spacing == "data"
    res = scoregen.sample(model, sde, (4, 2), "auto", nfe=5, cond=torch.arange(4), guidance=4)
    assert res.info["options"] == {"order": 1}  # guided, few steps: the order-1 predictor
    res = scoregen.sample(model, sde, (4, 2), "auto", steps=30, order=2)
    assert res.info["options"] == {"order": 2} and res.nfe == 30
    assert "options" not in scoregen.sample(model, sde, (4, 2), "ddim", 5).info
    assert recommend(50) == ("unipc", {"order": 3})
    assert recommend(5, 1.0) == recommend(5) == ("unipc", {"order": 2})
    assert resolve("heun", {"x": 1}, 5, None, 8.0) == ("heun", {"x": 1})
    with pytest.raises(ValueError, match="budget"):
        resolve("auto", {}, None, None)


def test_data_spacing_is_uniform_in_log_snr_below_the_data_scale_and_geometric_above():
    sde = sde_lib.get("vp")
    dim = 64
    ts = time_grid(sde, 40, "data", dim=dim)
    lam = sde.log_snr(ts[:-1])
    lam_0 = -math.log(0.5 * math.sqrt(dim))
    assert ts[0] == sde.T and ts[-2] == sde.t_min and ts[-1] == 0
    steps = lam.diff()
    fine = steps[lam[1:] > lam_0 + 1e-9][1:]  # whole steps above lambda_0
    assert torch.allclose(fine, fine.mean().expand_as(fine), rtol=1e-6)
    coarse = (lam[lam < lam_0] / 2).exp().diff()  # exp(lambda/2) grows by equal amounts
    assert torch.allclose(coarse, coarse.mean().expand_as(coarse), rtol=1e-6)
    assert (steps[: len(coarse)] > fine.mean()).all()  # larger steps where the data is hidden
    u = torch.linspace(0, 1, 5, dtype=torch.float64)
    assert torch.allclose(data_log_snrs(1.0, 3.0, u, 0.0), 1.0 + 2 * u)  # all above: uniform
    with pytest.raises(ValueError, match="dim"):
        time_grid(sde, 10)


@pytest.mark.parametrize("sde_spec", ["vp", "ve:sigma_min=0.002,sigma_max=80"])
def test_data_spacing_beats_uniform_log_snr_at_few_steps(sde_spec):
    """The measured gain of the default grid (docs/fast-samplers.md: 3-6x on ring8 at 5-10
    NFE), checked at a 2x margin on exact scores."""
    from scoregen.sde.spec import from_spec

    mixture, sde = analytic.preset("ring8"), from_spec(sde_spec)
    x_T = sde.prior_std() * NoiseSource(seeds_for(32, 7), mixture.shape, torch.float64).draw(0)
    ref = pf_ode_endpoint(mixture, sde, x_T)
    for nfe in (5, 10):
        err = {spacing: float((scoregen.sample(mixture.model(sde), sde, x_T, "unipc", nfe,
                                               spacing=spacing).x - ref).norm(dim=1).median())
               for spacing in ("logsnr", "data")}
        assert err["data"] < 0.5 * err["logsnr"], (sde_spec, nfe, err)
