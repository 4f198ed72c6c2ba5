"""iPNDM (``scoregen/samplers/ipndm.py``): its order on exact scores, its Adams weights, and
the identities that pin it down (order 1 is DDIM; on a grid uniform in ``sigma~`` the
variable-step weights are the published constant ones)."""

from __future__ import annotations

import math

import pytest
import torch
from _oracle import smooth_reference

import scoregen
from scoregen import sde as sde_lib
from scoregen.models.analytic import preset
from scoregen.samplers.ipndm import _AB, adams_weights
from scoregen.sampling.grid import time_grid

F64 = torch.float64
STEPS = (20, 40, 80)


@pytest.fixture(scope="module")
def smooth():
    """:func:`_oracle.smooth_reference`: VP, ring8 (std 0.3), 24 starts, a dopri5 reference."""
    return smooth_reference()


def _errors(smooth, opts, steps=STEPS):
    sde, model, x_T, ref = smooth
    return [float((scoregen.sample(model, sde, x_T, "ipndm", ts=time_grid(sde, n, "logsnr",
                                                                         denoise=False),
                                   **opts).x - ref).pow(2).mean().sqrt()) for n in steps]


def _slope(steps, errors):
    u = torch.tensor([math.log(n) for n in steps], dtype=F64)
    v = torch.tensor([-math.log(e) for e in errors], dtype=F64)
    u = u - u.mean()
    return float((u * (v - v.mean())).sum() / (u * u).sum())


@pytest.mark.parametrize(("opts", "low", "high"), [
    ({"order": 1}, 0.9, 1.3),
    ({"order": 2}, 1.7, 2.3),
    # the lower-order warm-up steps fade slowly: slopes per doubling 2.46, 2.71, 2.85 (order
    # 3) and 3.03, 3.48, 3.74 (order 4) from 20 to 160 steps
    ({"order": 3}, 2.4, 3.3),
    ({}, 3.0, 4.3),
])
def test_error_falls_at_its_order(smooth, opts, low, high):
    errors = _errors(smooth, opts)
    assert errors[0] > errors[1] > errors[2]
    assert low < _slope(STEPS, errors) < high, errors


def test_constant_weights_lose_the_order_on_a_non_uniform_grid(smooth):
    """The published constant weights assume equal steps in sigma~; on the log-SNR grid
    (steps in sigma~ shrinking geometrically) they are second order only, the variable-step
    weights keep order 4 and overtake them."""
    fixed = _errors(smooth, {"variable_step": False}, (40, 80, 160))
    variable = _errors(smooth, {}, (160,))[0]
    assert 1.7 < _slope((40, 80, 160), fixed) < 2.3, fixed
    assert variable < 0.2 * fixed[-1]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_adams_weights_integrate_polynomials_exactly(k):
    g = torch.Generator().manual_seed(k)
    sigmas = sorted((torch.rand(k, generator=g, dtype=F64) * 3 + 1).tolist(), reverse=False)
    sigmas = [5.0 + 0.7 * j + 0.1 * s for j, s in enumerate(sigmas)]  # newest first: ascending
    target = sigmas[0] - 1.3
    coef = torch.randn(k, generator=g, dtype=F64)

    def poly(s):
        return sum(float(c) * s**m for m, c in enumerate(coef))

    def integral(a, b):
        return sum(float(c) * (b ** (m + 1) - a ** (m + 1)) / (m + 1) for m, c in enumerate(coef))

    b = adams_weights(sigmas, target)
    approx = (target - sigmas[0]) * sum(bj * poly(s) for bj, s in zip(b, sigmas, strict=True))
    assert approx == pytest.approx(integral(sigmas[0], target), rel=1e-10)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_variable_weights_on_equal_steps_are_the_published_ones(k):
    sigmas = [3.0 + 0.5 * j for j in range(k)]  # newest first, equal steps of 0.5
    assert adams_weights(sigmas, 2.5) == pytest.approx(list(_AB[k]), rel=1e-12)


def test_order_1_is_ddim_and_one_evaluation_per_step():
    """Euler on dx~/dsigma~ = eps_hat is exactly DDIM (Song et al. 2021, eq. 14)."""
    sde = sde_lib.get("vp")
    model = preset("ring8").model(sde)
    a = scoregen.sample(model, sde, (64, 2), "ipndm", 9, dtype=F64, order=1, seed=3)
    b = scoregen.sample(model, sde, (64, 2), "ddim", 9, dtype=F64, seed=3)
    torch.testing.assert_close(a.x, b.x, rtol=1e-10, atol=1e-10)
    assert scoregen.sample(model, sde, (4, 2), "ipndm", 9, dtype=F64).nfe == 9


@pytest.mark.parametrize(("opts", "match"), [({"order": 5}, "order"),
                                             ({"variable_step": 1}, "variable_step")])
def test_bad_options_give_clear_errors(opts, match):
    sde = sde_lib.get("vp")
    with pytest.raises(ValueError, match=match):
        scoregen.sample(preset("ring8").model(sde), sde, (2, 2), "ipndm", 5, **opts)
