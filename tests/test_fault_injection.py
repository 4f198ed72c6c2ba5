"""SIGKILL at any moment loses no work and destroys no file.

- Training: kill it once in the middle of a checkpoint write, then at random moments; check
  the stale lock and the resume checks, resume, and the final weights equal an uninterrupted
  run's bit for bit (slow).
- Every command of README (train, sample, evaluate, compare, tune-grid), killed at moments
  drawn at random over its own duration: the user's files next to its outputs are unchanged,
  and each output is the old file or a whole new one (docs/outputs.md). Kills at chosen
  points: inside the ``.npz`` write, between the renames of a group, the moment the ``.npz``
  changes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from scoregen.cli import main
from scoregen.infra import outputs
from scoregen.training.checkpoint import read_checkpoint

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
from scoregen.infra import outputs
kill_at, seen = int(os.environ.get("KILL_AT_WRITE", "0")), [0]
write_text = outputs.write_text
def killing_write_text(path, text, **kw):
    if path.name == "checkpoint.json":
        seen[0] += 1
        if seen[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return write_text(path, text, **kw)
outputs.write_text = killing_write_text
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


# -- every command, killed at random moments: the user's files stay intact ---------------------
# One process imports scoregen once and forks a child per command (so a run costs the command,
# not the interpreter start); the test SIGKILLs the child at a moment drawn uniformly over the
# first 90% of the command's own uninterrupted duration (measured just before). HOOKS kill a
# child at chosen points of a write instead.
ZYGOTE = r"""
import json, os, signal, sys, traceback
os.environ["OMP_NUM_THREADS"] = "1"
import torch
torch.set_num_threads(1)
import matplotlib.pyplot
from scoregen.cli import main
import scoregen.training, scoregen.evaluation.compare, scoregen.evaluation.evaluate
import scoregen.sampling.grid_tuning, scoregen.commands.sample
torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # imports torch._dynamo, once
HOOKS = {
    # kill inside the .npz write: half of the bytes written, then SIGKILL
    "tear_npz": '''
import scoregen.commands.sample as m
save = m.save_npz
def torn(path, **arrays):
    save(path, **arrays)
    with open(path, "r+b") as fh:
        fh.truncate(fh.seek(0, 2) // 2)
    os.kill(os.getpid(), signal.SIGKILL)
m.save_npz = torn
''',
    # a file-size limit, as a full disk or quota: writes past 20 kB fail with EFBIG
    "fsize": '''
import resource
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
''',
    # kill between the renames of a group: the plot replaced, the .npz not yet
    "between_renames": '''
replace = os.replace
def once(src, dst):
    replace(src, dst)
    if str(dst).endswith(".png"):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = once
''',
}
sys.stdout.write("ready\n"); sys.stdout.flush()
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1); os.dup2(fd, 2)
        try:
            if job.get("hook"):
                exec(HOOKS[job["hook"]])
            code = main(job["argv"])
        except BaseException:
            traceback.print_exc(); code = 99
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    sys.stdout.write(json.dumps({"pid": pid}) + "\n"); sys.stdout.flush()
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(json.dumps({"status": status}) + "\n"); sys.stdout.flush()
"""


class Zygote:
    """Runs ``scoregen`` commands in forked children of one warm interpreter."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, bufsize=0, env=_env())
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().decode().strip()  # unbuffered: reads no further

    def run(self, argv: list[str], log: Path, *, kill_after: float | None = None,
            kill_when: Callable[[], bool] | None = None, hook: str | None = None
            ) -> tuple[int, float]:
        """``(exit code or -signal, seconds)`` of one command, SIGKILLed ``kill_after`` seconds
        after its start or as soon as ``kill_when()`` holds (if it is still running)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps({"argv": argv, "log": str(log), "hook": hook})
                               + "\n").encode())
        start = time.perf_counter()
        pid = json.loads(self._line())["pid"]
        out = self.proc.stdout.fileno()
        try:
            if kill_after is not None and not select.select([out], [], [], kill_after)[0]:
                self._kill(pid)
            while kill_when is not None and not select.select([out], [], [], 0.0005)[0]:
                if kill_when():
                    self._kill(pid)
                    break
        finally:  # always read the status line, so the next command's lines stay in step
            status = json.loads(self._line())["status"]
        seconds = time.perf_counter() - start
        return (-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status),
                seconds)

    @staticmethod
    def _kill(pid: int) -> None:
        """SIGKILL the command's child. The zygote reaps a finished child before it writes the
        status line, so a child that finished just now may be gone already: then it finished
        first, and its status line says how."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.kill()  # it holds no files: no need to wait for the interpreter's shutdown
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


def _snapshot(folder: Path) -> dict[str, bytes]:
    """The files below ``folder`` and their bytes, without scoregen's bookkeeping (records,
    the lock, anything under a temporary name a killed writer left)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in (outputs.RECORD, ".lock")
            and not any(part.startswith((outputs.TMP, outputs.OLD))
                        for part in p.relative_to(folder).parts)}


def _complete(path: Path) -> None:
    """Raise unless ``path`` is a whole file of its format."""
    suffix = path.suffix
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                npz[key]
    elif suffix == ".json":
        json.loads(path.read_text())
    elif suffix == ".png":
        from PIL import Image

        with Image.open(path) as img:
            img.load()
    elif suffix == ".safetensors":
        read_checkpoint(path.parent)
    elif suffix == ".yaml":
        yaml.safe_load(path.read_text())
    elif path.name != "LATEST":
        assert path.read_text().strip(), path  # markdown, CSV: whole text, not empty


def _check_intact(folder: Path, before: dict[str, bytes], users: dict[str, bytes]) -> None:
    """After a kill: the user's files are unchanged; every other file is the one it was, or a
    new one that scoregen finished (its bytes are the ones recorded) and that parses."""
    now = _snapshot(folder)
    for name, data in users.items():
        assert now.get(name) == data, f"the user's {name} changed"
    for name, data in now.items():
        if name in users or before.get(name) == data:
            continue
        path = folder / name
        if path.name in ("log.csv", "LATEST"):  # by-name files: append log, pointer
            continue
        entry = json.loads((path.parent / outputs.RECORD).read_text())["files"][path.name]
        assert outputs.sha256(path) == entry["sha256"], f"{name} is not a finished write"
        _complete(path)


def _commands(tmp: Path, run: Path, config: Path) -> dict[str, tuple[Path, Callable]]:
    """``name -> (output folder, argv(i))``: every command of README, writing its outputs."""
    return {
        "sample": (tmp / "S", lambda i: ["sample", str(run), "-n", "3000", "--steps", "6",
                                         "--seed", str(i), "--out", str(tmp / "S" / "k.npz"),
                                         "--no-progress"]),
        "evaluate": (tmp / "E", lambda i: ["evaluate", str(run), "--metrics", "swd", "-n",
                                           "300", "--steps", "4", "--seed", str(i), "--out",
                                           str(tmp / "E" / "eval.json"), "--no-progress"]),
        "compare": (tmp / "C", lambda i: ["compare", "-n", "32", "--samplers", "ddim",
                                          "--budgets", "3,6", "--seed", str(i), "--out",
                                          str(tmp / "C"), "--no-progress"]),
        "tune-grid": (tmp / "G", lambda i: ["tune-grid", "ring8", "--sampler", "ddim",
                                            "--nfe", "3", "-n", "24", "--held-out", "4",
                                            "--teacher-steps", "20", "--max-evals", "20",
                                            "--seed", str(i), "--out", str(tmp / "G"),
                                            "--no-progress"]),
        "train": (tmp / "R", lambda i: ["train", str(config), "--out", str(tmp / "R"),
                                        "--resume", "--break-lock", "--steps", str(4 * (i + 1)),
                                        "--set", "train.ckpt_every=2",
                                        "--set", "train.sample_every=4", "--no-progress"]),
    }


def _kill_every_command(zygote: Zygote, tmp_path: Path, kills: int, seed: int) -> list[str]:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    assert _in_process(["train", str(config), "--out", str(run), "--steps", "4",
                        "--no-progress"])[0] == 0
    rng, report = random.Random(seed), []
    for name, (folder, argv) in _commands(tmp_path, run, config).items():
        log = tmp_path / f"{name}.log"
        code, seconds = zygote.run(argv(0), log)  # the files a kill may meet
        assert code == 0, log.read_text()
        users = {"notes.txt": b"my notes", "mine.npz": b"not even an npz"}
        if name == "train":
            users["samples/mine.png"] = b"my picture"
        for user, data in users.items():
            (folder / user).write_bytes(data)
        for i in range(1, kills + 1):
            before = _snapshot(folder)
            moment = rng.uniform(0, 0.9 * seconds)
            code, _ = zygote.run(argv(i), log, kill_after=moment)
            assert code in (0, -signal.SIGKILL), log.read_text()
            _check_intact(folder, before, users)
            report.append(f"{name} killed at {moment:.3f} of {seconds:.3f} s: "
                          f"{'killed' if code else 'finished first'}")
        code, _ = zygote.run(argv(kills + 1), log)  # and it still works afterwards
        assert code == 0, log.read_text()
        _check_intact(folder, {}, users)
    return report


def test_kill_every_command_at_random_moments(zygote: Zygote, tmp_path: Path) -> None:
    report = _kill_every_command(zygote, tmp_path, kills=1, seed=25)
    assert any(r.endswith(": killed") for r in report), report  # (a run may finish first)


@pytest.mark.slow
def test_kill_every_command_at_many_random_moments(zygote: Zygote, tmp_path: Path) -> None:
    report = _kill_every_command(zygote, tmp_path, kills=12, seed=2025)
    assert sum(r.endswith(": killed") for r in report) >= 30, report


def _sample_twice(zygote: Zygote, tmp_path: Path) -> tuple[Path, Path, list[str], dict]:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    assert _in_process(["train", str(config), "--out", str(run), "--steps", "4",
                        "--no-progress"])[0] == 0
    out = tmp_path / "out"
    argv = ["sample", str(run), "-n", "2000", "--steps", "4", "--out", str(out / "k.npz"),
            "--no-progress"]
    assert zygote.run(argv, tmp_path / "log")[0] == 0
    return run, out, argv, _snapshot(out)


def test_a_kill_inside_the_npz_write_leaves_the_old_files(zygote: Zygote,
                                                            tmp_path: Path) -> None:
    _, out, argv, old = _sample_twice(zygote, tmp_path)
    code, _ = zygote.run([*argv, "--seed", "9"], tmp_path / "log", hook="tear_npz")
    assert code == -signal.SIGKILL
    assert _snapshot(out) == old  # not a 0-byte .npz, and the plot is the old one too
    assert [p.name for p in out.glob(".tmp-*")]  # the torn temporary, under a hidden name
    assert zygote.run([*argv, "--seed", "9"], tmp_path / "log")[0] == 0
    assert not list(out.glob(".tmp-*"))  # the next write removed it
    assert _snapshot(out) != old


def test_a_kill_between_the_renames_is_visible(zygote: Zygote, tmp_path: Path) -> None:
    run, out, argv, old = _sample_twice(zygote, tmp_path)
    code, _ = zygote.run([*argv, "--seed", "9"], tmp_path / "log", hook="between_renames")
    assert code == -signal.SIGKILL
    now = _snapshot(out)
    assert now["k.npz"] == old["k.npz"] and now["k.png"] != old["k.png"]
    assert outputs.interrupted(out) == [["k.npz", "k.png"]]
    log = tmp_path / "log2"
    assert zygote.run(["sample", str(run), "-n", "8", "--out", str(out / "other.png"),
                       "--no-progress"], log)[0] == 0
    assert "warning: " + str(out / "k.npz") + " and " in log.read_text()
    assert "come from different writes" in log.read_text()
    assert zygote.run([*argv, "--seed", "9"], tmp_path / "log")[0] == 0
    assert outputs.interrupted(out) == []


def test_kill_as_soon_as_the_npz_changes(zygote: Zygote, tmp_path: Path) -> None:
    """The report's own recipe: start a second sample into k.npz and SIGKILL it the moment
    k.npz changes on disk."""
    _, out, argv, old = _sample_twice(zygote, tmp_path)
    first = (out / "k.npz").stat()

    def changed() -> bool:
        with contextlib.suppress(FileNotFoundError):
            now = (out / "k.npz").stat()
            return (now.st_ino, now.st_size, now.st_mtime_ns) != (
                first.st_ino, first.st_size, first.st_mtime_ns)
        return True

    code, _ = zygote.run([*argv, "--seed", "9", "-n", "20000"], tmp_path / "log",
                         kill_when=changed)
    assert code == -signal.SIGKILL
    with np.load(out / "k.npz") as npz:
        assert npz["x"].shape == (20000, 2) and int(npz["seed"]) == 9  # whole and new
    _check_intact(out, old, {})


def test_a_full_disk_names_the_file_and_changes_nothing(zygote: Zygote, tmp_path: Path) -> None:
    """A real resource limit (RLIMIT_FSIZE, as a full disk or quota): one error line naming
    the files, and the old ones intact."""
    _, out, argv, old = _sample_twice(zygote, tmp_path)
    log = tmp_path / "full"
    assert zygote.run([*argv, "--seed", "9"], log, hook="fsize")[0] == 1
    text = log.read_text()
    assert f"error: cannot write {out / 'k.png'} and {out / 'k.npz'}: File too large" in text
    assert "are unchanged" in text and "Traceback" not in text
    assert _snapshot(out) == old and not list(out.glob(".tmp-*"))
