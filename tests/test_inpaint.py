"""Inpainting: one mechanism for every sampler, judged against the closed-form conditional."""

from __future__ import annotations

import pytest
import torch
from _oracle import samplers_for

import scoregen
from scoregen import samplers
from scoregen import sde as sde_lib
from scoregen.models import analytic
from scoregen.sampling.inpaint import inpaint, region_mask

RING = analytic.preset("ring8")
MIX16 = analytic.preset("mix16")
# a correlated Gaussian: x2 | x1 = 0.5 is N(0.45, 0.0475)
CORR = analytic.GaussianMixture(torch.zeros(1, 2), torch.tensor([[[1.0, 0.9], [0.9, 1.0]]]) / 4)
KNOWN = torch.tensor([0.5, 0.0], dtype=torch.float64)
MASK = torch.tensor([True, False])


def test_condition_is_the_exact_conditional_density():
    g = torch.Generator().manual_seed(0)
    x = MIX16.sample(64, g)
    mask = torch.arange(16) % 3 == 0
    marginal = analytic.GaussianMixture(MIX16.means[:, mask],
                                        MIX16.covariances()[:, mask][:, :, mask], MIX16.weights)
    for i in range(3):
        cond = MIX16.condition(x[i], mask)
        u = x[:, ~mask]
        joint = torch.cat([x[i, mask].expand(64, -1), u], 1)
        order = torch.cat([torch.nonzero(mask)[:, 0], torch.nonzero(~mask)[:, 0]])
        full = torch.empty_like(joint)
        full[:, order] = joint
        expected = MIX16.log_prob(full) - marginal.log_prob(x[i:i + 1, mask])
        torch.testing.assert_close(cond.log_prob(u), expected, rtol=1e-9, atol=1e-9)
    gauss = CORR.condition(KNOWN, MASK)
    torch.testing.assert_close(gauss.means, torch.tensor([[0.45]], dtype=torch.float64))
    torch.testing.assert_close(gauss.covariances(), torch.tensor([[[0.0475]]],
                                                                 dtype=torch.float64))


@pytest.mark.parametrize("name", samplers_for("vp"))
def test_every_sampler_keeps_the_known_coordinates(name):
    sde = sde_lib.get("vp")
    known = RING.sample(8, torch.Generator().manual_seed(1))
    if samplers.meta(name)["nfe_per_step"] is None:
        # one noise draw keeps the right-hand side smooth for the step-size control (fresh
        # draws make ode_dopri5 take thousands of steps); the known values are kept either way
        ts = torch.tensor([sde.T, sde.t_min, 0.0], dtype=torch.float64)
        res = inpaint(RING.model(sde), sde, known, MASK, name, None, ts=ts, known_noise="fixed")
    else:
        res = inpaint(RING.model(sde), sde, known, MASK, name, 6)
    assert torch.isfinite(res.x).all()
    assert torch.equal(res.x[:, 0], known[:, 0])
    assert res.nfe > 0


@pytest.mark.parametrize("name", ["ancestral", "ddim", "dpm_solver++"])
def test_independent_coordinates_are_imputed_exactly(name):
    """With independent coordinates the unknown one is sampled as if nothing were known:
    the same numbers as plain sampling from the same seeds."""
    sde = sde_lib.get("vp")
    diag = analytic.GaussianMixture(torch.tensor([[0.3, -0.2]]), torch.tensor([[0.04, 0.09]]))
    n = 200
    res = inpaint(diag.model(sde), sde, KNOWN.expand(n, 2), MASK, name, 12)
    plain = scoregen.sample(diag.model(sde), sde, (n, 2), name, 12, dtype=torch.float64)
    torch.testing.assert_close(res.x[:, 1], plain.x[:, 1], rtol=0, atol=1e-12)


def test_replacement_is_biased_and_repaint_reduces_the_bias():
    """Against x2 | x1 = 0.5 ~ N(0.45, 0.0475): replacement lands far off; RePaint closer."""
    sde = sde_lib.get("vp")
    n = 1000
    known = KNOWN.expand(n, 2)
    plain = inpaint(CORR.model(sde), sde, known, MASK, "ancestral", 20).x[:, 1]
    repaint = inpaint(CORR.model(sde), sde, known, MASK, "ancestral", 20, resample=6).x[:, 1]
    exact = CORR.condition(KNOWN, MASK)
    bias_plain = abs(float(plain.mean()) - 0.45)
    bias_repaint = abs(float(repaint.mean()) - 0.45)
    assert bias_plain > 0.08  # the known bias of replacement, at this noise level
    assert bias_repaint < bias_plain / 2
    nll = [float(-exact.log_prob(u[:, None]).mean()) for u in (plain, repaint)]
    assert nll[1] < nll[0]


def test_masks_and_bad_input():
    m = region_mask("right-half", (1, 8, 8))
    assert m[..., 4:].all() and not m[..., :4].any()
    assert region_mask("center", (1, 8, 8)).sum() == 16
    sde = sde_lib.get("vp")
    known = RING.sample(4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"mask of shape \(3,\) does not match"):
        inpaint(RING.model(sde), sde, known, torch.tensor([True, False, True]), "ddim", 4)
    with pytest.raises(ValueError, match="no coordinate"):
        inpaint(RING.model(sde), sde, known, torch.tensor([False, False]), "ddim", 4)
    with pytest.raises(KeyError):
        region_mask("left-third", (2,))
    with pytest.raises(ValueError, match="resample"):
        inpaint(RING.model(sde), sde, known, MASK, "ddim", 4, resample=0)
