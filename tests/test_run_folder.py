"""Run folders never lose work: fresh/resume/overwrite, the lock, resume checks, the
divergence guard, non-finite samples, data-shape checks, log.csv, leftovers, time limit."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import scoregen
from scoregen.cli import main
from scoregen.data import load_dataset
from scoregen.models import ScoreModel, build_network
from scoregen.sampling.api import NonFiniteSamplesError
from scoregen.sde import get as get_sde
from scoregen.training import (
    Trainer,
    TrainingDivergedError,
    TrainOptions,
    resolve_threads,
)
from scoregen.training.checkpoint import find_checkpoint, load_model, save_checkpoint
from scoregen.training.config import load_config
from scoregen.training.objectives import build_objective
from scoregen.training.run_folder import LOCK, RunFolderError, RunLock, truncate_log

VP = get_sde("vp")

TINY = {
    "data": {"name": "moons", "n": 500},
    "sde": {"name": "vp"},
    "model": {"network": "mlp", "width": 16, "depth": 1},
    "train": {"steps": 10, "batch_size": 32, "log_every": 5, "ckpt_every": 10,
              "sample_every": 0, "threads": 1},
    "sample": {"sampler": "ddim", "steps": 4, "n": 16},
}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _train(config: Path, run: Path, *extra: str) -> int:
    return main(["train", str(config), "--out", str(run), "--no-progress", *extra])


def _steps(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("step_*"))


def _log_steps(run: Path) -> list[int]:
    with open(run / "log.csv", newline="") as fh:
        return [int(r[0]) for r in list(csv.reader(fh))[1:]]


# -- defect 1: a fresh run into a folder that holds a run -----------------------------------------
def test_fresh_run_refuses_a_folder_that_holds_a_run(tmp_path: Path, config: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "X"
    assert _train(config, run, "--steps", "60") == 0
    before = _steps(run)
    assert _train(config, run, "--steps", "20") == 1
    assert "already holds a run" in capsys.readouterr().err
    assert _steps(run) == before  # nothing deleted
    assert main(["sample", str(run), "-n", "8", "--no-progress"]) == 0
    # --overwrite replaces it; unrelated files in the folder are left alone
    (run / "notes.txt").write_text("mine")
    assert _train(config, run, "--steps", "20", "--overwrite") == 0
    assert _steps(run) == ["step_000010", "step_000020"] and (run / "notes.txt").exists()
    assert _log_steps(run) == [5, 10, 15, 20]


def test_pruning_never_deletes_a_later_checkpoint(tmp_path: Path) -> None:
    model = ScoreModel(build_network("mlp", (2,), width=8, depth=1), scoregen.sde.get("vp"))
    for step in (600, 500, 400):
        save_checkpoint(tmp_path, step, model)
    save_checkpoint(tmp_path, 100, model, keep=2)
    save_checkpoint(tmp_path, 200, model, keep=2)
    names = sorted(p.name for p in tmp_path.glob("step_*"))
    assert names == ["step_000100", "step_000200", "step_000400", "step_000500", "step_000600"]


def test_trainer_refuses_checkpoints_of_another_run(tmp_path: Path) -> None:
    data = load_dataset("moons", n=200)
    opts = TrainOptions(steps=4, batch_size=16, ckpt_every=0, sample_every=0, progress=False)
    Trainer(_model(), data, build_objective("dsm", VP), opts, tmp_path).fit()
    with pytest.raises(RunFolderError, match="checkpoints of another run"):
        Trainer(_model(), data, build_objective("dsm", VP), opts, tmp_path).fit()
    assert find_checkpoint(tmp_path).name == "step_000004"


# -- defect 2: the lock -------------------------------------------------------------------------
def test_lock_refuses_a_second_process_and_reports_a_stale_lock(
        tmp_path: Path, config: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname()}))
        assert _train(config, run) == 1
        assert f"in use by another scoregen process (pid {other.pid}" in capsys.readouterr().err
        assert _train(config, run, "--break-lock") == 1  # a live owner is never broken
        assert "in use" in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()
    assert _train(config, run) == 1  # its owner is dead now
    err = capsys.readouterr().err
    assert "stale lock" in err and f"pid {other.pid}" in err and "--break-lock" in err
    assert _train(config, run, "--break-lock") == 0
    assert not (run / LOCK).exists()  # released at the end
    (run / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    assert _train(config, run, "--resume") == 1
    assert "on host elsewhere" in capsys.readouterr().err


def test_lock_is_exclusive_and_released() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        with RunLock(d) as lock:
            assert json.loads(lock.path.read_text())["pid"] == os.getpid()
            with pytest.raises(RunFolderError, match="already locked by this process"):
                RunLock(d).acquire()
        assert not (Path(d) / LOCK).exists()


# -- defect 3: divergence guard and non-finite samples ------------------------------------------
def test_divergence_guard_never_saves_exploded_weights(tmp_path: Path) -> None:
    data = load_dataset("moons", n=500)
    opts = TrainOptions(steps=50, batch_size=32, lr=1e6, warmup=0, grad_clip=0, ckpt_every=1,
                        sample_every=0, progress=False)
    tr = Trainer(_model(), data, build_objective("dsm", VP), opts, tmp_path)
    with pytest.raises(TrainingDivergedError, match=r"weights (exploded|are non-finite)") as err:
        tr.fit()
    assert "the last finite checkpoint is" in str(err.value) or "no checkpoint" in str(err.value)
    for folder in (tmp_path / "checkpoints").glob("step_*"):
        tensors = load_file(str(folder / "weights.safetensors"))
        for k, v in tensors.items():
            if k.startswith(("model.", "ema.")):
                assert torch.isfinite(v).all() and v.abs().max() <= opts.max_weight, (folder, k)
    assert not (tmp_path / LOCK).exists()


def test_sampling_non_finite_weights_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = _model()
    with torch.no_grad():
        model.network.inp.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteSamplesError, match="NaN or infinite values in 8 of 8"):
        scoregen.sample(model, model.sde, (8, 2), "ddim", 4)
    save_checkpoint(tmp_path / "checkpoints", 1, model)
    assert main(["sample", str(tmp_path), "-n", "8", "--steps", "4", "--no-progress"]) == 1
    assert "NaN or infinite values" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.npz"))


# -- defect 4: resume compares the config with the checkpoint ------------------------------------
@pytest.mark.parametrize(("override", "field"), [
    ("model.prediction=x0", "model.prediction"), ("sde.name=ve", "sde.name"),
    ("model.width=32", "model.width"), ("sde.beta_max=10", "sde.beta_max"),
    ("data.name=rings", None),  # same shape: allowed
])
def test_resume_refuses_a_config_that_relabels_the_weights(
        tmp_path: Path, config: Path, capsys: pytest.CaptureFixture, override: str,
        field: str | None) -> None:
    run = tmp_path / "run"
    assert _train(config, run) == 0
    sha = json.loads((run / "checkpoints/step_000010/checkpoint.json").read_text())["files"]
    capsys.readouterr()
    rc = _train(config, run, "--resume", "--steps", "12", "--set", override)
    out = capsys.readouterr()
    if field is None:
        assert rc == 0 and "changed on resume: data.name: 'moons' -> 'rings'" in out.out
        return
    assert rc == 1 and f"cannot resume from {run / 'checkpoints' / 'step_000010'}" in out.err
    assert field in out.err
    assert json.loads((run / "checkpoints/step_000010/checkpoint.json").read_text())[
        "files"] == sha and _steps(run) == ["step_000010"]


def test_resume_logs_allowed_changes_and_says_when_nothing_to_do(
        tmp_path: Path, config: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert _train(config, run, "--steps", "20") == 0
    ckpt = run / "checkpoints" / "step_000020" / "weights.safetensors"
    mtime = ckpt.stat().st_mtime_ns
    capsys.readouterr()
    for steps in ("20", "15"):
        assert _train(config, run, "--resume", "--steps", steps) == 0
        out = capsys.readouterr().out
        assert "already at step 20" in out and "nothing was trained" in out
        assert "trained" not in out.replace("nothing was trained", "")
    assert ckpt.stat().st_mtime_ns == mtime  # not rewritten
    assert _train(config, run, "--resume", "--steps", "25", "--set", "train.lr=0.01") == 0
    out = capsys.readouterr().out
    assert "changed on resume: train.lr: 0.002 -> 0.01" in out and "trained 5 steps" in out


# -- defect 6: a model knows its data shape -----------------------------------------------------
@pytest.mark.parametrize(("network", "shape", "bad"), [
    ("unet", (1, 8, 8), (4, 1, 16, 16)), ("mlp", (2,), (10, 2, 1)), ("mlp", (2,), (10, 3)),
])
def test_model_refuses_inputs_of_the_wrong_shape(network: str, shape: tuple[int, ...],
                                                 bad: tuple[int, ...]) -> None:
    opts = {"channels": 8, "mult": [1], "groups": 4} if network == "unet" else {"width": 8}
    model = ScoreModel(build_network(network, shape, **opts), scoregen.sde.get("vp"))
    want = rf"model is for data of shape \({shape[0]},"
    with pytest.raises(ValueError, match=want):
        scoregen.sample(model, model.sde, bad, "ddim", 3)
    with pytest.raises(ValueError, match=want):
        scoregen.sample(model, model.sde, torch.randn(bad), "ddim", 3)
    with pytest.raises(ValueError, match="the model is for data of shape"):
        model(torch.randn(bad), torch.full((bad[0],), 0.5))
    assert scoregen.sample(model, model.sde, (3, *shape), "ddim", 2).x.shape == (3, *shape)
    assert model.data_shape == shape


# -- log.csv, leftovers, threads, time limit, clipping -------------------------------------------
def test_resume_truncates_log_and_cleans_leftovers(tmp_path: Path, config: Path) -> None:
    run = tmp_path / "run"
    assert _train(config, run, "--steps", "20", "--set", "train.ckpt_every=10") == 0
    # as after a kill between the log row of step 20 and its checkpoint
    ckpts = run / "checkpoints"
    import shutil

    shutil.rmtree(ckpts / "step_000020")
    (ckpts / "LATEST").write_text("step_000010\n")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (ckpts / f".tmp-{dead}-0badf00d-step_000020").mkdir()  # left by a killed writer
    (ckpts / f".tmp-{dead}-0badf00d-LATEST").write_text("x")
    (ckpts / f".tmp-{os.getppid()}-0badf00d-LATEST").write_text("x")  # a live one's: kept
    with open(run / "log.csv", "a") as fh:
        fh.write("2")  # a torn row
    assert _train(config, run, "--steps", "20", "--resume") == 0
    assert _log_steps(run) == [5, 10, 15, 20]
    assert [p.name for p in ckpts.iterdir() if ".tmp-" in p.name] == [
        f".tmp-{os.getppid()}-0badf00d-LATEST"]
    assert truncate_log(run / "log.csv", 12) == 2 and _log_steps(run) == [5, 10]


def test_threads_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads(0) == (3, "OMP_NUM_THREADS")
    assert resolve_threads(2) == (2, "train.threads")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert resolve_threads(0) == (len(os.sched_getaffinity(0)), "cores")
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="OMP_NUM_THREADS='many' is not a positive integer"):
        resolve_threads(0)
    for path in Path(__file__).resolve().parents[1].glob("configs/*.yaml"):
        assert load_config(path).train.threads == 0, path  # no fixed count in the configs


def test_time_limit_stops_with_a_checkpoint_and_resumes(tmp_path: Path, config: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert _train(config, run, "--steps", "100000", "--time-limit", "0.5s") == 0
    out = capsys.readouterr().out
    assert "stopped at the time limit (0.5 s)" in out
    step = int(find_checkpoint(run).name[5:])
    assert 0 < step < 100000 and _log_steps(run)[-1] == step
    assert _train(config, run, "--steps", str(step + 3), "--resume") == 0
    assert find_checkpoint(run).name == f"step_{step + 3:06d}"


def test_image_samples_are_clipped_unless_no_clip(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    net = build_network("unet", (1, 8, 8), channels=8, mult=[1], groups=4)
    with torch.no_grad():
        net.conv_out.bias.fill_(0.8)  # x0 predictions near 0.8, sample noise pushes some past 1
        net.conv_out.weight.normal_(0, 0.5)
    model = ScoreModel(net, scoregen.sde.get("vp"), prediction="x0")
    save_checkpoint(tmp_path / "checkpoints", 1, model)
    png = tmp_path / "s.png"
    assert main(["sample", str(tmp_path), "-n", "4", "--steps", "3", "--out", str(png),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    clipped = np.load(png.with_suffix(".npz"))
    assert bool(clipped["clipped"]) and np.abs(clipped["x"]).max() <= 1
    frac = float(clipped["out_of_range"])
    assert f"{100 * frac:.2f}% of values fell outside the data range" in out
    assert main(["sample", str(tmp_path), "-n", "4", "--steps", "3", "--out", str(png),
                 "--no-clip", "--no-progress"]) == 0
    raw = np.load(png.with_suffix(".npz"))
    assert not bool(raw["clipped"]) and 0 < frac < 1
    assert float((np.abs(raw["x"]) > 1).mean()) == pytest.approx(frac)
    np.testing.assert_array_equal(np.clip(raw["x"], -1, 1), clipped["x"])


def _model() -> ScoreModel:
    torch.manual_seed(0)
    return ScoreModel(build_network("mlp", (2,), width=8, depth=1), scoregen.sde.get("vp"))


def test_load_model_after_guarded_divergence(tmp_path: Path) -> None:
    """The checkpoint a divergence message names loads and samples finite values."""
    data = load_dataset("moons", n=500)
    opts = TrainOptions(steps=3, batch_size=32, ckpt_every=1, sample_every=0, progress=False)
    tr = Trainer(_model(), data, build_objective("dsm", VP), opts, tmp_path)
    tr.fit()
    tr.opt.steps, tr.opt.lr, tr.opt.warmup, tr.opt.grad_clip = 30, 1e6, 0, 0
    with pytest.raises(TrainingDivergedError) as err:
        tr.fit()
    named = Path(str(err.value).split("the last finite checkpoint is ")[1].split(". ")[0])
    model = load_model(named)
    assert torch.isfinite(scoregen.sample(model, model.sde, (16, 2), "ddim", 4).x).all()
