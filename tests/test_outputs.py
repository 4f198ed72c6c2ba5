"""Outputs never destroy files: atomic writes, the ownership record, the pre-flight, and the
commands that go through them (docs/outputs.md).

The must-fix cases of the output rules each have a test here: a torn ``.npz`` after a kill
(``test_a_kill_inside_the_npz_write_leaves_the_old_files``), ``evaluate --out`` onto a run's
own files (``test_evaluate_never_writes_over_a_runs_files``), duplicate config keys
(``test_config`` rows in ``tests/test_bad_inputs.py`` and
``test_duplicate_keys_are_errors_naming_key_and_file``), and ``--overwrite``/``--resume`` on a
folder scoregen did not make (``test_overwrite_and_resume_never_touch_a_foreign_folder``).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import scoregen
from scoregen.cli import main
from scoregen.infra import outputs
from scoregen.infra.outputs import RECORD, OutputError
from scoregen.models import ScoreModel, build_network
from scoregen.training.checkpoint import read_checkpoint, save_checkpoint
from scoregen.training.config import ConfigError, read_file

TINY = {
    "data": {"name": "moons", "n": 300},
    "sde": {"name": "vp"},
    "model": {"network": "mlp", "width": 8, "depth": 1},
    "train": {"steps": 4, "batch_size": 16, "log_every": 2, "ckpt_every": 2,
              "sample_every": 0, "threads": 1},
    "sample": {"sampler": "ddim", "steps": 3, "n": 8},
}


def _cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([*argv])
        except SystemExit as exit_:
            rc = int(exit_.code or 0)
    text = out.getvalue() + err.getvalue()
    assert "Traceback" not in text, text
    return rc, text


def _bytes(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (records and temporaries left out) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != RECORD and not p.name.startswith(outputs.TMP)}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("outputs")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    rc, text = _cli("train", str(cfg), "--out", str(root / "run"), "--no-progress")
    assert rc == 0, text
    return root / "run"


# -- the helper ----------------------------------------------------------------------------------
def test_writes_are_atomic_and_recorded(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    outputs.write_text(target, "old")
    with pytest.raises(RuntimeError, match="writer died"), \
            outputs.replacing(target) as (tmp,):
        tmp.write_text("half of the new")
        raise RuntimeError("writer died")
    assert target.read_text() == "old"  # the old file, not a torn one
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD, "a.json"]  # no temporary
    outputs.write_text(target, "new")
    assert target.read_text() == "new" and outputs.owner(target) == "output"
    entry = json.loads((tmp_path / RECORD).read_text())["files"]["a.json"]
    assert entry["sha256"] == outputs.sha256(target)
    assert "previous" not in entry and "pending" not in entry


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "k.npz"
    outputs.write_bytes(target, b"old")
    with pytest.raises(OutputError) as err, outputs.replacing(target) as (tmp,):
        tmp.write_bytes(b"part")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    message = str(err.value)
    assert str(target) in message and "No space left on device" in message
    assert "is unchanged" in message and "free some space" in message
    assert target.read_bytes() == b"old" and not list(tmp_path.glob(".tmp-*"))


def test_never_writes_over_a_file_scoregen_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "mine.md"
    mine.write_text("my notes")
    with pytest.raises(OutputError, match="was not written by scoregen"):
        outputs.write_text(mine, "x")
    ours = tmp_path / "ours.md"
    outputs.write_text(ours, "v1")
    ours.write_text("edited by hand")  # now the user's
    with pytest.raises(OutputError, match="was changed after scoregen wrote it"):
        outputs.write_text(ours, "v2")
    other = tmp_path / "other.md"
    outputs.write_text(other, "v1")
    (tmp_path / RECORD).unlink()  # deleting the record makes scoregen refuse more, not less
    with pytest.raises(OutputError, match="was not written by scoregen"):
        outputs.write_text(other, "v2")
    assert (mine.read_text(), ours.read_text(), other.read_text()) == (
        "my notes", "edited by hand", "v1")


def test_never_writes_through_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real.md"
    real.write_text("mine")
    (tmp_path / "link.md").symlink_to(real)
    with pytest.raises(OutputError, match="is not a regular file"):
        outputs.write_text(tmp_path / "link.md", "x")
    assert real.read_text() == "mine" and (tmp_path / "link.md").is_symlink()


def test_kinds_and_restricted_folders(tmp_path: Path) -> None:
    outputs.write_text(tmp_path / "config.yaml", "a: 1\n", kind="run")
    with pytest.raises(OutputError, match="is a scoregen file of kind 'run', not 'output'"):
        outputs.write_text(tmp_path / "config.yaml", "x")
    sealed = tmp_path / "ckpt"
    outputs.mark_folder(sealed, "checkpoint", only=("run",))
    with pytest.raises(OutputError, match="a scoregen checkpoint folder that holds only run"):
        outputs.check_target(sealed / "sub" / "eval.json", what="--out")
    outputs.write_text(sealed / "weights.bin", "w", kind="run")  # its own kind is welcome


@pytest.mark.parametrize(("name", "suffixes", "phrase"), [
    ("x.jpgx", (".png", ".npz"), "scoregen writes .png, .npz files here, not '.jpgx'"),
    ("noext", (".json",), "not no suffix"),
    ("dir", None, "is a folder; give a file name inside it"),
    ("a_file/x.png", None, "a_file is a file, not a folder"),
    (".tmp-1-abcdef01-x.png", None, "reserved for scoregen's own bookkeeping"),
    (RECORD, None, "reserved"),
])
def test_pre_flight_names_the_problem(tmp_path: Path, name: str, suffixes: tuple | None,
                                      phrase: str) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputError, match="--out") as err:
        outputs.check_target(tmp_path / name, suffixes, what="--out")
    assert phrase in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "dir"]  # creates nothing


def test_pre_flight_refuses_a_read_only_folder() -> None:
    folder = next((Path(p) for p in ("/sys", "/proc/self") if Path(p).is_dir()), None)
    if folder is None:
        pytest.skip("no read-only folder on this system")
    with contextlib.suppress(OutputError):
        outputs.check_target(folder / "out.png")
        pytest.skip(f"{folder} is writable here")
    with pytest.raises(OutputError, match=f"cannot write in {folder}"):
        outputs.check_target(folder / "out.png", what="--out")


def test_remove_owned_deletes_only_what_scoregen_wrote(tmp_path: Path) -> None:
    outputs.write_text(tmp_path / "a.md", "ours")
    outputs.write_text(tmp_path / "sub" / "b.md", "ours")
    outputs.write_text(tmp_path / "edited.md", "ours")
    (tmp_path / "edited.md").write_text("the user's now")
    (tmp_path / "mine.txt").write_text("mine")
    (tmp_path / "sub" / "mine.txt").write_text("mine")
    (tmp_path / "empty").mkdir()  # the user's empty folder stays
    kept = outputs.remove_owned(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in kept) == [
        "edited.md", "mine.txt", "sub/mine.txt"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                  if p.name != RECORD) == ["edited.md", "empty", "mine.txt", "sub",
                                           "sub/mine.txt"]


def test_stale_temporaries_of_a_dead_writer_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f".tmp-{int(dead.stdout)}-0badf00d-k.npz"
    live = tmp_path / f".tmp-{os.getppid()}-0badf00d-k.npz"  # a live writer's: left alone
    stale.write_bytes(b"torn")
    live.write_bytes(b"in progress")
    outputs.write_bytes(tmp_path / "k.npz", b"new")
    assert not stale.exists() and live.exists()


def test_an_interrupted_group_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    png, npz = tmp_path / "k.png", tmp_path / "k.npz"
    real = os.replace

    def dies_after_the_first(src: str, dst: str) -> None:
        real(src, dst)
        if Path(dst) == png:
            raise KeyboardInterrupt  # as a kill between the two renames

    def write_killed(png_bytes: bytes, npz_bytes: bytes) -> None:
        monkeypatch.setattr(outputs.os, "replace", dies_after_the_first)
        with pytest.raises(KeyboardInterrupt), outputs.replacing(png, npz) as (a, b):
            a.write_bytes(png_bytes)
            b.write_bytes(npz_bytes)
        monkeypatch.setattr(outputs.os, "replace", real)

    write_killed(b"first png", b"first npz")  # the first write: the .npz never appeared
    assert png.exists() and not npz.exists()
    assert outputs.interrupted(tmp_path) == [["k.npz", "k.png"]]
    with outputs.replacing(png, npz) as (a, b):
        a.write_bytes(b"old png")
        b.write_bytes(b"old npz")
    assert outputs.interrupted(tmp_path) == []
    write_killed(b"new png", b"new npz")
    assert (png.read_bytes(), npz.read_bytes()) == (b"new png", b"old npz")
    assert outputs.interrupted(tmp_path) == [["k.npz", "k.png"]]
    assert outputs.owner(png) == outputs.owner(npz) == "output"  # both still scoregen's
    with pytest.warns(outputs.InterruptedWriteWarning, match="come from different writes"):
        outputs.write_text(tmp_path / "other.md", "x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewriting the whole group is silent and resolves it
        with outputs.replacing(png, npz) as (a, b):
            a.write_bytes(b"png 3")
            b.write_bytes(b"npz 3")
    assert outputs.interrupted(tmp_path) == []


# -- the commands --------------------------------------------------------------------------------
def test_evaluate_never_writes_over_a_runs_files(run: Path, tmp_path: Path) -> None:
    ckpt = read_checkpoint(run).path
    before = _bytes(run)
    for target, phrase in [
        (ckpt / "weights.safetensors", "scoregen writes .json files here"),
        (ckpt / "checkpoint.json", "a scoregen checkpoint folder that holds only"),
        (ckpt / "eval.json", "a scoregen checkpoint folder that holds only"),
        (run / "checkpoints" / "LATEST.json", "a scoregen checkpoints folder"),
        (run / "config.yaml", "scoregen writes .json files here"),
    ]:
        rc, text = _cli("evaluate", str(run), "--metrics", "swd", "-n", "20", "--out",
                        str(target), "--no-progress")
        assert rc == 1 and phrase in text, text
        assert "NFE" not in text  # refused before the evaluation, not after it
    assert _bytes(run) == before
    read_checkpoint(run)  # still loads and verifies
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    rc, text = _cli("evaluate", str(run), "--metrics", "swd", "-n", "20", "--out", str(mine),
                    "--no-progress")
    assert rc == 1 and "was not written by scoregen" in text and mine.read_text() == "{}"


def test_sample_writes_both_files_and_replaces_only_its_own(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "k.npz"
    assert _cli("sample", str(run), "-n", "4", "--out", str(out), "--no-progress")[0] == 0
    first = _bytes(tmp_path)
    assert set(first) == {"k.npz", "k.png"}
    assert _cli("sample", str(run), "-n", "4", "--seed", "7", "--out", str(out),
                "--no-progress")[0] == 0
    second = _bytes(tmp_path)
    assert second["k.npz"] != first["k.npz"] and second["k.png"] != first["k.png"]
    (tmp_path / "k.png").write_bytes(b"my own picture")  # the user's now
    rc, text = _cli("sample", str(run), "-n", "4", "--out", str(out), "--no-progress")
    assert rc == 1 and "k.png exists and was changed after scoregen wrote it" in text
    assert (tmp_path / "k.png").read_bytes() == b"my own picture"
    assert (tmp_path / "k.npz").read_bytes() == second["k.npz"]


def test_guidance_that_explodes_is_refused_or_warned(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_network("mlp", (2,), width=8, depth=1, num_classes=3)
    with torch.no_grad():  # a model whose classes differ (the label table starts at zero)
        for p in net.parameters():
            p.normal_(0, 0.5)
    model = ScoreModel(net, scoregen.sde.get("vp"))
    save_checkpoint(tmp_path / "checkpoints", 1, model)
    out = tmp_path / "g.npz"
    rc, text = _cli("sample", str(tmp_path), "-n", "6", "--class", "1", "--guidance", "1e36",
                    "--steps", "3", "--out", str(out), "--no-progress")
    assert rc == 1 and "NaN or infinite values in 6 of 6 samples" in text, text
    assert "at guidance scale 1e+36" in text and "lower --guidance" in text
    assert not out.exists() and not out.with_suffix(".png").exists()
    rc, text = _cli("sample", str(tmp_path), "-n", "6", "--class", "1", "--guidance", "1e5",
                    "--steps", "3", "--out", str(out), "--no-progress")
    far = float(np.abs(np.load(out)["x"]).max())
    assert rc == 0 and far > 100, (far, text)
    assert f"warning: the samples reach |x| = {far:.3g}, far outside the data range" in text
    assert "the guidance scale 100000 is too large for this model" in text


def test_overwrite_and_resume_never_touch_a_foreign_folder(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    mine = tmp_path / "mine"
    (mine / "samples").mkdir(parents=True)
    (mine / "samples" / "figure.png").write_bytes(b"my figure")
    (mine / "config.yaml").write_text("train:\n  lr: 0.5\n")
    (mine / "log.csv").write_text("step,loss\n1,2\n")
    before = _bytes(mine)
    for mode in ("--overwrite", "--resume", None):
        rc, text = _cli("train", str(cfg), "--out", str(mine), "--no-progress",
                        *([mode] if mode else []))
        assert rc == 1 and "is not a scoregen run folder" in text, text
        assert "starting fresh" not in text
        assert _bytes(mine) == before
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml", "log.csv", "samples"]


def test_overwrite_removes_only_what_scoregen_wrote(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    assert _cli("train", str(cfg), "--out", str(run), "--no-progress")[0] == 0
    assert _cli("sample", str(run), "-n", "4", "--no-progress")[0] == 0  # run/samples/...
    (run / "samples" / "mine.png").write_bytes(b"my figure")
    (run / "notes.txt").write_text("notes")
    (run / "checkpoints" / "step_000004" / "README").write_text("about this checkpoint")
    rc, text = _cli("train", str(cfg), "--out", str(run), "--overwrite", "--steps", "2",
                    "--no-progress")
    assert rc == 0, text
    assert "--overwrite kept 3 file(s) scoregen did not write" in text
    assert (run / "samples" / "mine.png").read_bytes() == b"my figure"
    assert (run / "notes.txt").read_text() == "notes"
    assert (run / "checkpoints" / "step_000004" / "README").exists()
    assert not (run / "checkpoints" / "step_000004" / "weights.safetensors").exists()
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        RECORD, "mine.png", "step_000002.png"]
    assert read_checkpoint(run).step == 2


def test_duplicate_keys_are_errors_naming_key_and_file(tmp_path: Path) -> None:
    cases = {
        "sections.yaml": ("train:\n  lr: 0.001\ntrain:\n  steps: 5\n", "'train'", "lines 1 and 3"),
        "keys.yaml": ("train:\n  lr: 0.001\n  steps: 5\n  lr: 0.1\n", "'lr'", "lines 2 and 4"),
        "keys.json": ('{"train": {"lr": 0.001, "lr": 0.1}}', "'lr'", ""),
        "sections.json": ('{"train": {}, "sde": {}, "train": {"lr": 1}}', "'train'", ""),
    }
    for name, (text, key, where) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            read_file(path)
        assert str(path) in str(err.value) and f"key {key} is given twice" in str(err.value)
        assert where in str(err.value)
    merged = tmp_path / "merge.yaml"  # YAML merge keys are not duplicates
    merged.write_text("base: &b {lr: 0.1}\ntrain:\n  <<: *b\n  lr: 0.2\n")
    assert read_file(merged)["train"] == {"lr": 0.2}


# -- the reproducibility statement of docs/outputs.md -------------------------------------------
def test_sample_k_at_any_batch_size() -> None:
    """Sample k's noise and the oracle's samples are bitwise the same at any batch size; a
    network's are the same to float32 rounding (its products may round per batch size)."""
    from scoregen import analytic
    from scoregen.sampling.noise import NoiseSource, seeds_for

    big = NoiseSource(seeds_for(16, 3), (1, 8, 8), torch.float32, "cpu")
    small = NoiseSource(torch.tensor([3 + 11]), (1, 8, 8), torch.float32, "cpu")
    for j in range(3):
        assert torch.equal(big.draw(j)[11:12], small.draw(j))
    vp = scoregen.sde.get("vp")
    oracle = analytic.preset("ring8").model(vp)
    full = scoregen.sample(oracle, vp, (9, 2), "dpm_solver++", 6, seed=5).x
    for k in (0, 4, 8):
        one = scoregen.sample(oracle, vp, (1, 2), "dpm_solver++", 6, seed=5 + k).x
        assert torch.equal(one[0], full[k])
    torch.manual_seed(0)
    net = build_network("unet", (1, 8, 8), channels=16, mult=[1, 2], groups=4)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    model = ScoreModel(net, vp)
    full = scoregen.sample(model, vp, (16, 1, 8, 8), "ddim", 5, seed=0).x
    for b in (1, 3):
        part = scoregen.sample(model, vp, (b, 1, 8, 8), "ddim", 5, seed=0).x
        assert (part - full[:b]).abs().max() <= 1e-6 * max(1.0, float(full.abs().max()))


def test_training_goes_on_past_a_preview_it_may_not_write(tmp_path: Path) -> None:
    """A preview PNG edited by hand is not written over: a warning, and the run finishes;
    LATEST may be set by hand (it is recorded by name)."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    argv = ["train", str(cfg), "--out", str(run), "--set", "train.sample_every=2",
            "--no-progress"]
    assert _cli(*argv)[0] == 0
    (run / "samples" / "step_000004.png").write_bytes(b"my annotated figure")
    (run / "checkpoints" / "LATEST").write_text("step_000002\n")  # continue from step 2
    rc, text = _cli(*argv, "--resume")
    assert rc == 0 and "resuming" in text and "from step 2" in text, text
    assert "warning: sample preview not written" in text and "step_000004.png exists" in text
    assert (run / "samples" / "step_000004.png").read_bytes() == b"my annotated figure"
    assert read_checkpoint(run).step == 4


def test_a_full_disk_while_logging_names_the_log(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from scoregen.training import csv_log

    log = csv_log.CsvLog(tmp_path / "log.csv")
    log.write(1, 0.5, 1e-3, 10.0, 0.1)

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(csv_log.os, "write", full)
    with pytest.raises(OutputError, match=r"cannot append to .*log\.csv: No space left"):
        log.write(2, 0.5, 1e-3, 10.0, 0.1)
    monkeypatch.undo()
    log.close()
    assert (tmp_path / "log.csv").read_text().splitlines() == [
        "step,loss,lr,examples_per_s,seconds", "1,0.5,0.001,10.0,0.100"]
