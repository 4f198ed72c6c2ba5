"""Post-hoc EMA (EDM2): the width formula, the profile inner products, the power EMA as an
integral of its profile, and reconstruction from snapshots against an EMA tracked directly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import scoregen
from scoregen.cli import main as cli_main
from scoregen.data import load_dataset
from scoregen.models import ScoreModel, build_network
from scoregen.training import Trainer, TrainOptions
from scoregen.training.checkpoint import load_model, read_checkpoint
from scoregen.training.objectives import build_objective
from scoregen.training.posthoc_ema import (
    PowerEMA,
    gamma_from_sigma_rel,
    profile_dot,
    reconstruct,
    sigma_rel_from_gamma,
    snapshots,
    solve_coefficients,
)


def test_gamma_and_sigma_rel_invert_each_other() -> None:
    for s in (0.01, 0.05, 0.1, 0.2, 0.28):
        g = gamma_from_sigma_rel(s)
        assert g > 0 and sigma_rel_from_gamma(g) == pytest.approx(s, rel=1e-12)
    assert gamma_from_sigma_rel(0.05) == pytest.approx(16.97, abs=0.01)  # EDM2, sec. 3.1
    with pytest.raises(ValueError, match="sigma_rel must lie in"):
        gamma_from_sigma_rel(0.3)


def test_profile_inner_product_matches_quadrature() -> None:
    s = torch.linspace(0, 3, 600_001, dtype=torch.float64)

    def p(t: float, g: float) -> torch.Tensor:
        return torch.where(s <= t, (g + 1) * s**g / t ** (g + 1), torch.zeros_like(s))

    for t_a, g_a, t_b, g_b in ((1.0, 3.0, 2.5, 7.0), (2.0, 0.5, 1.2, 12.0), (1.5, 2.0, 1.5, 2.0)):
        exact = float(profile_dot(torch.tensor(t_a), torch.tensor(g_a), torch.tensor(t_b),
                                  torch.tensor(g_b)))
        quad = float(torch.trapezoid(p(t_a, g_a) * p(t_b, g_b), s))
        assert exact == pytest.approx(quad, rel=1e-3)


def test_power_ema_is_the_integral_of_its_profile() -> None:
    """Weights theta_k = k: the recursion gives sum_k (k^(g+1) - (k-1)^(g+1)) k / t^(g+1)."""
    param = torch.nn.Linear(1, 1, bias=False)
    ema = PowerEMA(param, [0.1])
    g = ema.gammas[0]
    t = 500
    for k in range(1, t + 1):
        with torch.no_grad():
            param.weight.fill_(float(k))
        ema.update(param, k)
    k = torch.arange(1, t + 1, dtype=torch.float64)
    expected = float(((k ** (g + 1) - (k - 1) ** (g + 1)) * k).sum() / t ** (g + 1))
    assert float(ema.averages[0].weight) == pytest.approx(expected, rel=1e-5)


def test_reconstruction_from_snapshots_matches_a_directly_tracked_width(tmp_path: Path
                                                                         ) -> None:
    """Snapshots of widths 0.05 and 0.10 every 100 of 3000 steps of a noisy drifting parameter
    reconstruct the EMA of width 0.07 tracked directly to 1e-3 (the two snapshot widths differ
    by 40 % of its size), and a tracked width returns its own snapshot."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    tracked = PowerEMA(net, [0.05, 0.1])
    direct = PowerEMA(net, [0.07])
    for k in range(1, 3001):
        with torch.no_grad():
            for i, p in enumerate(net.parameters()):
                phase = torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape)
                p.copy_(torch.sin(0.3 * phase + k / 400 + i) + 0.3 * torch.randn(p.shape))
        tracked.update(net, k)
        direct.update(net, k)
        if k % 100 == 0:
            tracked.save_snapshot(tmp_path, k)
    assert len(snapshots(tmp_path)) == 30
    state, info = reconstruct(tmp_path, 0.07)
    want = direct.averages[0].state_dict()
    spread = (tracked.averages[0].weight - tracked.averages[1].weight).norm()
    for key, value in want.items():
        err = (state[key].float() - value).norm() / value.norm()
        assert err < 1e-3, (key, float(err))
    assert spread / want["weight"].norm() > 0.3
    assert info["step"] == 3000 and info["fit_error"] < 0.01
    own, _ = reconstruct(tmp_path, 0.1)
    torch.testing.assert_close(own["weight"].float(), tracked.averages[1].weight,
                               rtol=1e-5, atol=1e-6)


def test_least_squares_reproduces_a_profile_in_the_basis() -> None:
    x = solve_coefficients([50.0, 100.0, 100.0], [5.0, 5.0, 9.0], 100.0, 9.0)
    torch.testing.assert_close(x, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
                               atol=1e-9, rtol=0)


def _tiny_run(tmp_path: Path, steps: int, resume: bool = False) -> Trainer:
    torch.manual_seed(0)
    sde = scoregen.sde.get("vp")
    model = ScoreModel(build_network("mlp", (2,), width=8, depth=1), sde)
    opts = TrainOptions(steps=steps, batch_size=16, ckpt_every=10, sample_every=0,
                        progress=False, ema_sigma_rel=[0.05, 0.1], ema_snapshot_every=5)
    tr = Trainer(model, load_dataset("moons", n=200), build_objective("dsm", sde), opts,
                 tmp_path)
    if resume:
        tr.resume(tmp_path)
    tr.fit()
    return tr


def test_trainer_tracks_snapshots_resumes_them_and_scoregen_ema_writes_a_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = _tiny_run(tmp_path / "whole", 20)
    _tiny_run(tmp_path / "split", 10)
    split = _tiny_run(tmp_path / "split", 20, resume=True)
    assert [s for s, _ in snapshots(tmp_path / "split")] == [5, 10, 15, 20]
    for a, b in zip(whole.phema.averages, split.phema.averages, strict=True):
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(pa, pb)
    run = tmp_path / "whole"
    assert cli_main(["ema", str(run), "--sigma-rel", "0.08,0.15"]) == 0
    assert "sigma_rel 0.08" in capsys.readouterr().out
    model = load_model(run / "ema" / "sigma_rel_0.150")
    ckpt = read_checkpoint(run / "ema" / "sigma_rel_0.150")
    assert ckpt.meta["posthoc_ema"]["sigma_rel"] == 0.15 and ckpt.step == 20
    state, _ = reconstruct(run, 0.15)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key].to(value.dtype))
    res = scoregen.sample(model, model.sde, (8, 2), "ddim", 5)
    assert torch.isfinite(res.x).all()


def test_scoregen_ema_needs_snapshots(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    assert cli_main(["ema", str(tmp_path), "--sigma-rel", "0.1"]) != 0
    assert "train.ema_sigma_rel" in capsys.readouterr().err
