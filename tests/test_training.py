"""Trainer: a short toy run learns the distribution; schedule, EMA, NaN stop, devices."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import scoregen
from scoregen.data import load_dataset
from scoregen.models import ScoreModel, build_network
from scoregen.sde import get as get_sde
from scoregen.training import (
    LOG_FIELDS,
    Trainer,
    TrainingDivergedError,
    TrainOptions,
    resolve_device,
    resolve_precision,
)
from scoregen.training.checkpoint import find_checkpoint, load_model
from scoregen.training.objectives import build_objective

VP = get_sde("vp")


def sliced_w2(x: torch.Tensor, y: torch.Tensor, n_proj: int = 64, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between equal-size point clouds (sorted projections)."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(x.shape[1], n_proj, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=0)
    px, py = (x.double() @ d).sort(0).values, (y.double() @ d).sort(0).values
    return math.sqrt(float(((px - py) ** 2).mean()))


def _model(width: int = 64, depth: int = 2, sde: str = "vp") -> ScoreModel:
    torch.manual_seed(0)
    return ScoreModel(build_network("mlp", (2,), width=width, depth=depth), scoregen.sde.get(sde))


def test_short_toy_run_learns_the_distribution(tmp_path: Path) -> None:
    data = load_dataset("8gaussians", n=10_000)
    test = load_dataset("8gaussians", "test", n=1000)
    opts = TrainOptions(steps=600, batch_size=256, lr=3e-3, warmup=20, ema_decay=0.99,
                        log_every=100, ckpt_every=0, sample_every=0, progress=False)
    result = Trainer(_model(), data, build_objective("dsm", VP), opts, tmp_path).fit()
    model = load_model(tmp_path)
    x = scoregen.sample(model, model.sde, (1000, 2), "ddim", 40, seed=1).x
    prior = torch.randn(1000, 2, generator=torch.Generator().manual_seed(2))
    d_model, d_prior = sliced_w2(x, test), sliced_w2(prior, test)
    d_floor = sliced_w2(load_dataset("8gaussians", "test", n=1000, seed=7), test)
    assert d_model < 0.25 * d_prior, (d_model, d_prior)
    assert d_model < 6 * d_floor + 0.02, (d_model, d_floor)
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].split(",") == list(LOG_FIELDS) and len(rows) == 7
    assert result.step == 600 and result.examples_per_s > 0


def test_lr_warmup_then_constant() -> None:
    tr = Trainer(_model(8, 1), torch.zeros(4, 2), build_objective("dsm", VP),
                 TrainOptions(lr=1e-2, warmup=4, progress=False))
    assert [tr.lr_at(s) for s in range(6)] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2,
                                                            1e-2])


def test_ema_update_formula() -> None:
    data = load_dataset("moons", n=500)
    tr = Trainer(_model(8, 1), data, build_objective("dsm", VP),
                 TrainOptions(ema_decay=0.999, progress=False))
    before = [p.detach().clone() for p in tr.model.parameters()]
    tr.train_step()
    d = min(0.999, 1 / 10)  # warm-up of the EMA decay at step 1: (1 + 0) / (10 + 0)
    for p0, p, pe in zip(before, tr.model.parameters(), tr.ema.parameters(), strict=True):
        torch.testing.assert_close(pe, d * p0 + (1 - d) * p)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    data = load_dataset("moons", n=500)
    opts = TrainOptions(steps=4, batch_size=16, ckpt_every=0, sample_every=0, progress=False)
    tr = Trainer(_model(8, 1), data, build_objective("dsm", VP), opts, tmp_path)
    tr.fit()
    good = find_checkpoint(tmp_path)
    tr.data = torch.full_like(data, float("nan"))
    tr.opt.steps = 8
    with pytest.raises(TrainingDivergedError, match=r"step 5: the loss became nan.*step_000004"):
        tr.fit()
    assert find_checkpoint(tmp_path) == good
    assert torch.isfinite(load_model(tmp_path).network.inp.weight).all()


def test_same_seed_same_weights() -> None:
    data = load_dataset("moons", n=500)
    runs = []
    for _ in range(2):
        opts = TrainOptions(steps=5, batch_size=16, progress=False, sample_every=0)
        tr = Trainer(_model(8, 1), data, build_objective("dsm", VP), opts)
        tr.fit()
        runs.append(tr.model.network.inp.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_device_and_precision_choices() -> None:
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want
    assert resolve_precision("auto", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16
    assert resolve_precision("fp32", torch.device("cpu")) is None
