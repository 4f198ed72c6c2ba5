"""Tuned grids (``scoregen/grid_tuning.py``, ``scoregen/tuned_grids.py``): the fit beats the
default grid on its objective and on held-out trajectories, GITS beats it for DDIM, grids
round-trip through the file and are used by ``sample``, ``compare`` and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import scoregen
from scoregen import sde as sde_lib
from scoregen.cli import main
from scoregen.models import analytic
from scoregen.sampling.grid import check_grid, time_grid
from scoregen.sampling.grid_tuning import endpoint_error, gits_grid, teacher_trajectories, tune_grid
from scoregen.sampling.tuned_grids import TunedGrids

RING = analytic.preset("ring8")


@pytest.fixture(scope="module")
def setup():
    sde = sde_lib.get("vp")
    model = RING.model(sde)
    teacher = teacher_trajectories(model, sde, RING.shape, 96, teacher_steps=100)
    return sde, model, teacher


def test_teacher_is_a_high_accuracy_solve(setup):
    sde, model, teacher = setup
    ts = torch.tensor([sde.T, sde.t_min, 0.0], dtype=torch.float64)
    ref = scoregen.sample(model, sde, teacher.x_start[:16].clone(), "ode_dopri5", None, ts=ts,
                          rtol=1e-9, atol=1e-9)
    assert endpoint_error(ref.x, teacher.x_end[:16]).max() < 1e-4
    assert teacher.path.shape == (100, 96, 2) and torch.equal(teacher.path[0], teacher.x_start)


def test_tuned_grid_beats_the_default_on_fit_and_held_out_trajectories(setup):
    sde, model, teacher = setup
    grid = tune_grid(model, sde, "ipndm", 5, teacher=teacher, held_out=32, max_evals=60)
    fit, held = grid.info["fit"], grid.info["held_out"]
    assert fit["tuned"] < 0.6 * fit["default"], fit
    assert held["tuned"] < 0.7 * held["default"], held
    # checked independently of the fit's bookkeeping, on the held-out starts
    x_T, ref = teacher.x_start[64:], teacher.x_end[64:]
    tuned = scoregen.sample(model, sde, x_T.clone(), "ipndm", ts=grid.tensor())
    default = scoregen.sample(model, sde, x_T.clone(), "ipndm", nfe=5)
    assert endpoint_error(tuned.x, ref).mean() < 0.7 * endpoint_error(default.x, ref).mean()
    ts = check_grid(grid.tensor(), sde)
    assert ts[0] == sde.T and ts[-1] == 0 and ts[-2] >= sde.t_min
    assert grid.nfe == tuned.nfe == 5


def test_gits_beats_the_default_grid_for_ddim(setup):
    """GITS' dynamic programme minimises summed DDIM step errors on the teacher: its grid
    must give DDIM a smaller endpoint error than the default grid at the same NFE."""
    sde, model, teacher = setup
    rows = slice(0, 64)
    gits = gits_grid(model, sde, teacher, 6, rows, dp_points=50)
    assert len(gits) == 7 and gits[-1] == 0
    x_T, ref = teacher.x_start[rows], teacher.x_end[rows]
    err = {name: endpoint_error(scoregen.sample(model, sde, x_T.clone(), "ddim", ts=ts).x,
                                ref).mean() for name, ts in
           (("gits", gits), ("default", time_grid(sde, 6, "logsnr")))}
    assert err["gits"] < 0.8 * err["default"], err


def test_grids_round_trip_and_are_selected(setup, tmp_path: Path):
    sde, model, teacher = setup
    store = TunedGrids()
    for nfe in (4, 6):
        store.add(tune_grid(model, sde, "dpm_solver++", nfe, teacher=teacher, held_out=16,
                            max_evals=10))
    store.add(tune_grid(model, sde, "dpm_solver++", 4, teacher=teacher, held_out=16,
                        max_evals=10))  # replaces the first one
    assert len(store.grids) == 2
    path = store.save(tmp_path)
    again = TunedGrids.load(tmp_path)
    assert [g.ts for g in again.grids] == [g.ts for g in store.grids]
    res = scoregen.sample(model, sde, (8, 2), "dpm_solver++", nfe=5, spacing="tuned",
                          grids=path)
    assert res.nfe == 4 and res.ts.tolist() == again.matching("dpm_solver++", sde)[0].ts
    with pytest.raises(ValueError, match="no tuned grid"):
        scoregen.sample(model, sde, (8, 2), "dpm_solver++", nfe=3, spacing="tuned", grids=path)
    with pytest.raises(ValueError, match="no tuned grid"):  # other options: other grids
        scoregen.sample(model, sde, (8, 2), "dpm_solver++", nfe=6, spacing="tuned",
                        grids=path, order=3)
    with pytest.raises(ValueError, match="grids="):
        scoregen.sample(model, sde, (8, 2), "dpm_solver++", 5, spacing="tuned")
    with pytest.raises(FileNotFoundError, match="tune-grid"):
        TunedGrids.load(tmp_path / "nothing")


def test_stochastic_and_adaptive_samplers_are_refused(setup):
    sde, model, teacher = setup
    with pytest.raises(ValueError, match="stochastic"):
        tune_grid(model, sde, "ancestral", 5, teacher=teacher)
    with pytest.raises(ValueError, match="chooses its own steps"):
        tune_grid(model, sde, "ode_dopri5", 5, teacher=teacher)


def test_cli_tune_grid_then_compare_and_sample(tmp_path: Path, capsys):
    grids = tmp_path / "grids"
    assert main(["tune-grid", "ring8", "--sampler", "ipndm,unipc", "--nfe", "4", "-n", "48",
                 "--held-out", "16", "--teacher-steps", "60", "--max-evals", "20", "--out",
                 str(grids), "--no-progress"]) == 0
    assert "tuned" in capsys.readouterr().out
    stored = json.loads((grids / "tuned_grids.json").read_text())["grids"]
    assert {g["sampler"] for g in stored} == {"ipndm", "unipc"}
    out = tmp_path / "cmp"
    assert main(["compare", "--preset", "ring8", "--spacing", "tuned", "--grids", str(grids),
                 "--samplers", "ipndm,unipc", "--budgets", "4", "-n", "64", "--out", str(out),
                 "--no-progress"]) == 0
    records = json.loads((out / "results.json").read_text())["records"]
    assert {(r["method"], r["nfe"]) for r in records} == {("ipndm", 4), ("unipc", 4)}
    assert main(["compare", "--preset", "ring8", "--spacing", "tuned", "--samplers", "ipndm",
                 "--budgets", "4", "-n", "8", "--out", str(out), "--no-progress"]) == 1
    assert "--grids" in capsys.readouterr().err


def test_cli_tune_grid_on_a_trained_run(tmp_path: Path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({
        "data": {"name": "moons", "n": 200}, "sde": {"name": "vp"},
        "model": {"network": "mlp", "width": 16, "depth": 1},
        "train": {"steps": 5, "batch_size": 32, "log_every": 5, "ckpt_every": 5,
                  "sample_every": 100, "threads": 1}}))
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    assert main(["tune-grid", str(run), "--sampler", "ipndm", "--nfe", "3", "-n", "24",
                 "--held-out", "8", "--teacher-steps", "30", "--max-evals", "10",
                 "--no-progress", "--device", "cpu"]) == 0
    assert (run / "checkpoints" / "step_000005" / "tuned_grids.json").is_file()
    png = tmp_path / "s.png"
    assert main(["sample", str(run), "--sampler", "ipndm", "--nfe", "3", "--spacing", "tuned",
                 "-n", "8", "--out", str(png), "--no-progress", "--device", "cpu"]) == 0
    import numpy as np

    assert int(np.load(png.with_suffix(".npz"))["nfe"]) == 3
    # an NFE budget without --sampler takes the recommended sampler (the run says ddim)
    assert main(["sample", str(run), "--nfe", "4", "-n", "8", "--out", str(png),
                 "--no-progress", "--device", "cpu"]) == 0
    saved = np.load(png.with_suffix(".npz"))
    assert str(saved["sampler"]) == "unipc" and int(saved["nfe"]) == 4
    # Python reads the run folder as the CLI does: the grids of its newest checkpoint
    from scoregen.training.checkpoint import find_checkpoint, load_model

    assert TunedGrids.file(run) == find_checkpoint(run) / "tuned_grids.json"
    model = load_model(run)
    tuned = scoregen.sample(model, model.sde, (4, 2), "ipndm", nfe=3, spacing="tuned", grids=run)
    assert tuned.info["grid"] == "tuned" and tuned.nfe == 3
    stored = TunedGrids.load(run).matching("ipndm", model.sde)[0]
    assert tuned.ts.tolist() == stored.ts
    # spacing="auto" takes the fitted grid where one fits the sampler and the budget
    assert scoregen.sample(model, model.sde, (4, 2), "ipndm", nfe=3, grids=run).info["grid"] \
        == "tuned"
    assert scoregen.sample(model, model.sde, (4, 2), "ipndm", nfe=4, grids=run).info["grid"] \
        == "data"


def test_guided_grids_are_fitted_to_the_guided_model_and_kept_apart(tmp_path: Path, capsys):
    """``tune-grid --class --guidance`` fits to the guided ODE: its teacher is the guided
    solve, the grid is stored under the scale and is taken only for that scale."""
    grids = tmp_path / "grids"
    assert main(["tune-grid", "ring8:classes=2", "--class", "all", "--guidance", "4",
                 "--sampler", "unipc", "--opt", "order=1", "--nfe", "5", "-n", "48",
                 "--held-out", "16", "--teacher-steps", "100", "--max-evals", "30", "--out",
                 str(grids), "--no-progress"]) == 0
    assert "guidance 4" in capsys.readouterr().out
    store = TunedGrids.load(grids)
    (grid,) = store.grids
    assert grid.guidance == {"scale": 4.0} and grid.info["fit"]["tuned"] <= grid.info["fit"][
        "default"]
    mixture = analytic.from_spec("ring8:classes=2")
    sde = sde_lib.get("vp")
    teacher = teacher_trajectories(mixture.model(sde), sde, mixture.shape, 48, teacher_steps=100,
                                   cond=torch.arange(48) % 2, guidance=4.0)
    guided = scoregen.sample(mixture.model(sde), sde, teacher.x_start.clone(), "ode_dopri5",
                             ts=torch.tensor([sde.T, sde.t_min, 0.0], dtype=torch.float64),
                             rtol=1e-9, atol=1e-9, cond=torch.arange(48) % 2, guidance=4.0)
    plain = scoregen.sample(mixture.model(sde), sde, teacher.x_start.clone(), "ode_dopri5",
                            ts=torch.tensor([sde.T, sde.t_min, 0.0], dtype=torch.float64),
                            rtol=1e-9, atol=1e-9, cond=torch.arange(48) % 2)
    # the teacher solves the guided flow (to 100 steps' accuracy), not the conditional one
    assert endpoint_error(guided.x, teacher.x_end).max() < 5e-3
    assert endpoint_error(plain.x, teacher.x_end).mean() > 0.05
    y = torch.arange(8) % 2
    res = scoregen.sample(mixture.model(sde), sde, (8, 2), nfe=5, cond=y, guidance=4, grids=grids)
    assert res.info["grid"] == "tuned" and res.ts.tolist() == grid.ts  # auto: unipc(order=1)
    other = scoregen.sample(mixture.model(sde), sde, (8, 2), nfe=5, cond=y, guidance=2,
                            grids=grids)
    assert other.info["grid"] == "data"  # no grid fitted for w = 2: the formula grid
    with pytest.raises(ValueError, match=r"grids exist for guidance scale 4\.0"):
        scoregen.sample(mixture.model(sde), sde, (8, 2), "unipc", nfe=5, cond=y, guidance=2,
                        grids=grids, spacing="tuned", order=1)
    with pytest.raises(ValueError, match="no tuned grid"):  # an unguided run: not this grid
        scoregen.sample(mixture.model(sde), sde, (8, 2), "unipc", nfe=5, grids=grids,
                        spacing="tuned", order=1)
    out = tmp_path / "cmp"
    assert main(["compare", "--preset", "ring8:classes=2", "--guidance", "4", "--spacing",
                 "tuned", "--grids", str(grids), "--samplers", "unipc", "--opt",
                 "unipc.order=1", "--budgets", "5", "-n", "32", "--out", str(out),
                 "--no-progress"]) == 0
    records = json.loads((out / "guidance_4" / "results.json").read_text())["records"]
    assert [(r["method"], r["nfe"]) for r in records] == [("unipc", 5)]
    with pytest.raises(ValueError, match="needs class labels"):
        teacher_trajectories(mixture.model(sde), sde, mixture.shape, 8, guidance=2.0)
