"""The sampler comparison: honest NFE budgets, one start for every method, outputs on disk."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

import scoregen
from scoregen import samplers
from scoregen.cli import main
from scoregen.evaluation import compare


@pytest.fixture(scope="module")
def ring8():
    return compare.oracle_problem("ring8", "vp", n=200)


FIXED = [s for s in samplers.list() if samplers.meta(s)["nfe_per_step"] is not None]
VP_FIXED = [s for s in FIXED if not samplers.missing(s, scoregen.sde.get("vp"))]


def test_cli_end_to_end_writes_every_output(tmp_path, capsys):
    names = samplers.list()[:2]
    out = tmp_path / "cmp"
    code = main(["compare", "--samplers", ",".join(names), "--budgets", "2,4", "-n", "200",
                 "--tolerances", "0.1", "--out", str(out), "--no-progress"])
    assert code == 0
    for name in ("results.md", "results.csv", "results.json", "quality_vs_nfe.png"):
        assert (out / name).stat().st_size > 0
    assert list(out.glob("samples_nfe*.png"))
    assert str(out / "results.md") in capsys.readouterr().out
    raw = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in raw["records"]} == set(names)
    assert set(raw["noise_floor"]) == {"swd", "nll_gap", "mode_tv"}
    for r in raw["records"]:
        assert r["nfe"] >= 1  # the counted NFE, not the budget
        if r["budget"] is not None:
            assert r["nfe"] <= r["budget"]
        assert set(r["metrics"]) == {"swd", "nll_gap", "mode_tv"}
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(raw["records"])
    assert [int(r["nfe"]) for r in rows] == [r["nfe"] for r in raw["records"]]
    assert "| sampler | 2 | 4 |" in (out / "results.md").read_text()


@pytest.mark.parametrize("name", VP_FIXED)
@pytest.mark.parametrize("budget", [3, 8])
def test_plan_steps_uses_the_largest_grid_within_budget(name, budget, ring8):
    """Counted NFE of the planned grid is <= budget and one more step would exceed it."""
    (method,) = compare.scoregen_methods([name])
    steps = compare.plan_steps(method, ring8, budget)
    if steps is None:
        pytest.skip(f"{name} has no grid within {budget} NFE")
    x = compare.initial_noise(ring8, 3, 0)

    def nfe(k):
        try:
            return method.draw(ring8.model, ring8.sde, x, compare.Setting(steps=k), 0)[1]
        except ValueError:
            return math.inf

    assert nfe(steps) <= budget < nfe(steps + 1)


def test_every_method_starts_from_the_draw_scoregen_sample_makes(ring8):
    x_T = compare.initial_noise(ring8, 16, seed=5)
    given = scoregen.sample(ring8.model, ring8.sde, x_T, "ddim", 4, seed=5, dtype=torch.float64)
    drawn = scoregen.sample(ring8.model, ring8.sde, (16, 2), "ddim", 4, seed=5,
                            dtype=torch.float64)
    assert torch.equal(given.x, drawn.x)


def test_quality_improves_with_nfe_and_floor_is_that_of_exact_samples(ring8):
    (ddim,) = compare.scoregen_methods(["ddim"])
    comp = compare.run_comparison(ring8, [ddim], [2, 50], n=200, progress=False)
    swd = {r.budget: r.metrics["swd"] for r in comp.records}
    assert swd[50] < 0.5 * swd[2]
    exact = compare.evaluate(ring8.mixture.sample(200, torch.Generator().manual_seed(3)), ring8)
    assert exact["swd"] < 3 * comp.floor["swd"]  # floor: exact vs exact at the same n
    assert abs(exact["nll_gap"]) < 0.5 and abs(comp.floor["nll_gap"]) < 0.5


def _fake(name, family, nfe_per_step, offset):
    def draw(model, sde, x_T, setting, seed):
        if setting.steps is None:
            nfe = round(-10 * math.log10(setting.tolerance))
        else:
            nfe = setting.steps * nfe_per_step
        return x_T * 0 + model.mixture.means[0] + offset / (1 + nfe), nfe

    return compare.Method(name, family, nfe_per_step, False, draw)


def test_table_marks_best_scoregen_and_best_peer_per_budget(ring8):
    methods = [_fake("good", "scoregen", 1, 0.1), _fake("bad", "scoregen", 1, 5.0),
               _fake("peer-good", "lib", 1, 0.2), _fake("peer-bad", "lib", 1, 9.0),
               _fake("auto", "scoregen", None, 1.0)]
    comp = compare.run_comparison(ring8, methods, [4, 8], tolerances=[1e-1, 1e-3], n=50,
                                  progress=False)
    md = compare.markdown(comp)
    swd_table = md.split("## swd")[1].split("##")[0]
    good = next(line for line in swd_table.splitlines() if line.startswith("| good |"))
    peer = next(line for line in swd_table.splitlines() if line.startswith("| peer-good |"))
    assert good.count("**") == 4 and peer.count("_") == 4  # both budgets marked
    assert "**" not in next(line for line in swd_table.splitlines() if "| bad |" in line)
    auto = [r for r in comp.records if r.method == "auto"]
    assert [r.nfe for r in auto] == [10, 30] and all(r.budget is None for r in auto)
    assert "| auto | 0.001 | 30 |" in md


def test_methods_draw_without_autograd(ring8):
    """Peers' sampling loops call the model outside any ``no_grad``: the comparison runs every
    method without autograd, so no step keeps the network's graph (memory stays flat)."""
    seen = []

    def draw(model, sde, x_T, setting, seed):
        seen.append(torch.is_grad_enabled())
        return x_T, setting.steps

    compare.run_comparison(ring8, [compare.Method("probe", "lib", 1, False, draw)], [2, 3],
                           n=20, progress=False)
    assert seen and not any(seen)


def test_bad_input_is_rejected_with_a_clear_message(ring8, capsys):
    with pytest.raises(ValueError, match="budgets must be positive"):
        compare.run_comparison(ring8, compare.scoregen_methods(["ddim"]), [0], progress=False)
    assert main(["compare", "--samplers", "nope", "--no-progress"]) == 1
    assert "known samplers" in capsys.readouterr().err


def test_checkpoint_run_uses_its_dataset_as_reference(tmp_path):
    """A trained run: reference samples are the test split of its mixture dataset, so the
    mixture metrics apply too; ``--reference`` takes an .npz instead."""
    import numpy as np
    import yaml

    cfg = {"data": {"name": "mixture", "preset": "ring8", "n": 600},
           "sde": {"name": "vp"}, "model": {"network": "mlp", "width": 16, "depth": 1},
           "train": {"steps": 5, "batch_size": 32, "log_every": 5, "ckpt_every": 5,
                     "sample_every": 100, "threads": 1},
           "sample": {"sampler": "ddim", "steps": 4, "n": 8}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "cmp"
    assert main(["compare", "--checkpoint", str(run), "--samplers", "ddim", "--budgets", "3",
                 "-n", "100", "--out", str(out), "--no-progress"]) == 0
    raw = json.loads((out / "results.json").read_text())
    assert raw["problem"]["metrics"] == ["swd", "nll_gap", "mode_tv"]
    assert raw["records"][0]["nfe"] == 3 and set(raw["noise_floor"]) == {"swd", "nll_gap",
                                                                        "mode_tv"}
    # a split too small for two sets: the floor set is the train split, not the reference again
    small = compare.checkpoint_problem(run, n=400)
    assert len(small.reference) == 400 and small.floor_reference.shape == (400, 2)
    assert not torch.equal(small.floor_reference, small.reference)
    np.savez(tmp_path / "ref.npz", x=np.zeros((50, 2), dtype=np.float32))
    assert main(["compare", "--checkpoint", str(run), "--reference", str(tmp_path / "ref.npz"),
                 "--samplers", "ddim", "--budgets", "3", "-n", "50", "--out", str(out),
                 "--no-progress"]) == 0
    raw = json.loads((out / "results.json").read_text())
    assert raw["problem"]["metrics"] == ["swd"] and raw["noise_floor"] == {}


def test_a_process_without_the_scalar_kernel_compares_its_own_samplers(tmp_path):
    """``scoregen compare --sde cld`` runs the samplers that run on CLD (and only those) at
    planned budgets, with the metrics of the mixture."""
    from scoregen.cli import main

    out = tmp_path / "cld"
    assert main(["compare", "--sde", "cld", "-n", "64", "--budgets", "6", "--no-progress",
                 "--out", str(out)]) == 0
    table = (out / "results.md").read_text()
    assert "| sscs |" in table and "| euler_maruyama |" in table and "| ddim |" not in table
