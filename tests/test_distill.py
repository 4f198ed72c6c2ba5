"""Few-step students: exact answers for the parts, and a student as a run folder end to end.

Exact answers: the consistency parameterizations are the identity at ``t_min`` and Song's rule
elsewhere; multistep consistency sampling with the exact consistency function of a Gaussian
draws exact samples at any step count; the progressive-distillation target is two DDIM steps
of the teacher; the consistency-distillation target is one step of the chosen registered
sampler and vanishes for the exact consistency function; a linear student with the exact
teacher recovers the (affine) probability-flow map of a Gaussian; NFE are counted. Then the
run-folder rules (fresh, resume after an interruption bit for bit, overwrite, teacher checks),
the sampling plans, bad input, the CLI and the comparison.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch
from test_objectives import GaussianConsistency
from torch import nn

import scoregen
from scoregen.cli import main
from scoregen.evaluation.reference import pf_ode_endpoint
from scoregen.models import PARAMETERIZATIONS, ScoreModel, build_network
from scoregen.models.analytic import GaussianMixture
from scoregen.training.distill import StudentError, TeacherError, distill, load_student
from scoregen.training.distill.stages import make_pairs
from scoregen.training.objectives import build_objective, random_batch
from scoregen.training.objectives.progressive import pd_grid, pd_times

CONSISTENCY = [p for p in PARAMETERIZATIONS if p.startswith("consistency")]
TINY = ["model.width=16", "model.depth=1", "train.batch_size=64", "train.log_every=5",
        "train.ckpt_every=5", "train.threads=1", "data.n=2000"]


# -- the consistency parameterizations ---------------------------------------------------------
@pytest.mark.parametrize("prediction", CONSISTENCY)
@pytest.mark.parametrize("sde_name", ["vp", "ve", "linear"])
def test_consistency_function_is_the_identity_at_t_min(prediction: str, sde_name: str) -> None:
    """f(x, t_min) = x / alpha(t_min) exactly (c_skip = 1, c_out = 0 there), whatever the
    network says; above t_min the network's output matters."""
    sde = scoregen.sde.get(sde_name)
    torch.manual_seed(0)
    model = ScoreModel(build_network("mlp", (3,), width=16, depth=1), sde, prediction).double()
    assert model.consistency and model.prediction == "x0"
    x = 3 * torch.randn(64, 3, dtype=torch.float64)
    t = torch.full((64,), sde.t_min, dtype=torch.float64)
    alpha = sde.alpha(t[:1])
    torch.testing.assert_close(model(x, t), x / alpha, rtol=0, atol=1e-12)
    above = model(x, torch.full((64,), 0.3, dtype=torch.float64))
    assert (above - x / sde.alpha(torch.tensor([0.3], dtype=torch.float64))).abs().max() > 1e-3


def test_consistency_parameterization_is_songs_rule_over_edm() -> None:
    """Over the EDM base: c_skip = sd^2 / ((s - s_min)^2 + sd^2), c_out = (s - s_min) sd /
    sqrt(s^2 + sd^2) on x~ (Song et al. 2023, app. C); over eps: c_skip^cm x~ + rho (D_eps -
    c_skip^edm x~) with the eps parameterization's own denoiser."""
    sde, sd = scoregen.sde.get("vp"), 0.5
    t = torch.linspace(0.01, 0.99, 7, dtype=torch.float64)
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    s = sigma / alpha
    s_min = float(sde.sigma(torch.tensor(sde.t_min)) / sde.alpha(torch.tensor(sde.t_min)))
    c_skip, c_out = PARAMETERIZATIONS["consistency"].at(alpha, sigma, sd, s_min)
    torch.testing.assert_close(c_skip * alpha, sd**2 / ((s - s_min) ** 2 + sd**2))
    torch.testing.assert_close(c_out, (s - s_min) * sd / torch.sqrt(s**2 + sd**2))
    x, F = torch.randn(7, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    eps_hat = PARAMETERIZATIONS["eps"].output(x, F, alpha, sigma, sd)
    d_eps = (x - sigma[:, None] * eps_hat) / alpha[:, None]
    x_tilde, rho = x / alpha[:, None], (1 - s_min / s)[:, None]
    skip_cm = (sd**2 / ((s - s_min) ** 2 + sd**2))[:, None]
    skip_edm = (sd**2 / (s**2 + sd**2))[:, None]
    expected = skip_cm * x_tilde + rho * (d_eps - skip_edm * x_tilde)
    got = PARAMETERIZATIONS["consistency-eps"].output(x, F, alpha, sigma, sd, s_min)
    torch.testing.assert_close(got, expected)


# -- multistep consistency sampling ------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_multistep_consistency_sampling_with_the_exact_function_is_exact(steps: int) -> None:
    """With the exact consistency function of N(mu, s^2 I) every re-noised state is an exact
    draw of its marginal, so the samples are exact draws of N(mu, (s^2 + sigma~_min^2) I) at
    any step count: mean and variance within 4 standard errors of 40000 samples."""
    sde = scoregen.sde.get("vp")
    mu, s2 = torch.tensor([0.4, -0.3], dtype=torch.float64), 0.05
    exact = GaussianConsistency(mu, s2, sde)
    grid = torch.tensor([sde.T, *torch.linspace(0.6, 0.05, steps - 1).tolist(), 0.0],
                        dtype=torch.float64)
    n = 40_000
    res = scoregen.sample(exact, sde, (n, 2), "consistency", ts=grid, dtype=torch.float64)
    assert res.nfe == steps
    var = s2 + exact.sigma_min2
    assert ((res.x.mean(0) - mu).abs() < 4 * math.sqrt(var / n)).all()
    assert ((res.x.var(0) / var - 1).abs() < 4 * math.sqrt(2 / n)).all()


def test_consistency_sampling_needs_a_consistency_function() -> None:
    """On a denoiser the re-noised state shrinks (variance -> s^2 / 2 on fine grids), so the
    sampler refuses it; and `samplers.list()` (what sweeps run on any model) leaves it out."""
    sde = scoregen.sde.get("vp")
    oracle = scoregen.analytic.preset("ring8").model(sde)
    with pytest.raises(ValueError, match="needs a consistency function"):
        scoregen.sample(oracle, sde, (4, 2), "consistency", 3)
    assert "consistency" not in scoregen.samplers.list()
    assert scoregen.samplers.list("consistency") == ["consistency"]


# -- progressive distillation --------------------------------------------------------------------
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_progressive_target_is_two_ddim_teacher_steps(sde_name: str, spacing: str) -> None:
    """One student DDIM step with x0_hat = x~ from z_t lands exactly on the teacher's two DDIM
    steps t -> t' -> t'' (registered `ddim` on that grid), t'' = 0 included; the nested grids
    halve every step."""
    sde = scoregen.sde.get(sde_name)
    mix = scoregen.analytic.preset("ring8")
    teacher = mix.model(sde)
    n = 4
    objective = build_objective("progressive", sde, teacher=teacher, steps=n, spacing=spacing)
    torch.testing.assert_close(pd_grid(sde, 2 * n, spacing)[::2], pd_grid(sde, n, spacing))
    i = torch.tensor([1, 2, 3, 4, 4, 1])
    t = pd_times(sde, i.double() / n, spacing)
    z = sde.perturb(mix.sample(6, torch.Generator().manual_seed(0)), t,
                    torch.randn(6, 2, dtype=torch.float64))
    _, x_tilde = objective.target(z, i)
    for k in range(6):
        grid = pd_times(sde, torch.tensor([i[k], i[k] - 0.5, i[k] - 1.0]).double() / n, spacing)
        two_steps = scoregen.sample(teacher, sde, z[k:k + 1], "ddim", ts=grid).x
        one_step = scoregen.sample(_Fixed(x_tilde[k:k + 1], sde), sde, z[k:k + 1], "ddim",
                                   ts=grid[[0, 2]]).x
        torch.testing.assert_close(one_step, two_steps, rtol=0, atol=1e-10)
    assert int(objective.solver.teacher_rows) == 2 * 6


class _Fixed:
    """A model whose x0 prediction is a fixed tensor."""

    prediction = "x0"

    def __init__(self, x0: torch.Tensor, sde) -> None:
        self.x0, self.sde = x0, sde

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.x0.to(x)


# -- consistency distillation -------------------------------------------------------------------
def test_consistency_distillation_target_is_one_step_of_the_chosen_sampler() -> None:
    """x_lo is one step of the registered sampler from x_hi; with a tight dopri5 as the
    teacher's solver the loss of the exact consistency function vanishes (1e-10), and the
    teacher's evaluations are counted per example."""
    sde = scoregen.sde.get("vp")
    mu, s2 = torch.tensor([[0.3, -0.5]], dtype=torch.float64), 0.2
    mix = GaussianMixture(mu, s2)
    batch = random_batch(mix.sample(256, torch.Generator().manual_seed(0)), 3)
    heun = build_objective("consistency_distillation", sde, teacher=mix.model(sde),
                           sampler="heun", n_min=6, n_max=6)
    x_hi, t_hi, x_lo, t_lo = heun.pairs(None, batch)
    for k in (0, 7, 100):
        one = scoregen.sample(mix.model(sde), sde, x_hi[k:k + 1], "heun",
                              ts=torch.stack([t_hi[k], t_lo[k]])).x
        torch.testing.assert_close(x_lo[k:k + 1], one, rtol=0, atol=1e-12)
    assert int(heun.solver.teacher_rows) == 2 * 256  # Heun: two evaluations per step
    exact = GaussianConsistency(mu[0], s2, sde)
    tight = build_objective("consistency_distillation", sde, teacher=mix.model(sde),
                            sampler="ode_dopri5", sampler_options={"rtol": 1e-11, "atol": 1e-11},
                            n_min=6, n_max=6, target_ema=0)
    assert float(tight(exact, batch)) < 1e-10

    class Bent(GaussianConsistency):  # not constant along trajectories: (1 + t / 20) x the map
        def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return super().__call__(x, t) * (1 + torch.as_tensor(t).reshape(-1, 1) / 20)

    assert float(tight(Bent(mu[0], s2, sde), batch)) > 1e-6


def test_discretisation_schedule_doubles_to_n_max() -> None:
    from scoregen.training.objectives.consistency import discretization

    counts = [discretization(k, 1000, 10, 80) for k in range(0, 1000, 125)]
    assert counts == [10, 10, 20, 20, 40, 40, 80, 80]  # K' = 1000 // 4 = 250
    assert discretization(999, 1000, 18, 18) == 18


def test_ect_gap_shrinks_by_q_per_stage() -> None:
    """r(t) = t (1 - q^-(s+1) (1 + k sigmoid(-b t))): for large t the gap t - r halves per
    stage (q = 2)."""
    objective = build_objective("consistency_training", scoregen.sde.get("vp"),
                                stage_steps=10, q=2.0)
    t = torch.tensor([50.0], dtype=torch.float64)
    gaps = [float(t - objective.r_of(t, step)) for step in (0, 10, 20)]
    assert gaps[0] == pytest.approx(25.0, rel=1e-6)
    assert gaps[1] / gaps[0] == pytest.approx(0.5) and gaps[2] / gaps[1] == pytest.approx(0.5)


# -- a linear student recovers the affine probability-flow map ---------------------------------
class _Linear(nn.Module):
    """``F = W x_in + b``, ignoring the noise level: a linear network."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.spec = {"name": "linear", "shape": [dim]}

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_a_linear_student_recovers_the_affine_flow_map_of_a_gaussian() -> None:
    """On N(mu, S) the probability-flow map x_T -> x_0 is affine, so a 1-step student with a
    linear network, distilled (reflow, k = 1) on pairs from the exact teacher's ODE, can hold it
    exactly, and least squares finds it. Tolerance 1e-4 (the map moves samples by ~1): the
    pairs are float32 (relative 1e-7) made by dpm_solver++ at 200 NFE (on a Gaussian its error
    is below 1e-6), and L-BFGS stops at a gradient of 1e-12. The teacher's own 1-step sampler
    (its posterior mean at T) misses by ~0.5: the test can fail."""
    sde = scoregen.sde.get("linear")
    mix = GaussianMixture(torch.tensor([[0.5, -0.2, 0.1]]),
                          torch.tensor([[0.3, 0.1, 0.05]]))
    teacher = mix.model(sde)
    pairs, rows = make_pairs(teacher, sde, (3,), 2048, seed=0, sampler="dpm_solver++",
                             nfe=200, options={"order": 3}, progress=False)
    assert rows == 200 * 2048
    objective = build_objective("reflow", sde, steps=1)
    torch.manual_seed(0)
    student = ScoreModel(_Linear(3), sde, "v").double()
    batch = random_batch(pairs.double(), 0)
    opt = torch.optim.LBFGS(student.parameters(), lr=1, max_iter=500, tolerance_grad=1e-12,
                            tolerance_change=0, history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective(student, batch)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    z = torch.randn(500, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    x_T = sde.prior_from_normal(z)
    exact = pf_ode_endpoint(mix, sde, x_T)
    one = torch.tensor([sde.T, 0.0], dtype=torch.float64)
    got = scoregen.sample(student, sde, x_T, "ddim", ts=one).x
    assert (got - exact).abs().max() < 1e-4
    jump = scoregen.sample(teacher, sde, x_T, "ddim", ts=one).x
    assert (jump - exact).abs().max() > 0.1


# -- a student is a run folder ------------------------------------------------------------------
def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny student of each method on the exact ring8 teacher (a few steps each)."""
    root = tmp_path_factory.mktemp("students")
    runs = {
        "consistency": dict(steps=10, options={"tune_nfe": 3, "tune_samples": 200,
                                               "tune_candidates": 3}),
        "consistency-training": dict(steps=10, options={"tune_nfe": 2, "tune_samples": 200,
                                                        "tune_candidates": 3}),
        "progressive": dict(steps=5, options={"start_steps": 4}),
        "reflow": dict(steps=10, sde="linear", options={"pairs": 256, "pair_nfe": 8,
                                                        "straightness_samples": 64}),
    }
    out = {}
    for method, kw in runs.items():
        out[method] = root / method
        _quiet(distill, "ring8", method, out[method], sde=kw.get("sde", "vp"),
               options=kw["options"], overrides=TINY, steps=kw["steps"], progress=False)
    return out


def test_each_method_makes_a_student_that_samples_at_its_nfe(students: dict[str, Path]) -> None:
    expected = {"consistency": [1, 2, 3], "consistency-training": [1, 2],
                "progressive": [1, 2, 4], "reflow": [1]}
    for method, path in students.items():
        student = load_student(path)
        record = json.loads((path / "student.json").read_text())
        assert record["method"] == method and student.nfes() == expected[method]
        assert record["teacher"]["kind"] == "preset" and record["teacher"]["preset"] == "ring8"
        assert all(s["status"] == "done" for s in record["stages"])
        for k in (1, 2):
            res = scoregen.sample(student, student.sde, (16, 2), nfe=k)
            offered = [*student.nfes(), *([k] if method == "reflow" else [])]
            assert res.nfe == max(n for n in offered if n <= k)
            assert torch.isfinite(res.x).all()
        train = [s for s in record["stages"] if s["kind"] == "train"]
        assert train and all((path / s["name"] / "checkpoints" / "LATEST").is_file()
                             for s in train)
    rounds = load_student(students["progressive"]).record["stages"]
    assert [s["name"] for s in rounds] == ["round_0004", "round_0002", "round_0001"]
    assert rounds[1]["depends"] == ["round_0004"] and rounds[0]["teacher_rows"] == 2 * 5 * 64
    reflow = load_student(students["reflow"])
    assert reflow.sde.name == "linear"
    assert scoregen.sample(reflow, reflow.sde, (4, 2), nfe=7).nfe == 7  # k Euler steps
    straight = next(s for s in reflow.record["stages"] if s["name"] == "straightness")
    assert set(straight["straightness"]) == {"teacher", "reflow", "distill_1"}
    assert reflow.cost("distill_1")["teacher_rows"] == 256 * 8 + 256 * 8  # both sets of pairs


def test_sampling_plans_honour_budgets_and_refuse_what_they_cannot(
        students: dict[str, Path]) -> None:
    pd = load_student(students["progressive"])
    plan = pd.sampling_plan(nfe=3)
    assert plan.nfe == 2 and plan.sampler == "ddim" and plan.deterministic
    torch.testing.assert_close(plan.ts, pd_grid(pd.sde, 2))
    with pytest.raises(StudentError, match="cannot sample with exactly 3 steps"):
        pd.sampling_plan(steps=3)
    cd = load_student(students["consistency"])
    assert not cd.sampling_plan(nfe=2).deterministic and cd.sampling_plan(nfe=1).deterministic
    with pytest.raises(StudentError, match="integer >= 1"):
        cd.sampling_plan(nfe=0)
    with pytest.raises(ValueError, match="own sampler and grid"):
        scoregen.sample(cd, cd.sde, (4, 2), "ddim", nfe=2)


def test_resume_after_an_interruption_is_bit_identical(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupt the second round of a progressive student at step 7 (checkpoints every 5),
    resume: every round's weights equal an uninterrupted student's bit for bit."""
    from scoregen.training.trainer import Trainer

    def make(out: Path, **kw) -> None:
        _quiet(distill, "ring8", "progressive", out, sde="vp", options={"start_steps": 2},
               overrides=TINY, steps=10, progress=False, **kw)

    make(tmp_path / "whole")
    step = Trainer.train_step
    calls = []

    def interrupted(self):
        calls.append(1)
        if len(calls) == 17:  # round 1 done (10 steps), round 2 at step 7
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "cut")
    monkeypatch.setattr(Trainer, "train_step", step)
    record = json.loads((tmp_path / "cut" / "student.json").read_text())
    assert [s["status"] for s in record["stages"]] == ["done", "running"]
    assert not (tmp_path / "cut" / ".lock").exists()
    with pytest.raises(ValueError, match="already holds a student"):
        make(tmp_path / "cut")
    make(tmp_path / "cut", resume=True)
    from safetensors.torch import load_file

    for name in ("round_0002", "round_0001"):
        a = load_file(str(tmp_path / "whole" / name / "checkpoints" / "step_000010"
                          / "weights.safetensors"))
        b = load_file(str(tmp_path / "cut" / name / "checkpoints" / "step_000010"
                          / "weights.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_teacher_or_method(students: dict[str, Path],
                                                  tmp_path: Path) -> None:
    path = students["progressive"]
    with pytest.raises(TeacherError, match="another teacher"):
        _quiet(distill, "ring8", "progressive", path, sde="ve", options={"start_steps": 4},
               overrides=TINY, steps=5, resume=True)
    with pytest.raises(StudentError, match="is a progressive student"):
        _quiet(distill, "ring8", "consistency", path, sde="vp", overrides=TINY, resume=True)
    with pytest.raises(StudentError, match="other method options"):
        _quiet(distill, "ring8", "progressive", path, sde="vp", options={"start_steps": 8},
               overrides=TINY, resume=True)


@pytest.mark.parametrize(("call", "phrase"), [
    (lambda p: distill(p / "nope", "consistency", p / "s"), "neither a run"),
    (lambda p: distill("ring8", "consistency", p / "s", options={"nope": 1}),
     "has no option 'nope'"),
    (lambda p: distill("ring8", "nope", p / "s"), "unknown distillation method 'nope'"),
    (lambda p: distill("ring8", "consistency", p / "s", options={"solver": "ancestral"}),
     "needs a deterministic sampler"),
    (lambda p: distill("ring8", "reflow", p / "s", overrides=["sde.name=vp"]),
     "reflow trains on the linear process"),
    (lambda p: distill("ring8", "progressive", p / "s", options={"start_steps": 6}),
     "must be final_steps = 1 times a power of 2"),
    (lambda p: distill("ring8", "consistency", p / "s", time_limit=0), "time_limit must be > 0"),
    (lambda p: distill(scoregen.analytic.preset("ring8").model(scoregen.sde.get("vp")),
                       "consistency", p / "s"), "does not say what data it models"),
])
def test_bad_input_gets_a_clear_error(call, phrase: str, tmp_path: Path) -> None:
    with pytest.raises((ValueError, KeyError)) as err:
        _quiet(call, tmp_path)
    assert phrase in str(err.value)


def test_a_teacher_whose_sde_lacks_the_kernel_is_refused() -> None:
    """A process without the scalar kernel cannot teach by DDIM steps: the objective says
    which capability is missing."""
    class Opaque(type(scoregen.sde.get("vp"))):
        capabilities = frozenset()

    with pytest.raises(ValueError, match="needs what the SDE"):
        build_objective("progressive", Opaque(), steps=2)


def test_cli_distill_sample_and_compare(students: dict[str, Path], tmp_path: Path) -> None:
    """`scoregen sample STUDENT --nfe`, a student passed as a teacher, and `scoregen compare
    --students` with the endpoint error against the exact map and the cost table."""
    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = main([str(a) for a in argv])
        return rc, out.getvalue()

    rc, text = run("sample", students["progressive"], "--nfe", "2", "-n", "8", "--out",
                   tmp_path / "pd.png", "--no-progress")
    assert rc == 0 and "(2 NFE" in text and (tmp_path / "pd.npz").is_file()
    rc, text = run("sample", students["progressive"], "--sampler", "ddim")
    assert rc == 1 and "samples with its own sampler" in text
    rc, text = run("distill", students["consistency"], "--method", "consistency", "--out",
                   tmp_path / "x")
    assert rc == 1 and "is a student" in text
    rc, text = run("distill", "ring8", "--method", "progressive", "--out", tmp_path / "y",
                   "--opt", "start_steps=2", "--steps", "3", "--no-progress",
                   *[a for o in TINY for a in ("--set", o)])
    assert rc == 0 and "samples at 1, 2 NFE" in text
    rc, text = run("compare", "--preset", "ring8", "--students",
                   f"{students['progressive']},{students['consistency']}", "--samplers",
                   "ddim,heun", "--budgets", "1,2,4", "-n", "64", "--out", tmp_path / "cmp",
                   "--no-progress")
    assert rc == 0, text
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert "## endpoint error" in md and "## what the students cost" in md
    rows = json.loads((tmp_path / "cmp" / "results.json").read_text())["records"]
    pd = [r for r in rows if r["method"].startswith("progressive")]
    assert [r["nfe"] for r in pd] == [1, 2, 4] and all("endpoint" in r["metrics"] for r in pd)
    cd = {r["nfe"]: r for r in rows if r["method"].startswith("consistency")}
    assert "endpoint" in cd[1]["metrics"] and "endpoint" not in cd[2]["metrics"]
    assert cd[1]["cost"]["steps"] == 10
    rc, text = run("compare", "--preset", "ring8", "--sde", "ve", "--students",
                   students["progressive"], "--samplers", "ddim", "--budgets", "2", "-n", "8",
                   "--out", tmp_path / "cmp2", "--no-progress")
    assert rc == 1 and "not from the model of this comparison" in text


@pytest.mark.slow
def test_sigkill_during_a_stage_then_resume_is_bit_identical(tmp_path: Path) -> None:
    """`scoregen distill` killed with SIGKILL in the middle of a consistency student's training
    stage (after its 2nd checkpoint) leaves a stale lock and a record with the stage running;
    `--resume --break-lock` ends with the weights of an uninterrupted student, bit for bit."""
    import os
    import signal
    import subprocess
    import sys

    from safetensors.torch import load_file

    argv = ["distill", "ring8", "--sde", "vp", "--method", "consistency", "--steps", "30",
            "--opt", "tune_nfe=2", "--opt", "tune_samples=100", "--opt", "tune_candidates=2",
            "--no-progress", *[a for o in TINY for a in ("--set", o)]]
    assert _quiet(main, [*argv, "--out", str(tmp_path / "whole")]) == 0
    child = (
        "import os, signal, sys\n"
        "from scoregen.training import checkpoint\n"
        "seen = [0]\n"
        "save = checkpoint.save_checkpoint\n"
        "def killing(*a, **k):\n"
        "    out = save(*a, **k)\n"
        "    seen[0] += 1\n"
        "    if seen[0] == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return out\n"
        "checkpoint.save_checkpoint = killing\n"
        "import scoregen.training.trainer as trainer\n"
        "trainer.save_checkpoint = killing\n"
        "from scoregen.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", child, *argv, "--out", str(tmp_path / "cut")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    record = json.loads((tmp_path / "cut" / "student.json").read_text())
    assert record["stages"][0]["status"] == "running" and (tmp_path / "cut" / ".lock").exists()
    rc = _quiet(main, [*argv, "--out", str(tmp_path / "cut"), "--resume"])
    assert rc == 1  # the stale lock is reported
    assert _quiet(main, [*argv, "--out", str(tmp_path / "cut"), "--resume",
                         "--break-lock"]) == 0
    for name in ("whole", "cut"):
        assert load_student(tmp_path / name).nfes() == [1, 2]
    a = load_file(str(tmp_path / "whole" / "cd" / "checkpoints" / "step_000030"
                      / "weights.safetensors"))
    b = load_file(str(tmp_path / "cut" / "cd" / "checkpoints" / "step_000030"
                      / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    same = [json.loads((tmp_path / n / "student.json").read_text())["sampling"] for n in
            ("whole", "cut")]
    assert same[0] == same[1]


def test_a_student_of_points_beyond_two_coordinates_runs_and_plots(tmp_path: Path) -> None:
    """mix64: the student samples 64 coordinates and its previews draw the first two."""
    out = tmp_path / "mix64_pd"
    _quiet(distill, "mix64", "progressive", out, sde="vp", options={"start_steps": 2},
           overrides=TINY, steps=3, progress=False)
    student = load_student(out)
    res = scoregen.sample(student, student.sde, (8, 64), nfe=1)
    assert res.x.shape == (8, 64) and torch.isfinite(res.x).all() and res.nfe == 1
    previews = sorted(out.glob("round_*/samples/*.png"))
    assert previews and all(p.stat().st_size > 0 for p in previews)
