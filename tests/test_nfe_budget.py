"""NFE budgets (``scoregen/nfe_budget.py``, ``scoregen.sample(..., nfe=N)``, ``scoregen sample
--nfe``): the counted NFE never exceeds the budget for any registered sampler, the planned
step count is the largest that fits, self-stepping samplers refuse a budget, and defaults
follow the documented recommendation."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

import scoregen
from scoregen import samplers
from scoregen import sde as sde_lib
from scoregen.cli import main
from scoregen.models import analytic
from scoregen.sampling.nfe_budget import plan_steps

SDE = sde_lib.get("vp")
MODEL = analytic.preset("ring8").model(SDE)
FIXED = [n for n in samplers.list() if samplers.meta(n)["nfe_per_step"] is not None]
ADAPTIVE = [n for n in samplers.list() if samplers.meta(n)["nfe_per_step"] is None]
BUDGETS = (1, 2, 3, 5, 8, 13)


def _process(name: str):
    """VP and its oracle, or CLD's for a sampler that needs CLD (sscs)."""
    if not samplers.missing(name, SDE):
        return MODEL, SDE
    cld = sde_lib.get("cld")
    return analytic.preset("ring8").model(cld), cld


@pytest.mark.parametrize("name", FIXED)
def test_counted_nfe_never_exceeds_the_budget_and_is_the_most_that_fits(name):
    model, sde = _process(name)
    for budget in BUDGETS:
        try:
            res = scoregen.sample(model, sde, (3, 2), name, nfe=budget, dtype=torch.float64)
        except ValueError as err:  # no step count fits: then even one step is over budget
            assert "fits a budget" in str(err)
            assert scoregen.sample(model, sde, (1, 2), name, 1).nfe > budget
            continue
        assert res.nfe <= budget
        steps = len(res.ts) - 1
        more = scoregen.sample(model, sde, (1, 2), name, steps + 1).nfe
        assert more > budget, (budget, steps, res.nfe, more)
        if samplers.meta(name)["nfe_per_step"] == 1:
            assert res.nfe == budget


@pytest.mark.parametrize("name", ADAPTIVE)
def test_self_stepping_samplers_say_a_budget_does_not_apply(name):
    with pytest.raises(ValueError, match="chooses its own steps"):
        scoregen.sample(MODEL, SDE, (2, 2), name, nfe=10)


def test_plan_steps_searches_the_counted_nfe():
    def heun_like(k):
        return 2 * k - 1

    def refuses_below_3(k):
        return None if k < 3 else k

    assert plan_steps(heun_like, 10, 2) == 5  # 9 NFE; 6 steps would cost 11
    assert plan_steps(heun_like, 1, 2) == 1
    assert plan_steps(lambda k: 3 * k, 2, 3) is None
    assert plan_steps(refuses_below_3, 7) == 7
    assert plan_steps(refuses_below_3, 2) is None
    with pytest.raises(ValueError, match="budget"):
        plan_steps(heun_like, 0)


def test_nfe_and_an_explicit_grid_exclude_each_other():
    ts = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="not both"):
        scoregen.sample(MODEL, SDE, (2, 2), "ddim", ts=ts, nfe=5)


def test_adaptive_sde_default_tolerance_is_the_recommended_one():
    """docs/fast-samplers.md recommends tolerance 0.2 (compare sets rtol = atol = tol); the
    defaults are that setting, and the loosest registered tolerance."""
    params = inspect.signature(samplers.get("adaptive_sde")).parameters
    assert params["rtol"].default == params["atol"].default == 0.2
    assert max(samplers.meta("adaptive_sde")["tolerances"]) == 0.2
    assert "| `adaptive_sde` |" in Path("docs/fast-samplers.md").read_text()
    row = next(line for line in Path("docs/fast-samplers.md").read_text().splitlines()
               if line.startswith("| `adaptive_sde` |"))
    assert "`rtol` (0.2), `atol` (0.2)" in row


def test_cli_sample_with_an_nfe_budget(tmp_path: Path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"name": "moons", "n": 200}, "sde": {"name": "vp"},
        "model": {"network": "mlp", "width": 16, "depth": 1},
        "train": {"steps": 5, "batch_size": 32, "log_every": 5, "ckpt_every": 5,
                  "sample_every": 100, "threads": 1}}))
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "h.png"
    assert main(["sample", str(run), "--sampler", "heun", "--nfe", "10", "-n", "4", "--out",
                 str(out), "--no-progress", "--device", "cpu"]) == 0
    import numpy as np

    assert int(np.load(out.with_suffix(".npz"))["nfe"]) == 9  # 5 Heun steps; 6 would be 11
    capsys.readouterr()
    assert main(["sample", str(run), "--sampler", "ode_dopri5", "--nfe", "10", "--out",
                 str(out), "--no-progress", "--device", "cpu"]) == 1
    assert "chooses its own steps" in capsys.readouterr().err
    assert main(["sample", str(run), "--steps", "3", "--nfe", "10", "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 1
