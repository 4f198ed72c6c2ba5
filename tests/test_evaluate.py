"""``scoregen evaluate``: the ODE likelihood and the variational bound against exact mixture
densities, bits/dim of quantized data, batch independence, and the command end to end."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import scoregen.sde as sdes
from scoregen.cli import main
from scoregen.evaluation.bound import variational_bound
from scoregen.evaluation.dequantize import Quantization, levels_for
from scoregen.evaluation.evaluate import (
    LikelihoodOptions,
    likelihood_rows,
    run_evaluation,
    summarize,
)
from scoregen.infra.shape import bcast
from scoregen.models.analytic import GaussianMixture, preset


def _data(mix: GaussianMixture, n: int, seed: int = 1) -> torch.Tensor:
    return mix.sample(n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_ode_and_bound_agree_with_the_exact_mixture_density(name):
    """On exact scores both estimate -log p_{t_min}(x) of ring8 points: the ODE (exact trace)
    within its solver error, the bound (tight for the exact score) within four standard
    errors of its mean difference."""
    sde = sdes.get(name)
    mix = preset("ring8")
    x = _data(mix, 400)
    rows = likelihood_rows(mix.model(sde), sde, x, batch_size=200, mixture=mix,
                           options=LikelihoodOptions(bound_times=16), progress=False)
    est = summarize(rows, 2)
    ode, bound = est["nll"], est["bound"]
    assert abs(ode.vs_exact) < 5e-3 and (rows["logp_nll"] - rows["logp_exact"]).abs().max() < 2e-2
    assert 0 < bound.se_vs_exact < 0.2
    assert abs(bound.vs_exact) < 4 * bound.se_vs_exact
    assert est["exact"].nats == pytest.approx(-float(rows["logp_exact"].mean()))
    assert bound.nfe == 16 and ode.nfe > 20


def test_hutchinson_ode_agrees_within_its_standard_error():
    """mix16 (16-D) with forced Hutchinson, one Rademacher probe: unbiased, so the mean
    difference to the exact density lies within four standard errors, which are real."""
    sde = sdes.get("vp")
    mix = preset("mix16")
    x = _data(mix, 160, seed=2)
    rows = likelihood_rows(mix.model(sde), sde, x, batch_size=160, estimators=("nll",),
                           mixture=mix, options=LikelihoodOptions(divergence="hutchinson",
                                                                  rtol=1e-4, atol=1e-4),
                           progress=False)
    ode = summarize(rows, 16)["nll"]
    assert ode.se_vs_exact > 0.05
    assert abs(ode.vs_exact) < 4 * ode.se_vs_exact


def test_bound_gap_is_the_score_matching_loss():
    """With a score off by a constant c, s_theta = s + c, the bound's mean excess over the
    exact NLL is J_SM = 1/2 int g^2 |c|^2 dt (Song et al. 2021b, Theorem 1; the prior
    mismatch is ~1e-5 nats), 1.256 nats for |c| = 0.5 under VP."""
    sde = sdes.get("vp")
    mix = preset("ring8")
    c = torch.tensor([0.5, 0.0], dtype=torch.float64)

    class Shifted:
        prediction = "eps"

        def __init__(self, model):
            self.model, self.sde = model, model.sde

        def __call__(self, x, t):  # eps = -sigma * score
            return self.model(x, t) - bcast(self.sde.sigma(t), x) * c

    x = _data(mix, 800, seed=3)
    gap = variational_bound(Shifted(mix.model(sde)), sde, x).nll + mix.log_prob(x, sde,
                                                                                 sde.t_min)
    B = 0.1 + 0.5 * 19.9  # int_0^1 beta(t) dt
    J = 0.5 * float(c @ c) * (B - (0.1e-3 + 0.5 * 19.9e-6))
    se = float(gap.std()) / math.sqrt(len(gap))
    assert abs(float(gap.mean()) - J) < 4 * se
    assert float(gap.mean()) > 10 * se  # and the bound is not tight for a wrong score


def test_results_do_not_depend_on_the_batch_size():
    """Dequantization noise, probes and the bound's draws are keyed to the example index."""
    sde = sdes.get("vp")
    quant = Quantization(17)
    mix = GaussianMixture(torch.zeros(1, 16, dtype=torch.float64), 0.3, shape=(1, 4, 4))
    x = ((_data(mix, 12).clamp(-1, 1) + 1) / quant.bin_width).round() * quant.bin_width - 1
    opts = LikelihoodOptions(divergence="hutchinson", bound_times=4)
    a, b = (likelihood_rows(mix.model(sde), sde, x, batch_size=bs, quantization=quant,
                            options=opts, mixture=mix, progress=False) for bs in (5, 12))
    torch.testing.assert_close(a["logp_exact"], b["logp_exact"], rtol=0, atol=1e-12)
    torch.testing.assert_close(a["logp_bound"], b["logp_bound"], rtol=0, atol=1e-9)
    torch.testing.assert_close(a["logp_nll"], b["logp_nll"], rtol=0, atol=2e-2)  # adaptive steps
    assert (a["logp_exact"] != mix.log_prob(x, sde, sde.t_min)).all()  # dequantized points


def test_bits_per_dim_change_of_variables():
    """Digits: 17 levels, Delta = 1/8, so log p = 0 on the [-1, 1] scale is 3 bits/dim and
    every nat per example is 1/(D ln 2) bits/dim more."""
    quant = levels_for("digits")
    assert quant == Quantization(17) and quant.bin_width == 0.125
    assert levels_for("mnist").levels == 256 and levels_for("moons") is None
    assert levels_for("digits", 0) is None
    rows = {"logp_nll": torch.tensor([0.0, -64 * math.log(2)], dtype=torch.float64)}
    est = summarize(rows, 64, quant)["nll"]
    assert est.bpd == pytest.approx(3.5)  # mean of 3 and 4 bits/dim
    assert est.nats == pytest.approx(3.5 * 64 * math.log(2))
    with pytest.raises(ValueError, match="not on the grid of 17 levels"):
        quant.check_on_grid(torch.tensor([[0.01, 0.5]]))
    with pytest.raises(ValueError, match="grey levels"):
        Quantization(1)


def test_digits_shaped_gaussian_bits_per_dim_match_the_exact_density():
    """A Gaussian fitted to the digits as the model: both estimators of bits/dim of the
    dequantized held-out digits (Hutchinson, 64-D) agree with the exact bits/dim of the
    same points within their standard errors."""
    from scoregen.data import load_dataset

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")[:96]
    flat = train.flatten(1).double()
    mix = GaussianMixture(flat.mean(0, keepdim=True), (flat.var(0, keepdim=True) + 0.01),
                          shape=(1, 8, 8))
    sde = sdes.get("vp")
    report = run_evaluation(mix.model(sde), sde, test, source="gaussian", data_info={
        "name": "digits", "split": "test"}, n=96, batch_size=96, quantization=Quantization(17),
        options=LikelihoodOptions(rtol=1e-4, atol=1e-4, bound_times=8), mixture=mix,
        progress=False)
    exact = report.likelihood["exact"]
    assert 1.0 < exact.bpd < 4.0
    for name in ("nll", "bound"):
        e = report.likelihood[name]
        assert abs(e.vs_exact) < 4 * e.se_vs_exact + 1e-3, name
        assert abs(e.bpd - exact.bpd) < 4 * e.se_vs_exact / (64 * math.log(2)) + 1e-3
    md = report.markdown()
    assert "bits/dim of the 17-level data" in md and "variational bound" in md


TINY = {
    "data": {"name": "mixture", "preset": "ring8", "n": 400},
    "sde": {"name": "vp"},
    "model": {"network": "mlp", "width": 16, "depth": 1},
    "train": {"steps": 10, "batch_size": 32, "log_every": 5, "ckpt_every": 10,
              "sample_every": 0, "threads": 1},
    "sample": {"sampler": "ddim", "steps": 4, "n": 16},
}


def test_evaluate_command_on_a_tiny_mixture_run(tmp_path: Path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    assert main(["evaluate", str(run), "--n", "40", "--batch-size", "16", "--steps", "5",
                 "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "probability-flow ODE" in out and "| swd |" in out
    report = json.loads((run / "eval" / "evaluation.json").read_text())
    assert (run / "eval" / "evaluation.md").is_file()
    lik = report["likelihood"]
    assert set(lik) == {"nll", "bound", "exact"}
    assert all(math.isfinite(lik[k]["nats"]) for k in lik)
    assert lik["nll"]["vs_exact"] == pytest.approx(lik["nll"]["nats"] - lik["exact"]["nats"])
    assert set(report["samples"]) == {"swd", "mmd", "nll_gap", "mode_tv"}
    assert report["sample_settings"]["nfe"] == 5 and report["data"]["levels"] is None
    out_json = tmp_path / "e.json"
    assert main(["evaluate", str(run), "--metrics", "bound,swd", "--n", "20",
                 "--out", str(out_json), "--no-progress"]) == 0
    assert set(json.loads(out_json.read_text())["likelihood"]) == {"bound", "exact"}
    assert main(["evaluate", str(run), "--metrics", "nll,fid", "--no-progress"]) == 1
    assert "unknown metric(s) fid" in capsys.readouterr().err


USER_MODULE = textwrap.dedent('''
    import scoregen
    from scoregen.models.analytic import preset


    def make_model():
        model = preset("ring8").model(scoregen.sde.get("vp"))
        model.shape = (2,)
        model.dataset = "mixture"
        return model
''')


def test_model_callable_runs_sample_evaluate_and_compare(tmp_path: Path, monkeypatch, capsys):
    """``--model module:function`` from the command line: the exact ring8 oracle gives the
    exact NLL through evaluate, samples through sample, and a table through compare."""
    (tmp_path / "cli_models.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    spec = "cli_models:make_model"
    assert main(["evaluate", "--model", spec, "--metrics", "nll,swd", "--n", "60",
                 "--out", "ev.json", "--no-progress", "--device", "cpu"]) == 0
    lik = json.loads((tmp_path / "ev.json").read_text())["likelihood"]
    assert abs(lik["nll"]["vs_exact"]) < 5e-3
    assert main(["sample", "--model", spec, "-n", "8", "--steps", "4", "--out", "s.png",
                 "--no-progress"]) == 0
    assert (tmp_path / "s.png").is_file() and (tmp_path / "s.npz").is_file()
    assert main(["compare", "--model", spec, "--samplers", "ddim", "--budgets", "3", "-n", "50",
                 "--out", "cmp", "--no-progress"]) == 0
    assert "ddim" in (tmp_path / "cmp" / "results.md").read_text()
    capsys.readouterr()
    assert main(["evaluate", "--no-progress"]) == 1
    assert "exactly one of them" in capsys.readouterr().err
