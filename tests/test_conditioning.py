"""Conditioning and guidance against the exact class-conditional Gaussian-mixture oracle.

For every registered sampler on VP and VE: classifier-free guidance at scale 1 and
classifier guidance at scale 1 (exact noisy classifier) reproduce exact conditional sampling
(the mixture restricted to the class) to float64 precision, scale 0 reproduces unconditional
sampling, and the exact class probability of the samples rises with the scale above 1.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from _oracle import samplers_for

import scoregen
from scoregen import samplers
from scoregen import sde as sde_lib
from scoregen.models import analytic
from scoregen.sampling.guidance import Guidance, dynamic_threshold, guide
from scoregen.sampling.noise import seeds_for

SDES = ("vp", "ve")
SAMPLERS = samplers_for("vp")  # vp and ve offer the same capabilities

# ring8 with two classes of four components each (alternating), unequal weights
RING = analytic.preset("ring8")
MIX = analytic.GaussianMixture(RING.means, 0.01, torch.arange(1, 9, dtype=torch.float64),
                               labels=torch.arange(8) % 2)
# two overlapping classes in 2-D: the Bayes accuracy is well below 1, so guidance shows
OVERLAP = analytic.GaussianMixture(torch.tensor([[-0.3, 0.0], [0.3, 0.0], [0.0, 0.5]]),
                                   torch.tensor([[0.1, 0.1], [0.1, 0.1], [0.05, 0.05]]),
                                   labels=torch.tensor([0, 1, 1]))


def is_adaptive(name: str) -> bool:
    return samplers.meta(name)["nfe_per_step"] is None


def draw(name, model, sde, n, seeds=None, steps=8, tol=1e-3, **kw):
    if is_adaptive(name):
        if samplers.meta(name)["stochastic"]:
            tol = 0.2  # strong order 1/2: its NFE grow like tol^-2
        ts = torch.tensor([sde.T, sde.t_min, 0.0], dtype=torch.float64)
        opts = dict.fromkeys(samplers.meta(name).get("tolerance_options", ("rtol", "atol")), tol)
        return scoregen.sample(model, sde, (n, 2), name, None, ts=ts, seeds=seeds,
                               dtype=torch.float64, **opts, **kw)
    return scoregen.sample(model, sde, (n, 2), name, steps, seeds=seeds, dtype=torch.float64,
                           **kw)


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("name", SAMPLERS)
def test_guidance_identities_on_the_exact_oracle(name, sde_name):
    sde = sde_lib.get(sde_name)
    model, n, y = MIX.model(sde), 24, 1
    seeds = seeds_for(n, 11)
    exact = draw(name, MIX.restrict(y).model(sde), sde, n, seeds).x
    cfg = draw(name, model, sde, n, seeds, cond=y, guidance=1.0).x
    clf = draw(name, model, sde, n, seeds, cond=y, guidance=1.0,
               classifier=MIX.classifier(sde)).x
    uncond = draw(name, model, sde, n, seeds).x
    cfg0 = draw(name, model, sde, n, seeds, cond=y, guidance=0.0).x
    clf0 = draw(name, model, sde, n, seeds, cond=y, guidance=0.0,
                classifier=MIX.classifier(sde)).x
    assert torch.isfinite(exact).all()
    torch.testing.assert_close(cfg, exact, rtol=0, atol=1e-9)
    torch.testing.assert_close(clf, exact, rtol=0, atol=1e-6)
    torch.testing.assert_close(cfg0, uncond, rtol=0, atol=1e-12)
    torch.testing.assert_close(clf0, uncond, rtol=0, atol=1e-12)
    assert (exact - uncond).abs().max() > 0.1  # the condition matters


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("name", SAMPLERS)
def test_class_probability_rises_with_the_guidance_scale(name, sde_name):
    sde = sde_lib.get(sde_name)
    model, n = OVERLAP.model(sde), 256
    labels = torch.arange(n) % 2
    probs = []
    for w in (1.0, 2.0, 4.0, 8.0):
        x = draw(name, model, sde, n, steps=20, tol=1e-2, cond=labels, guidance=w).x
        assert torch.isfinite(x).all()
        logp = OVERLAP.class_log_probs(x)  # exact data-space classifier p(y | x)
        probs.append(float(logp.gather(1, labels[:, None]).exp().mean()))
    assert all(b > a for a, b in itertools.pairwise(probs)), probs
    assert probs[0] < 0.9 < probs[-1], probs


def test_mixed_labels_match_per_class_exact_sampling():
    sde = sde_lib.get("vp")
    n = 16
    labels = torch.tensor([0, 1] * 8)
    seeds = seeds_for(n, 3)
    cfg = draw("dpm_solver++", MIX.model(sde), sde, n, seeds, cond=labels).x
    for c in (0, 1):
        rows = labels == c
        exact = draw("dpm_solver++", MIX.restrict(c).model(sde), sde, int(rows.sum()),
                     seeds[rows]).x
        torch.testing.assert_close(cfg[rows], exact, rtol=0, atol=1e-9)


def test_exact_classifier_gradient_is_the_score_difference():
    sde = sde_lib.get("ve")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 2, generator=g, dtype=torch.float64)
    t = torch.rand(32, generator=g, dtype=torch.float64) * 0.9 + 0.05
    y = torch.randint(0, 2, (32,), generator=g)
    xg = x.clone().requires_grad_(True)
    logp = MIX.class_log_probs(xg, sde, t).gather(1, y[:, None]).sum()
    (grad,) = torch.autograd.grad(logp, xg)
    diff = MIX.score(x, sde, t, cond=y) - MIX.score(x, sde, t)
    torch.testing.assert_close(grad, diff, rtol=1e-9, atol=1e-9)
    # p_t(y | x) sums to one over classes and is the summed responsibilities
    p = MIX.class_log_probs(x, sde, t).exp()
    torch.testing.assert_close(p.sum(1), torch.ones(32, dtype=torch.float64))


class Recorder:
    """An oracle that records the batch size of every call."""

    def __init__(self, model):
        self.model, self.prediction, self.sde = model, model.prediction, model.sde
        self.num_classes, self.rows = model.num_classes, []

    def __call__(self, x, t, cond=None):
        self.rows.append(x.shape[0])
        return self.model(x, t, cond)


def test_cfg_is_one_batched_call_with_the_guidance_formula():
    sde = sde_lib.get("vp")
    rec = Recorder(MIX.model(sde, prediction="x0"))
    n, w = 8, 3.0
    res = scoregen.sample(rec, sde, (n, 2), "ddim", 6, cond=1, guidance=w, dtype=torch.float64)
    assert rec.rows == [2 * n] * res.nfe and res.nfe == 6
    assert res.info["network_rows_per_sample"] == 2 * res.nfe
    # the combination eps_u + w (eps_c - eps_u), checked at one point
    x = torch.randn(n, 2, dtype=torch.float64)
    t = torch.full((n,), 0.4, dtype=torch.float64)
    guided = guide(MIX.model(sde), torch.ones(n, dtype=torch.long), w)
    eps_c = MIX.denoise(x, sde, t, torch.ones(n, dtype=torch.long)).eps
    eps_u = MIX.denoise(x, sde, t).eps
    torch.testing.assert_close(guided.predict_pair(x, t).eps, eps_u + w * (eps_c - eps_u))


def test_guidance_interval():
    sde = sde_lib.get("vp")
    model, n = MIX.model(sde), 16
    plain = draw("ddim", model, sde, n, cond=0, guidance=1.0).x
    w4 = draw("ddim", model, sde, n, cond=0, guidance=4.0).x
    outside = draw("ddim", model, sde, n, cond=0, guidance=4.0, guidance_interval=(2.0, 3.0)).x
    everywhere = draw("ddim", model, sde, n, cond=0, guidance=4.0,
                      guidance_interval=(0.0, 1.0)).x
    middle = draw("ddim", model, sde, n, cond=0, guidance=4.0, guidance_interval=(0.2, 0.6)).x
    torch.testing.assert_close(outside, plain)
    torch.testing.assert_close(everywhere, w4)
    assert (middle - plain).abs().max() > 1e-4 and (middle - w4).abs().max() > 1e-4


def test_dynamic_thresholding():
    g = torch.Generator().manual_seed(0)
    x0 = 3 * torch.randn(64, 1, 4, 4, generator=g)
    out = dynamic_threshold(x0, 0.9)
    assert out.abs().max() <= 1 + 1e-6
    s = torch.quantile(x0.abs().flatten(1), 0.9, dim=1)
    torch.testing.assert_close(out[0], x0[0].clamp(-s[0], s[0]) / s[0])
    inside = torch.rand(8, 5, generator=g) * 1.8 - 0.9  # |x0| <= 1: unchanged
    torch.testing.assert_close(dynamic_threshold(inside, 0.995), inside)
    # through sampling: x0_hat stays in [-1, 1], so the final denoised sample does too
    sde = sde_lib.get("vp")
    wide = analytic.GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.04)
    res = scoregen.sample(wide.model(sde), sde, (64, 2), "ddim", 10, threshold=0.995,
                          dtype=torch.float64)
    assert res.x.abs().max() <= 1 + 1e-9


class Unconditional:
    def __init__(self, model):
        self.model, self.prediction, self.sde = model, model.prediction, model.sde

    def __call__(self, x, t):
        return self.model(x, t)


def test_bad_conditioning_input_gets_clear_errors():
    sde = sde_lib.get("vp")
    model = MIX.model(sde)
    with pytest.raises(ValueError, match=r"label 2 is outside \[0, 2\)"):
        scoregen.sample(model, sde, (4, 2), "ddim", 3, cond=torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="outside"):
        scoregen.sample(model, sde, (4, 2), "ddim", 3, cond=-1)
    with pytest.raises(ValueError, match="shape \\(4,\\)"):
        scoregen.sample(model, sde, (4, 2), "ddim", 3, cond=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="guidance on an unconditional model"):
        scoregen.sample(Unconditional(model), sde, (4, 2), "ddim", 3, cond=0, guidance=2.0)
    with pytest.raises(ValueError, match="not class-conditional"):
        scoregen.sample(Unconditional(model), sde, (4, 2), "ddim", 3, cond=0)
    with pytest.raises(ValueError, match="needs labels"):
        scoregen.sample(model, sde, (4, 2), "ddim", 3, guidance=2.0)
    with pytest.raises(ValueError, match="scale must be"):
        Guidance(scale=-1.0)
    with pytest.raises(ValueError, match="scale must be"):
        Guidance(scale=math.nan)
    with pytest.raises(ValueError, match="quantile"):
        Guidance(threshold=1.5)
