"""SIGKILL at any moment loses no work: kill a training process (once in the middle of a
checkpoint write, then at random moments), check the stale lock and the resume checks, resume,
and the final weights equal an uninterrupted run's bit for bit."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from scoregen.cli import main

STEPS = 60
TINY = {
    "data": {"name": "moons", "n": 500},
    "sde": {"name": "vp"},
    "model": {"network": "mlp", "width": 16, "depth": 1},
    "train": {"steps": STEPS, "batch_size": 32, "log_every": 5, "ckpt_every": 1,
              "keep_checkpoints": 3, "sample_every": 0, "threads": 1},
    "sample": {"sampler": "ddim", "steps": 4, "n": 16},
}
# Runs `scoregen` and, with KILL_AT_WRITE=k, SIGKILLs itself while writing the k-th checkpoint:
# after its weights are in the temporary folder, before checkpoint.json and the move into place.
CHILD = r"""
import os, signal, sys
from scoregen.training import checkpoint
kill_at, seen = int(os.environ.get("KILL_AT_WRITE", "0")), [0]
write_text = checkpoint._write_text
def killing_write_text(path, text):
    if path.name == "checkpoint.json":
        seen[0] += 1
        if seen[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    write_text(path, text)
checkpoint._write_text = killing_write_text
from scoregen.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env(**extra: str) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            **extra}


def _argv(config: Path, run: Path, *extra: str) -> list[str]:
    return ["train", str(config), "--out", str(run), "--no-progress", *extra]


def _in_process(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue() + err.getvalue()


def _kill_randomly(argv: list[str], delay: float, sig: int = signal.SIGKILL) -> int:
    """Start a child, send it ``sig`` ``delay`` s after training starts; its return code."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env())
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("training "):
            break
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    proc.communicate(timeout=120)
    return proc.returncode


def _log_steps(run: Path) -> list[int]:
    with open(run / "log.csv", newline="") as fh:
        return [int(r[0]) for r in list(csv.reader(fh))[1:]]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert _in_process(_argv(config, ref))[0] == 0

    # 1. killed in the middle of its 5th checkpoint write
    proc = subprocess.run([sys.executable, "-c", CHILD, *_argv(config, run)], env=_env(
        KILL_AT_WRITE="5"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ckpts = run / "checkpoints"
    assert (ckpts / "LATEST").read_text().strip() == "step_000004"
    assert [p.name for p in ckpts.iterdir() if p.name.startswith(".tmp-")]
    assert (run / ".lock").exists()

    # 2. the stale lock is recognised, and the resume checks still hold after a kill
    rc, text = _in_process(_argv(config, run, "--resume"))
    assert rc == 1 and "has a stale lock" in text and "--break-lock" in text
    rc, text = _in_process(_argv(config, run, "--resume", "--break-lock", "--set",
                                 "model.prediction=x0"))
    assert rc == 1 and "model.prediction: checkpoint has 'eps'" in text
    assert not (run / ".lock").exists() and not [
        p for p in ckpts.iterdir() if p.name.startswith(".tmp-")]  # cleaned up on start

    # 3. killed at random moments (seeded), each time resumed from the last checkpoint
    rng = random.Random(1234)
    codes = [_kill_randomly(_argv(config, run, "--resume", "--break-lock"),
                            rng.uniform(0.0, 0.4)) for _ in range(3)]
    assert -signal.SIGKILL in codes, codes  # at least one was killed mid-run
    # SIGTERM unwinds like Ctrl-C: the lock is released, the next start needs no --break-lock
    code = _kill_randomly(_argv(config, run, "--resume", "--break-lock"), 0.1, signal.SIGTERM)
    assert code in (0, 128 + signal.SIGTERM) and not (run / ".lock").exists()
    rc, text = _in_process(_argv(config, run, "--resume"))
    assert rc == 0, text

    # 4. the same bits as the uninterrupted run, and a clean run folder
    a = load_file(str(ref / "checkpoints" / f"step_{STEPS:06d}" / "weights.safetensors"))
    b = load_file(str(ckpts / f"step_{STEPS:06d}" / "weights.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _log_steps(run) == _log_steps(ref) == list(range(5, STEPS + 1, 5))
    assert not (run / ".lock").exists()
    assert not [p for p in ckpts.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert sorted(p.name for p in ckpts.glob("step_*")) == [
        f"step_{s:06d}" for s in range(STEPS - 2, STEPS + 1)]
