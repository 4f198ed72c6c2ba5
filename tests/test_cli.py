"""The command line end to end: train, resume, sample, list, discovery, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from scoregen import commands
from scoregen.cli import discover_commands, main

TINY = {
    "data": {"name": "moons", "n": 500},
    "sde": {"name": "vp"},
    "model": {"network": "mlp", "width": 16, "depth": 1},
    "train": {"steps": 10, "batch_size": 32, "log_every": 5, "ckpt_every": 10,
              "sample_every": 10, "threads": 1},
    "sample": {"sampler": "ddim", "steps": 4, "n": 16},
}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_train_resume_sample(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["train", str(config), "--steps", "10", "--out", str(run), "--no-progress",
                 "--set", "train.lr=0.01"]) == 0
    assert (run / "config.yaml").is_file() and (run / "samples" / "step_000010.png").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 0.01
    log = (run / "log.csv").read_text().splitlines()
    assert log[0] == "step,loss,lr,examples_per_s,seconds" and len(log) == 3
    assert main(["train", str(config), "--steps", "20", "--out", str(run), "--resume",
                 "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert (run / "checkpoints" / "LATEST").read_text().strip() == "step_000020"
    assert len((run / "log.csv").read_text().splitlines()) == 5

    out = tmp_path / "grid.png"
    assert main(["sample", str(run), "--sampler", "ddim", "--steps", "5", "-n", "12",
                 "--out", str(out), "--opt", "eta=1.0", "--no-progress"]) == 0
    assert out.is_file()
    npz = np.load(out.with_suffix(".npz"))
    assert npz["x"].shape == (12, 2) and int(npz["nfe"]) == 5
    # defaults from the run's sample section, and re-targeting to another SDE
    assert main(["sample", str(run), "--sde", "ve", "--no-progress"]) == 0
    assert np.load(run / "samples" / "sample_ddim_4.npz")["x"].shape == (16, 2)


def test_list_shows_every_registry(capsys: pytest.CaptureFixture) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("sdes:", "vp", "samplers:", "ddim", "networks:", "unet", "datasets:",
                 "checkerboard", "presets:", "ring8"):
        assert word in out
    assert main(["list", "networks"]) == 0
    assert "samplers:" not in capsys.readouterr().out


def test_errors_are_one_line(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture) -> None:
    config.write_text(yaml.safe_dump({**TINY, "trian": {}}))
    assert main(["train", str(config)]) == 1
    err = capsys.readouterr().err
    assert "error: unknown key 'trian' in config (did you mean 'train'?)" in err
    assert main(["sample", str(tmp_path / "nope")]) == 1
    assert "no such run or checkpoint" in capsys.readouterr().err
    assert main([]) == 1


def test_commands_are_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "hello_world.py").write_text(
        '"""Say hello."""\n'
        "def add_arguments(parser):\n    parser.add_argument('--name', default='x')\n"
        "def run(args):\n    print('hello', args.name)\n    return 3\n")
    (tmp_path / "broken.py").write_text("raise ImportError('boom')\n")
    monkeypatch.setattr(commands, "__path__", [*commands.__path__, str(tmp_path)])
    found = discover_commands()
    assert {"train", "sample", "list", "hello-world"} <= set(found)
    assert "broken" not in found
    assert "command 'broken' failed to load: boom" in capsys.readouterr().err
    assert main(["hello-world", "--name", "y"]) == 3
    assert "hello y" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "Say hello." in capsys.readouterr().out
    for name in ("hello_world", "broken"):
        sys.modules.pop(f"scoregen.commands.{name}", None)


def test_python_dash_m(tmp_path: Path, config: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "scoregen", "train", str(config), "--steps", "4", "--out",
         str(run), "--set", "train.sample_every=0"],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "trained 4 steps" in proc.stdout and "train" in proc.stderr  # tqdm bar on stderr
    assert (run / "checkpoints" / "step_000004" / "weights.safetensors").is_file()
    bad = subprocess.run([sys.executable, "-m", "scoregen", "sample", str(tmp_path / "x")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and "error:" in bad.stderr


def test_a_closed_pipe_on_stdout_ends_quietly():
    """`scoregen list | head`: the reader leaves early; no traceback, exit 141 (SIGPIPE)."""
    # every line flushed, and a pause after the first so that the reader has gone by the next
    flushing = ("import builtins, sys, time\nfrom scoregen.cli import main\n"
                "_print, lines = builtins.print, []\n"
                "def flushed(*a, **k):\n    _print(*a, **k)\n    sys.stdout.flush()\n"
                "    lines.append(1)\n    if len(lines) == 1:\n        time.sleep(1.0)\n"
                "builtins.print = flushed\nsys.exit(main(['list']))")
    proc = subprocess.Popen([sys.executable, "-c", flushing], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.read(5)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "Traceback" not in err and "BrokenPipe" not in err
