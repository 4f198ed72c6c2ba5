"""Objectives: the exact score attains the irreducible DSM loss; weightings; time sampling;
the registry and its options."""

from __future__ import annotations

import math

import pytest
import torch

import scoregen
from scoregen.data import load_dataset
from scoregen.models import ScoreModel, build_network
from scoregen.models.analytic import GaussianMixture
from scoregen.training.objectives import (
    OBJECTIVES,
    build_objective,
    eps_error,
    objective_options,
    random_batch,
)
from scoregen.training.objectives.ddpm import DDPMLoss
from scoregen.training.objectives.dsm import DSM, WEIGHTINGS, irreducible_gaussian

SDES = ["vp", "subvp", "ve", "vp-cosine"]


def _mc(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


@pytest.mark.parametrize("sde_name", SDES)
def test_exact_score_reaches_gaussian_floor(sde_name: str) -> None:
    """Data N(mu, s^2 I): the oracle's eps-MSE equals alpha^2 s^2 / (alpha^2 s^2 + sigma^2)."""
    sde = scoregen.sde.get(sde_name)
    s2 = 0.3
    gm = GaussianMixture(torch.tensor([[0.5, -0.2, 0.1]]), s2)
    oracle = gm.model(sde, "eps")
    g = torch.Generator().manual_seed(1)
    for t in (0.05, 0.3, 0.6):
        x0 = gm.sample(40_000, g)
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        tt = torch.full((len(x0),), t, dtype=torch.float64)
        mean, err = _mc(eps_error(oracle, x0, tt, eps))
        exact = float(irreducible_gaussian(sde.alpha(tt[0]), sde.sigma(tt[0]), s2))
        assert abs(mean - exact) < 4 * err + 1e-9, (t, mean, exact, err)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_exact_score_reaches_mixture_floor(sde_name: str) -> None:
    """Mixture: E||eps - E[eps|x_t]||^2 / D = E_x[sum_k r_k (v_k + |m_k|^2/D) - |sum_k r_k m_k|^2/D]
    with per-component posterior mean m_k and variance v_k (law of total variance)."""
    sde = scoregen.sde.get(sde_name)
    gm = scoregen.models.analytic.preset("ring8")
    s2 = float(gm.evals[0, 0])
    oracle = gm.model(sde, "eps")
    g = torch.Generator().manual_seed(2)
    t = torch.tensor(0.35, dtype=torch.float64) if sde_name == "vp" else torch.tensor(
        0.55, dtype=torch.float64)
    x0 = gm.sample(40_000, g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    loss, err = _mc(eps_error(oracle, x0, t.expand(len(x0)), eps))
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    x_t = alpha * x0 + sigma * eps
    r = gm.responsibilities(x_t, sde, t)  # (B, K)
    c = alpha**2 * s2 + sigma**2
    m = sigma * (x_t[:, None, :] - alpha * gm.means[None]) / c  # (B, K, D)
    v = 1 - sigma**2 / c
    per_x = (r * (v + (m**2).mean(-1))).sum(1) - (torch.einsum("bk,bkd->bd", r, m) ** 2).mean(-1)
    floor, _ = _mc(per_x)
    assert 0.05 < floor < 0.95
    assert abs(loss - floor) < 4 * err, (loss, floor, err)


def test_exact_score_minimises_the_loss() -> None:
    sde = scoregen.sde.get("vp")
    gm = scoregen.models.analytic.preset("ring8")
    oracle = gm.model(sde, "eps")

    class Scaled:
        prediction, sde_ = "eps", sde

        def __init__(self, k: float) -> None:
            self.k, self.sde = k, sde

        def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.k * oracle(x, t)

    g = torch.Generator().manual_seed(3)
    x0 = gm.sample(20_000, g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = 0.02 + 0.96 * torch.rand(len(x0), generator=g, dtype=torch.float64)
    best = eps_error(oracle, x0, t, eps).mean()
    for k in (0.9, 1.1):
        assert eps_error(Scaled(k), x0, t, eps).mean() > best


@pytest.mark.parametrize("sde_name", SDES)
def test_likelihood_weight_is_minus_twice_dlambda_dt(sde_name: str) -> None:
    sde = scoregen.sde.get(sde_name)
    t = torch.linspace(0.05, 0.9, 7, dtype=torch.float64).requires_grad_(True)
    (dlam,) = torch.autograd.grad(sde.log_snr(t).sum(), t)
    w = WEIGHTINGS.get("likelihood")(sde, t.detach(), 0.5)
    torch.testing.assert_close(w, -2 * dlam, rtol=1e-6, atol=1e-8)


def test_edm_weight_is_karras_lambda_on_x0_error() -> None:
    """w ||eps_hat - eps||^2 = (sigma_e^2 + sd^2)/(sigma_e sd)^2 ||x0_hat - x0||^2."""
    sde, sd = scoregen.sde.get("vp"), 0.5
    g = torch.Generator().manual_seed(4)
    x0, eps = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    t = torch.linspace(0.1, 0.9, 6)
    x0_hat = torch.randn(6, 2, generator=g)

    class Fixed:
        prediction = "x0"

        def __init__(self) -> None:
            self.sde = sde

        def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return x0_hat

    lhs = WEIGHTINGS.get("edm")(sde, t, sd) * eps_error(Fixed(), x0, t, eps)
    sigma_e = sde.sigma(t) / sde.alpha(t)
    rhs = (sigma_e**2 + sd**2) / (sigma_e * sd) ** 2 * ((x0_hat - x0) ** 2).mean(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("sde_name", "weighting"),
                         [("vp", "likelihood"), ("ve", "likelihood"), ("subvp", "edm")])
def test_importance_sampling_is_unbiased(sde_name: str, weighting: str) -> None:
    """E_q[w/(Z q) f(t)] = E_U[w f] / Z for a smooth f (here the Gaussian floor)."""
    sde = scoregen.sde.get(sde_name)
    loss = DSM(sde, weighting=weighting, t_sampling="importance")
    g = torch.Generator().manual_seed(5)
    t, w = loss.sample_t(400_000, g)
    assert (t >= sde.t_min).all() and (t <= sde.T).all()
    f = lambda s: irreducible_gaussian(sde.alpha(s), sde.sigma(s), 0.25)  # noqa: E731
    est = float((w * f(t)).mean())
    grid = torch.linspace(sde.t_min, sde.T, 200_001, dtype=torch.float64)
    wg = WEIGHTINGS.get(weighting)(sde, grid, 0.5)
    z = float(torch.trapezoid(wg, grid)) / (sde.T - sde.t_min)
    exact = float(torch.trapezoid(wg * f(grid), grid)) / (sde.T - sde.t_min) / z
    assert abs(est - exact) < 0.01 * exact
    assert abs(float(w.mean()) - 1) < 0.01  # weight ~ 1


def test_likelihood_importance_sampling_is_uniform_in_log_snr() -> None:
    sde = scoregen.sde.get("vp")
    t, _ = DSM(sde, weighting="likelihood", t_sampling="importance").sample_t(
        100_000, torch.Generator().manual_seed(6))
    lam = sde.log_snr(t)
    lo, hi = float(sde.log_snr(torch.tensor(sde.T))), float(sde.log_snr(torch.tensor(sde.t_min)))
    u = (lam - lo) / (hi - lo)
    qs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    torch.testing.assert_close(torch.quantile(u, qs), qs, atol=0.01, rtol=0)


def test_lognormal_sampling_follows_edm_p_train() -> None:
    sde = scoregen.sde.get("ve", sigma_min=1e-4, sigma_max=1e3)
    t, w = DSM(sde, weighting="edm", t_sampling="lognormal").sample_t(
        100_000, torch.Generator().manual_seed(7))
    log_sigma = sde.sigma(t).log()
    assert abs(float(log_sigma.mean()) + 1.2) < 0.02
    assert abs(float(log_sigma.std()) - 1.2) < 0.02
    torch.testing.assert_close(w, WEIGHTINGS.get("edm")(sde, t, 0.5))


def test_ddpm_loss_uses_integer_steps() -> None:
    sde = scoregen.sde.get("ddpm", n=50)
    seen = []

    class Recorder:
        prediction = "eps"

        def __init__(self) -> None:
            self.sde = sde

        def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            seen.append(t.clone())
            return torch.zeros_like(x)

    loss_fn = build_objective("auto", sde)
    assert isinstance(loss_fn, DDPMLoss)
    value = loss_fn(Recorder(), random_batch(torch.zeros(4000, 2, dtype=torch.float64), 8))
    steps = seen[0] * 50
    torch.testing.assert_close(steps, steps.round())
    assert int(steps.min()) == 1 and int(steps.max()) == 50
    assert abs(float(value) - 1) < 0.05  # predicting 0 costs E eps^2 = 1
    assert isinstance(build_objective("auto", scoregen.sde.get("vp")), DSM)
    with pytest.raises(ValueError, match="needs the 'ddpm' SDE"):
        build_objective("ddpm", scoregen.sde.get("vp"))


@pytest.mark.parametrize(("prediction", "weighting", "t_sampling"),
                         [("eps", "sigma2", "uniform"), ("edm", "edm", "lognormal"),
                          ("v", "likelihood", "importance")])
def test_loss_falls_on_a_toy_set(prediction: str, weighting: str, t_sampling: str) -> None:
    """Training with each loss at least halves the excess of the plain eps-MSE (uniform t) over
    its floor, the loss of the exact oracle of 8gaussians (the ring8 mixture, radius 0.8)."""
    torch.manual_seed(0)
    data = load_dataset("8gaussians", n=4000)
    sde = scoregen.sde.get("vp")
    model = ScoreModel(build_network("mlp", (2,), width=64, depth=2), sde, prediction)
    loss_fn = build_objective("dsm", sde, weighting=weighting, t_sampling=t_sampling)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    fixed = torch.Generator().manual_seed(99)
    eval_batch = random_batch(data[torch.randint(len(data), (4096,), generator=fixed)], 1)
    plain = build_objective("dsm", sde)

    def evaluate(m: object = model) -> float:
        with torch.no_grad():
            return float(plain(m, eval_batch))

    floor = evaluate(scoregen.models.analytic.ring8(radius=0.8, std=0.04).model(sde))

    before = evaluate()
    for step in range(200):
        x0 = data[torch.randint(len(data), (256,), generator=g)]
        loss = loss_fn(model, random_batch(x0, 0, step=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert after - floor < 0.5 * (before - floor), (before, after, floor)


# -- the shared suite: every registered objective on every SDE it applies to -------------------
def _objective_sde_pairs() -> list[tuple[str, str]]:
    pairs = []
    for name in OBJECTIVES.list():
        cls, meta = OBJECTIVES.get(name), OBJECTIVES.meta(name)
        if meta.get("model") == "classifier":  # trains a classifier: tests/test_classifier.py
            continue
        for sde_name in scoregen.sde.list():
            sde = scoregen.sde.get(sde_name)
            if cls.requires <= sde.capabilities and sde_name in meta.get("processes", (sde_name,)):
                pairs.append((name, sde_name))
    return pairs


class GaussianConsistency:
    """The exact consistency function of data ``N(mu, s^2 I)``: the probability-flow ODE keeps
    ``(x~ - mu) / sqrt(s^2 + sigma~^2)`` fixed, so ``f(x, t) = mu + sqrt((s^2 + sigma~_min^2) /
    (s^2 + sigma~(t)^2)) (x / alpha(t) - mu)``, the identity (in ``x~``) at ``t_min``."""

    prediction, consistency = "x0", True

    def __init__(self, mu: torch.Tensor, s2: float, sde, scale: float = 1.0) -> None:
        self.mu, self.s2, self.sde, self.scale = mu, s2, sde, scale
        t_min = torch.tensor(sde.t_min, dtype=torch.float64)
        self.sigma_min2 = float((sde.sigma(t_min) / sde.alpha(t_min)) ** 2)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).expand(len(x))
        alpha, sigma = self.sde.alpha(t)[:, None], self.sde.sigma(t)[:, None]
        k = torch.sqrt((self.s2 + self.sigma_min2) / (self.s2 + (sigma / alpha) ** 2))
        mu = self.mu.to(x)
        return (mu + self.scale * k.to(x) * (x / alpha.to(x) - mu)).to(x.dtype)


@pytest.mark.parametrize(("name", "sde_name"), _objective_sde_pairs())
def test_every_objective_prefers_the_exact_score_and_trains(name: str, sde_name: str) -> None:
    """With the same batch (common random numbers) the exact model of Gaussian data scores
    below the exact model with a 10 % error; the loss is a finite, reproducible scalar whose
    gradient reaches every parameter of a small network.

    The exact model follows the objective's registration: the oracle's eps prediction (its
    ``teacher`` too, for distillation objectives), the exact consistency function for a
    ``student="consistency"`` objective, the oracle under independent pairs ``(x0, z)`` (the
    first rectified flow) for ``data="pairs"``."""
    sde = scoregen.sde.get(sde_name)
    meta = OBJECTIVES.meta(name)
    try:
        sde.state_shape((2,))
        shape = (2,)
    except ValueError:  # a process on images
        shape = (1, 1, 2)
    mu, s2 = torch.tensor([[0.3, -0.5]]), 0.2
    mix = GaussianMixture(mu, s2, shape=shape)
    oracle = mix.model(sde)
    objective = build_objective(name, sde, teacher=oracle if meta.get("teacher") else None)

    class Off:
        prediction = "eps"

        def __init__(self) -> None:
            self.sde = sde

        def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return 1.1 * oracle(x, t)

    exact, off = oracle, Off()
    if meta.get("student") == "consistency":
        exact = GaussianConsistency(mu[0].double(), s2, sde)
        off = GaussianConsistency(mu[0].double(), s2, sde, scale=1.1)
    g = torch.Generator().manual_seed(0)
    x0 = mix.sample(8192, g)
    if meta.get("data") == "pairs":
        x0 = torch.stack([x0, torch.randn(x0.shape, generator=g, dtype=x0.dtype)], 1)
    batch = random_batch(x0, 1, sde=sde)
    best = objective(exact, batch)
    assert best.ndim == 0 and torch.isfinite(best)
    assert float(objective(exact, batch)) == float(best)
    assert float(objective(off, batch)) > float(best)
    torch.manual_seed(0)
    prediction = "consistency-eps" if meta.get("student") == "consistency" else "eps"
    state = sde.state_shape(shape)
    net = build_network("mlp", shape, width=8, depth=1,
                        **({"in_shape": list(state)} if state != shape else {}))
    model = ScoreModel(net, sde, prediction).double().train()
    objective.bind(model)
    objective(model, random_batch(batch.x0[:64], 2, sde=sde)).backward()
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_options_come_from_the_signature_and_unknown_ones_are_refused() -> None:
    assert objective_options("dsm") == {"weighting": "sigma2", "t_sampling": "uniform",
                                        "p_mean": -1.2, "p_std": 1.2, "offset_noise": 0.0,
                                        "dequantize": 0.0}
    with pytest.raises(ValueError, match="no option 'gamma'; its options: weighting"):
        build_objective("dsm", scoregen.sde.get("vp"), gamma=1.0)
    with pytest.raises(KeyError, match=r"known objectives: classifier, .*ddpm, dsm"):
        build_objective("nope", scoregen.sde.get("vp"))


def test_auto_is_the_process_own_objective_and_dsm_refuses_scalar_choices_elsewhere() -> None:
    from scoregen.training.objectives import resolve_name

    assert [resolve_name("auto", scoregen.sde.get(n)) for n in ("vp", "ddpm", "cld", "vdm",
                                                               "blur")] == [
        "dsm", "ddpm", "hsm", "vdm", "dsm"]
    with pytest.raises(ValueError, match="scalar_kernel"):
        build_objective("dsm", scoregen.sde.get("blur"), weighting="likelihood")
    with pytest.raises(ValueError, match="damped_langevin"):
        build_objective("hsm", scoregen.sde.get("vp"))
    with pytest.raises(ValueError, match="dequantize must be 0"):
        build_objective("vdm", scoregen.sde.get("vp"), dequantize=1)


def test_offset_noise_adds_one_constant_per_channel() -> None:
    """eps' - eps is constant over each image channel, N(0, c^2) across examples and channels,
    independent of eps, the same for the same batch; c = 0 leaves the loss unchanged."""
    sde = scoregen.sde.get("vp")
    batch = random_batch(torch.zeros(4000, 3, 4, 4), 3)
    offset = DSM(sde, offset_noise=0.2).noise(batch) - batch.eps
    assert torch.allclose(offset, offset[:, :, :1, :1].expand_as(offset), atol=1e-6)
    per_channel = offset[:, :, 0, 0]
    assert abs(float(per_channel.std()) - 0.2) < 0.01 and abs(float(per_channel.mean())) < 0.01
    assert abs(float(torch.corrcoef(torch.stack([per_channel[:, 0], per_channel[:, 1]]))[0, 1])
               ) < 0.05
    assert torch.equal(DSM(sde, offset_noise=0.2).noise(batch), batch.eps + offset)
    vectors = random_batch(torch.zeros(8, 5), 3)
    shift = DSM(sde, offset_noise=0.2).noise(vectors) - vectors.eps
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-6)
    assert DSM(sde).noise(batch) is batch.eps
    with pytest.raises(ValueError, match="offset_noise must be >= 0"):
        DSM(sde, offset_noise=-0.1)


def test_dequantization_spreads_each_value_uniformly_over_its_bin() -> None:
    """With dequantize = d the model sees x0 + d (u - 1/2): recorded inputs at t -> 0 are
    uniform on [x0 - d/2, x0 + d/2] (mean x0, variance d^2 / 12)."""
    sde = scoregen.sde.get("vp")
    seen = []

    class Recorder:
        prediction = "x0"

        def __init__(self) -> None:
            self.sde = sde

        def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return torch.zeros_like(x)

    batch = random_batch(torch.zeros(20000, 4, dtype=torch.float64), 1)
    batch.eps = torch.zeros_like(batch.eps)  # x_t = alpha x0: the dequantized data themselves
    DSM(sde, dequantize=0.125)(Recorder(), batch)
    t, _ = DSM(sde).sample_t(20000, u=batch.u)
    x0 = seen[0] / sde.alpha(t)[:, None]
    assert float(x0.abs().max()) <= 0.0625 + 1e-9
    assert abs(float(x0.var()) - 0.125**2 / 12) < 0.02 * 0.125**2 / 12
    with pytest.raises(ValueError, match="dequantize must be >= 0"):
        DSM(sde, dequantize=-1.0)
