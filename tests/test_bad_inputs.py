"""Every public boundary answers bad input with one clear line: a table, one row per case.

A CLI row is ``(argv, exit code, phrase)``: the command runs in-process through
``scoregen.cli.main``; the row asserts the exit code, that the phrase is in the output and
that no Python traceback escapes. Placeholders: ``{cfg}`` a tiny config, ``{run}`` a trained
tiny run (read-only), ``{copy}`` a fresh copy of it that the row's setup may damage,
``{tmp}`` a scratch folder, ``{files}`` prepared bad data files. Add a row whenever a new
input appears.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import scoregen
from scoregen.cli import main
from scoregen.data import load_dataset
from scoregen.models import ScoreModel, build_network
from scoregen.models.analytic import preset

TINY = {
    "data": {"name": "moons", "n": 300},
    "sde": {"name": "vp"},
    "model": {"network": "mlp", "width": 8, "depth": 1},
    "train": {"steps": 4, "batch_size": 16, "log_every": 2, "ckpt_every": 2,
              "sample_every": 0, "threads": 1},
    "sample": {"sampler": "ddim", "steps": 3, "n": 8},
}
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_inputs")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    (root / "bare.yaml").write_text(yaml.safe_dump({**TINY, "data": {"name": "moons"}}))
    run = root / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    files = root / "files"
    files.mkdir()
    (files / "garbage.npz").write_bytes(b"garbage")
    (files / "image.png").write_bytes(b"garbage")
    np.savez(files / "two.npz", a=np.zeros((2, 4, 4)), b=np.zeros((2, 4, 4)))
    np.savez(files / "flat.npz", x=np.zeros((4, 5)))
    np.savez(files / "range.npz", x=np.full((4, 4, 4), 7.0))
    (files / "empty").mkdir()
    mixed = files / "mixed"
    mixed.mkdir()
    from PIL import Image

    Image.new("L", (4, 4)).save(mixed / "a.png")
    Image.new("L", (5, 4)).save(mixed / "b.png")
    corrupt = files / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes(b"not a png")
    (files / "mnist_bad").mkdir()
    (files / "mnist_bad" / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04" * 4)
    (files / "mnist_short").mkdir()
    (files / "mnist_short" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03")
    (files / "a_file").write_text("x")
    (files / "list.yaml").write_text("- 1\n- 2\n")
    (files / "broken.yaml").write_text("train: [1, 2\n")
    (files / "cfg.txt").write_text("train: {}\n")
    (files / "empty_dir_run").mkdir()
    (files / "dup_section.yaml").write_text(yaml.safe_dump(TINY) + "train:\n  steps: 5\n")
    (files / "dup_key.yaml").write_text("train:\n  lr: 0.001\n  lr: 0.01\n")
    (files / "empty_train.yaml").write_text(yaml.safe_dump({**TINY, "train": None}))
    (files / "dup_key.json").write_text('{"train": {"lr": 0.001, "lr": 0.01}}')
    (files / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01")
    np.savez(files / "nan.npz", x=np.array([[0.1, np.nan], [0.2, 0.3]]))
    np.savez(files / "inf.npz", x=np.array([[0.1, np.inf], [0.2, 0.3]]))
    np.savez(files / "nan_images.npz", x=np.full((4, 4, 4), np.nan))
    np.savez(files / "no_images.npz", x=np.zeros((0, 4, 4)))
    np.savez(files / "objects.npz", x=np.array([{"a": 1}, None], dtype=object))
    np.save(files / "single.npy", np.zeros((2, 2)))
    np.savez(files / "good.npz", x=np.zeros((2, 2)))
    (files / "truncated.npz").write_bytes((files / "good.npz").read_bytes()[:60])
    (files / "empty.npz").write_bytes(b"")
    (files / "mine.json").write_text("{}")
    (files / "mine.png").write_bytes(b"my picture")
    (files / "cmp_mine").mkdir()
    (files / "cmp_mine" / "results.md").write_text("my results")
    (files / "grids_mine").mkdir()
    (files / "grids_mine" / "tuned_grids.json").write_text('{"format": 1, "grids": []}')
    for name, names in (("foreign", ["config.yaml", "samples"]), ("foreign_log", ["log.csv"])):
        (files / name).mkdir()
        for entry in names:
            (files / name / entry).write_text("mine") if "." in entry else (
                files / name / entry).mkdir()
    return {"cfg": cfg, "bare": root / "bare.yaml", "run": run, "files": files, "root": root}


def _latest(copy: Path) -> Path:
    return copy / "checkpoints" / "LATEST"


def _ckpt(copy: Path) -> Path:
    return copy / "checkpoints" / "step_000004"


def _live_lock(copy: Path) -> None:
    # the command runs in this process, so the owner is another live one: our parent
    import os

    (copy / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))


def _dead_lock(copy: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    (copy / ".lock").write_text(json.dumps({"pid": int(proc.stdout), "host": socket.gethostname()}))


SETUPS: dict[str, Callable[[Path], object]] = {
    "latest_garbage": lambda c: _latest(c).write_text("../../etc\n"),
    "latest_empty": lambda c: _latest(c).write_text(""),
    "latest_binary": lambda c: _latest(c).write_bytes(b"\xff\xfe\x00"),
    "latest_missing_target": lambda c: _latest(c).write_text("step_000099\n"),
    "latest_deleted": lambda c: _latest(c).unlink(),
    "sidecar_deleted": lambda c: (_ckpt(c) / "checkpoint.json").unlink(),
    "sidecar_corrupt": lambda c: (_ckpt(c) / "checkpoint.json").write_text('{"format": 1,'),
    "sidecar_foreign": lambda c: (_ckpt(c) / "checkpoint.json").write_text('{"a": 1}'),
    "weights_truncated": lambda c: (_ckpt(c) / "weights.safetensors").write_bytes(b"\x00" * 10),
    "weights_deleted": lambda c: (_ckpt(c) / "weights.safetensors").unlink(),
    "live_lock": _live_lock,
    "stale_lock": _dead_lock,
    "hashes_removed": lambda c: _edit_meta(c, lambda m: m.pop("files")),
    "meta_edited": lambda c: _edit_meta(c, lambda m: m["model"].update(prediction="x0")),
    "config_edited": lambda c: (c / "config.yaml").write_text(
        (c / "config.yaml").read_text() + "# my note\n"),
}


def _edit_meta(copy: Path, edit: Callable[[dict], object]) -> None:
    path = _ckpt(copy) / "checkpoint.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, indent=1))

T = ["train", "{cfg}", "--no-progress", "--out", "{tmp}/new"]  # a fresh run
D = ["train", "{bare}", "--no-progress", "--out", "{tmp}/new"]  # data section: a name only


def IMG(path: str) -> list[str]:  # noqa: N802 (reads like the other row prefixes)
    return [*D, "--set", "data.name=images", "--set", f"data.path={path}"]


def MNIST(root: str) -> list[str]:  # noqa: N802
    return [*D, "--set", "data.name=mnist", "--set", f"data.root={root}"]

TR = ["train", "{cfg}", "--no-progress", "--out", "{copy}"]   # into a copy of the run
S = ["sample", "{run}", "--no-progress", "--out", "{tmp}/s.png"]
C = ["compare", "-n", "16", "--samplers", "ddim", "--budgets", "3", "--no-progress",
     "--out", "{tmp}/cmp"]


# (id, argv, exit code, phrase[, setup][, env])
DI = ["distill", "--out", "{tmp}/student", "--no-progress"]
ROWS: list[tuple] = [
    # -- counts: zero and negative are errors everywhere ------------------------------------
    ("sample -n 0", [*S, "-n", "0"], 2, "argument -n: must be a positive integer, got 0"),
    ("sample -n -3", [*S, "-n", "-3"], 2, "argument -n: must be a positive integer, got -3"),
    ("sample -n abc", [*S, "-n", "abc"], 2, "must be a positive integer, got 'abc'"),
    ("sample --steps 0", [*S, "--steps", "0"], 2, "argument --steps: must be a positive integer"),
    ("evaluate --steps 0", ["evaluate", "{run}", "--steps", "0"], 2,
     "argument --steps: must be a positive integer"),
    ("tune-grid unknown --opt", ["tune-grid", "ring8", "--sampler", "unipc", "--nfe", "5",
                                 "--opt", "bogus=1"], 1, "unexpected keyword option 'bogus'"),
    ("sample --steps -1", [*S, "--steps", "-1"], 2, "must be a positive integer, got -1"),
    ("train --steps 0", [*T, "--steps", "0"], 1, "train.steps: must be > 0, got 0"),
    # -- processes and the capabilities of samplers and objectives -----------------------------
    ("train blur on vectors", [*T, "--set", "sde.name=blur", "--set", "sample.sampler=ddim"], 1,
     "blur diffuses images of shape (C, H, W)"),
    ("train cld previews with ddim", [*T, "--set", "sde.name=cld"], 1,
     "sample.sampler: sampler 'ddim' needs what the SDE 'cld' does not offer (diagonal_kernel"),
    ("train hsm on vp", [*T, "--set", "objective.name=hsm"], 1,
     "objective: objective 'hsm' needs what the SDE 'vp' does not offer (damped_langevin"),
    ("compare sscs on vp", [*C, "--samplers", "sscs"], 1,
     "sampler 'sscs' needs what the SDE 'vp' does not offer (damped_langevin"),
    ("compare blur on vectors", [*C, "--sde", "blur"], 1, "blur diffuses images"),
    ("train --steps -5", [*T, "--steps", "-5"], 1, "train.steps: must be > 0, got -5"),
    ("train batch 0", [*T, "--set", "train.batch_size=0"], 1, "train.batch_size: must be > 0"),
    ("train keep 0", [*T, "--set", "train.keep_checkpoints=0"], 1,
     "train.keep_checkpoints: must be > 0"),
    ("train log_every 0", [*T, "--set", "train.log_every=0"], 1, "train.log_every: must be > 0"),
    ("train ckpt_every -1", [*T, "--set", "train.ckpt_every=-1"], 1,
     "train.ckpt_every: must be >= 0"),
    ("compare -n 0", [*C, "-n", "0"], 1, "-n must be at least 2 samples, got 0"),
    ("compare budgets 0", [*C, "--budgets", "0,5"], 1, "NFE budgets must be positive integers"),
    ("compare budgets -5", [*C, "--budgets", "-5"], 1, "NFE budgets must be positive integers"),
    ("compare budgets text", [*C, "--budgets", "a,b"], 2, "expected integers separated by"),
    ("compare tolerances", [*C, "--tolerances", "-1"], 1, "--tolerances must be positive"),
    ("compare max-multi-nfe", [*C, "--max-multi-nfe", "-1"], 1, "--max-multi-nfe must be >= 0"),
    ("compare show-nfe", [*C, "--show-nfe", "0"], 1, "--show-nfe must be >= 1, got 0"),
    # -- flags and their values -------------------------------------------------------------
    ("train resume+overwrite", [*T, "--resume", "--overwrite"], 2,
     "not allowed with argument --resume"),
    ("train time-limit unit", [*T, "--time-limit", "10x"], 1,
     "--time-limit '10x' is not a duration; use e.g. 90s, 10m or 1.5h"),
    ("train time-limit 0", [*T, "--time-limit", "0"], 1, "--time-limit must be > 0"),
    ("train max_seconds -1", [*T, "--set", "train.max_seconds=-1"], 1,
     "train.max_seconds: must be >= 0"),
    ("sample unknown sampler", [*S, "--sampler", "nope"], 1, "unknown sampler 'nope'"),
    ("sample unknown sde", [*S, "--sde", "nope"], 1, "unknown SDE 'nope'"),
    ("sample spacing", [*S, "--spacing", "nope"], 1, "unknown spacing 'nope'"),
    ("sample --opt unknown", [*S, "--opt", "bogus=1"], 1,
     "sampler 'ddim' got an unexpected keyword option 'bogus'; its options: eta"),
    ("sample --opt type", [*S, "--opt", "eta=abc"], 1, "--opt eta: must be a number, got 'abc'"),
    ("sample --opt range", [*S, "--opt", "eta=2"], 1, "eta"),
    ("sample --opt form", [*S, "--opt", "eta"], 1, "--opt 'eta' must look like key=value"),
    ("sample bad out format", [*S[:-1], "{tmp}/s.jpgx"], 1,
     "--out {tmp}/s.jpgx: scoregen writes .npz, .avif"),
    ("sample out under a file", [*S[:-1], "{files}/a_file/s.png"], 1,
     "cannot create it, {files}/a_file is a file, not a folder"),
    ("sample --seed huge", [*S, "--seed", str(2**70)], 2, "--seed: must lie in [0, 2^62]"),
    ("sample --seed -1", [*S, "--seed", "-1"], 2, "--seed: must lie in [0, 2^62], got -1"),
    ("sample --resample 0", [*S, "--resample", "0"], 2, "--resample: must be a positive"),
    ("sample --guidance-interval", [*S, "--guidance-interval", "a,b"], 1,
     "--guidance-interval must be two times T_LO,T_HI"),
    ("sample too many samples", [*S, "-n", str(10**12), "--steps", "1"], 1,
     "out of memory (one array needed 8e+03 GB)"),
    ("sample too many steps", [*S, "--steps", str(10**12)], 1, "out of memory"),
    ("compare --seed huge", [*C, "--seed", str(2**63)], 2, "--seed: must lie in [0, 2^62]"),
    ("evaluate --rtol", ["evaluate", "{run}", "--rtol", "-1"], 1,
     "--rtol must be a positive number, got -1.0"),
    ("evaluate --seed", ["evaluate", "{run}", "--seed", "x"], 2, "--seed: must be an integer"),
    ("tune-grid -n 0", ["tune-grid", "ring8", "--sampler", "ddim", "--nfe", "3", "-n", "0"], 2,
     "-n: must be a positive integer, got 0"),
    ("train --seed -1", [*T, "--seed", "-1"], 2, "--seed: must lie in [0, 2^62], got -1"),
    ("train seed in config", [*T, "--set", f"train.seed={2**63}"], 1,
     "train.seed: must lie in [0, 2^62]"),
    # -- outputs: checked before the work, never over files scoregen did not write ----------
    ("sample out is a folder", [*S[:-1], "{files}/empty"], 1,
     "--out {files}/empty is a folder; give a file name inside it"),
    ("sample out without suffix", [*S[:-1], "{tmp}/samples"], 1, "not no suffix"),
    ("sample out over my file", [*S[:-1], "{files}/mine.png"], 1,
     "--out {files}/mine.png exists and was not written by scoregen"),
    ("sample out into checkpoints", [*S[:-1], "{run}/checkpoints/s.png"], 1,
     "is inside {run}/checkpoints, a scoregen checkpoints folder that holds only run files"),
    ("sample out temporary name", [*S[:-1], "{tmp}/.tmp-1-abcdef01-s.png"], 1,
     "the name is reserved for scoregen's own bookkeeping"),
    ("evaluate out weights", ["evaluate", "{copy}", "--out",
                              "{copy}/checkpoints/step_000004/weights.safetensors"], 1,
     "scoregen writes .json files here, not '.safetensors'"),
    ("evaluate out checkpoint.json", ["evaluate", "{copy}", "--out",
                                      "{copy}/checkpoints/step_000004/checkpoint.json"], 1,
     "a scoregen checkpoint folder that holds only grids and run files"),
    ("evaluate out config.yaml", ["evaluate", "{copy}", "--out", "{copy}/config.yaml"], 1,
     "scoregen writes .json files here, not '.yaml'"),
    ("evaluate out over my file", ["evaluate", "{run}", "--out", "{files}/mine.json"], 1,
     "--out {files}/mine.json exists and was not written by scoregen"),
    ("evaluate out md", ["evaluate", "{run}", "--out", "{tmp}/e.md"], 1,
     "scoregen writes .json files here, not '.md'"),
    ("compare out is a file", [*C[:-1], "{files}/a_file"], 1,
     "--out {files}/a_file is a file, not a folder"),
    ("compare out over my results", [*C[:-1], "{files}/cmp_mine"], 1,
     "--out {files}/cmp_mine/results.md exists and was not written by scoregen"),
    ("tune-grid out over my grids", ["tune-grid", "ring8", "--sampler", "ddim", "--nfe", "3",
                                     "--out", "{files}/grids_mine"], 1,
     "tuned_grids.json exists and was not written by scoregen"),
    ("train overwrite a foreign folder", [*T[:-1], "{files}/foreign", "--overwrite"], 1,
     "{files}/foreign holds config.yaml, samples but is not a scoregen run folder"),
    ("train resume a foreign folder", [*T[:-1], "{files}/foreign_log", "--resume"], 1,
     "holds log.csv but is not a scoregen run folder"),
    ("train fresh into a foreign folder", [*T[:-1], "{files}/foreign"], 1,
     "is not a scoregen run folder"),
    ("compare --opt unknown", [*C, "--opt", "ddim.bogus=1"], 1, "unexpected keyword option"),
    ("compare --opt type", [*C, "--opt", "ddim.eta=abc"], 1,
     "--opt ddim.eta: must be a number, got 'abc'"),
    ("compare --opt form", [*C, "--opt", "eta=1"], 1, "must look like sampler.key=value"),
    ("compare unknown sampler", [*C, "--samplers", "nope"], 1, "unknown sampler 'nope'"),
    ("compare unknown preset", [*C, "--preset", "nope"], 1, "unknown mixture preset 'nope'"),
    ("compare missing checkpoint", [*C, "--checkpoint", "{tmp}/nope"], 1,
     "no such run or checkpoint"),
    ("train --set form", [*T, "--set", "nokey"], 1, "must look like section.key=value"),
    ("train --set section", [*T, "--set", "train=5"], 1, "must look like section.key=value"),
    ("train --set typo", [*T, "--set", "trian.lr=1"], 1, "did you mean 'train'?"),
    ("train --set key typo", [*T, "--set", "train.lrr=1"], 1, "did you mean 'lr'?"),
    # -- --device ---------------------------------------------------------------------------
    ("sample --device foo", [*S, "--device", "foo"], 1, "device 'foo' is not a device"),
    ("compare --device foo", [*C, "--device", "foo"], 1, "device 'foo' is not a device"),
    ("train --device foo", [*T, "--device", "foo"], 1, "train.device: must be auto, cpu"),
    *([("sample --device cuda", [*S, "--device", "cuda"], 1, "CUDA is not available"),
       ("train --device cuda", [*T, "--device", "cuda"], 1, "CUDA is not available"),
       ("compare --device cuda:0", [*C, "--device", "cuda:0"], 1, "CUDA is not available")]
      if NO_CUDA else []),
    # -- config files and every section -----------------------------------------------------
    ("config missing", ["train", "{tmp}/none.yaml"], 1, "config file"),
    ("config format", ["train", "{files}/cfg.txt"], 1, "unknown config format '.txt'"),
    ("config yaml", ["train", "{files}/broken.yaml"], 1, "cannot parse"),
    ("config not a mapping", ["train", "{files}/list.yaml"], 1,
     "{files}/list.yaml: a config must be a mapping with sections"),
    ("config duplicate section", ["train", "{files}/dup_section.yaml"], 1,
     "{files}/dup_section.yaml: key 'train' is given twice in one mapping (lines"),
    ("config duplicate key", ["train", "{files}/dup_key.yaml"], 1,
     "{files}/dup_key.yaml: key 'lr' is given twice in one mapping (lines 2 and 3)"),
    ("config duplicate key json", ["train", "{files}/dup_key.json"], 1,
     "{files}/dup_key.json: key 'lr' is given twice"),
    ("config is a folder", ["train", "{files}/empty"], 1, "is a folder, not a file"),
    ("config is a device", ["train", "/dev/null"], 1, "config /dev/null is not a regular file"),
    ("config binary", ["train", "{files}/binary.yaml"], 1,
     "binary.yaml is not a text file (byte 0 is not UTF-8)"),
    ("train --set malformed", [*T, "--set", "train.lr=[1"], 1,
     "override 'train.lr=[1': the value '[1' is not valid YAML"),
    ("train --set into empty section", ["train", "{files}/empty_train.yaml", "--set",
                                        "train.steps=0"], 1, "train.steps: must be > 0"),
    ("data name", [*T, "--set", "data.name=nope"], 1, "data: unknown dataset 'nope'"),
    ("data n 0", [*T, "--set", "data.n=0"], 1, "data.n must be a positive integer, got 0"),
    ("data n type", [*T, "--set", "data.n=abc"], 1, "data.n: must be an integer, got 'abc'"),
    ("data unknown key", [*T, "--set", "data.root=x"], 1, "unknown key 'root' in data"),
    ("sde name", [*T, "--set", "sde.name=nope"], 1, "sde: unknown SDE 'nope'"),
    ("sde value", [*T, "--set", "sde.beta_max=-1"], 1, "beta_max must be a positive finite"),
    ("sde value type", [*T, "--set", "sde.beta_max=abc"], 1, "sde.beta_max: must be a number"),
    ("sde unknown key", [*T, "--set", "sde.sigma_max=3"], 1, "unknown key 'sigma_max' in sde"),
    ("model network", [*T, "--set", "model.network=nope"], 1, "unknown network 'nope'"),
    ("model prediction", [*T, "--set", "model.prediction=y"], 1,
     "model.prediction: must be one of eps, x0, v, edm"),
    ("model sigma_data", [*T, "--set", "model.sigma_data=0"], 1, "model.sigma_data: must be > 0"),
    ("model width -1", [*T, "--set", "model.width=-1"], 1, "model: cannot build network 'mlp'"),
    ("model depth type", [*T, "--set", "model.depth=abc"], 1, "model.depth: must be an integer"),
    ("model unknown key", [*T, "--set", "model.heads=2"], 1, "unknown key 'heads' in model"),
    ("objective name", [*T, "--set", "objective.name=x"], 1, "objective: unknown objective 'x'"),
    ("objective weighting", [*T, "--set", "objective.weighting=x"], 1,
     "objective: weighting must be one of"),
    ("objective t_sampling", [*T, "--set", "objective.t_sampling=x"], 1,
     "objective: t_sampling must be one"),
    ("objective p_std", [*T, "--set", "objective.p_std=0"], 1, "objective: p_std must be > 0"),
    ("train lr type", [*T, "--set", "train.lr=abc"], 1, "train.lr: must be a number"),
    ("train lr -1", [*T, "--set", "train.lr=-1"], 1, "train.lr: must be > 0"),
    ("train ema_decay", [*T, "--set", "train.ema_decay=1"], 1, "must lie in [0, 1)"),
    ("train precision", [*T, "--set", "train.precision=fp8"], 1, "train.precision: must be one"),
    ("train threads", [*T, "--set", "train.threads=-1"], 1, "train.threads: must be >= 0"),
    ("train max_weight", [*T, "--set", "train.max_weight=-1"], 1, "train.max_weight: must be"),
    ("train bool as number", [*T, "--set", "train.seed=true"], 1, "train.seed: must be an int"),
    ("sample sampler", [*T, "--set", "sample.sampler=nope"], 1, "sample: unknown sampler"),
    ("sample steps 0", [*T, "--set", "sample.steps=0"], 1, "sample.steps: must be > 0"),
    ("sample n 0", [*T, "--set", "sample.n=0"], 1, "sample.n: must be > 0"),
    ("sample spacing cfg", [*T, "--set", "sample.spacing=x"], 1, "sample.spacing: must be one"),
    ("sample option type", [*T, "--set", "sample.eta=abc"], 1, "sample.eta: must be a number"),
    ("OMP_NUM_THREADS", [*T, "--set", "train.threads=0"], 1,
     "OMP_NUM_THREADS='many' is not a positive integer", None, {"OMP_NUM_THREADS": "many"}),
    # -- dataset files of every format ------------------------------------------------------
    ("images no path", [*D, "--set", "data.name=images"], 1, "needs data.path"),
    ("images missing", IMG("{tmp}/nope"), 1,
     "does not exist"),
    ("images garbage npz", IMG("{files}/garbage.npz"), 1,
     "garbage.npz is not an .npz file (bad header: an .npz is a zip archive, but it starts "
     "with b'garb')"),
    ("images empty npz", IMG("{files}/empty.npz"), 1, "the file is empty"),
    ("images truncated npz", IMG("{files}/truncated.npz"), 1,
     "truncated.npz is a damaged .npz archive"),
    ("images npy", IMG("{files}/single.npy"), 1, "is a file but not an .npz"),
    ("images objects", IMG("{files}/objects.npz"), 1,
     "array 'x' in {files}/objects.npz holds Python objects"),
    ("images nan", IMG("{files}/nan_images.npz"), 1,
     "nan_images.npz holds 64 NaN value(s) among 64"),
    ("images none", IMG("{files}/no_images.npz"), 1, "array 'x' holds no images"),
    ("images not npz", IMG("{files}/image.png"), 1,
     "is a file but not an .npz"),
    ("images two arrays", IMG("{files}/two.npz"), 1,
     "cannot tell which array of {files}/two.npz to use (it holds ['a', 'b'])"),
    ("images flat", IMG("{files}/flat.npz"), 1,
     "has shape (4, 5); expected (N, H, W)"),
    ("images range", IMG("{files}/range.npz"), 1,
     "float values span"),
    ("images empty folder", IMG("{files}/empty"), 1,
     "no image files"),
    ("images mixed sizes", IMG("{files}/mixed"), 1,
     "all images must share one size"),
    ("images corrupt", IMG("{files}/corrupt"), 1,
     "cannot read image"),
    ("images channels", [*IMG("{files}/mixed"), "--set", "data.size=[4, 4]"],
     1, "all images must share one size"),
    ("mnist missing", MNIST("{files}/empty"), 1,
     "MNIST file train-images-idx3-ubyte[.gz] not found"),
    ("mnist bad magic", MNIST("{files}/mnist_bad"), 1,
     "is not an IDX file"),
    ("mnist truncated", MNIST("{files}/mnist_short"), 1,
     "is truncated"),
    # -- run folders ------------------------------------------------------------------------
    ("train into a run", [*TR], 1,
     "already holds a run (checkpoints, log.csv, config.yaml, samples)"),
    ("train out is a file", [*T[:-1], "{files}/a_file"], 1, "is a file; choose another --out"),
    ("train locked", [*TR, "--resume"], 1, "in use by another scoregen process", "live_lock"),
    ("train stale lock", [*TR, "--resume"], 1, "has a stale lock", "stale_lock"),
    ("resume prediction", [*TR, "--resume", "--steps", "6", "--set", "model.prediction=x0"], 1,
     "model.prediction: checkpoint has 'eps', config gives 'x0'"),
    ("resume sde", [*TR, "--resume", "--steps", "6", "--set", "sde.name=ve"], 1,
     "sde.name: checkpoint has 'vp', config gives 've'"),
    ("resume network", [*TR, "--resume", "--steps", "6", "--set", "model.width=16"], 1,
     "model.width: checkpoint has 8, config gives 16"),
    ("resume data shape", [*TR, "--resume", "--steps", "6", "--set",
                           "data.name=mixture", "--set", "data.preset=mix64"], 1, "data shape"),
    ("resume nothing to do", [*TR, "--resume", "--steps", "3"], 0,
     "already at step 4 (checkpoint"),
    ("resume damaged latest", [*TR, "--resume"], 1, "LATEST is damaged", "latest_garbage"),
    ("sample adaptive --steps", [*S, "--sampler", "ode_euler", "--steps", "2"], 0, "NFE"),
    ("sample adaptive --steps note", [*S, "--sampler", "ode_dopri5", "--steps", "5", "--opt",
                                      "rtol=1e-2", "--opt", "atol=1e-2"], 0,
     "--steps does not apply to the adaptive sampler ode_dopri5"),
    # -- checkpoint folders -----------------------------------------------------------------
    ("sample missing run", ["sample", "{tmp}/nope"], 1, "no such run or checkpoint"),
    ("sample empty folder", ["sample", "{files}/empty_dir_run"], 1, "holds no checkpoint"),
    ("LATEST garbage", ["sample", "{copy}"], 1, "LATEST is damaged (holds '../../etc'",
     "latest_garbage"),
    ("LATEST empty", ["sample", "{copy}"], 1, "LATEST is damaged", "latest_empty"),
    ("LATEST binary", ["sample", "{copy}"], 1, "LATEST is unreadable", "latest_binary"),
    ("LATEST dangling", ["sample", "{copy}"], 1, "names step_000099, which does not exist",
     "latest_missing_target"),
    ("LATEST missing", ["sample", "{copy}"], 1, "LATEST is missing; complete checkpoints in",
     "latest_deleted"),
    ("LATEST fix named", ["sample", "{copy}"], 1, "step_000002, step_000004", "latest_deleted"),
    ("sidecar missing", ["sample", "{copy}"], 1, "names step_000004, which has no checkpoint.json",
     "sidecar_deleted"),
    ("sidecar missing direct", ["sample", "{copy}/checkpoints/step_000004"], 1,
     "has weights.safetensors but no checkpoint.json", "sidecar_deleted"),
    ("sidecar corrupt", ["sample", "{copy}"], 1, "corrupt checkpoint metadata", "sidecar_corrupt"),
    ("sidecar foreign", ["sample", "{copy}"], 1, "is not a scoregen checkpoint", "sidecar_foreign"),
    ("weights truncated", ["sample", "{copy}"], 1, "are truncated or altered", "weights_truncated"),
    ("weights missing", ["sample", "{copy}"], 1, "weights.safetensors are missing",
     "weights_deleted"),
    ("compare damaged checkpoint", [*C, "--checkpoint", "{copy}"], 1, "LATEST is damaged",
     "latest_garbage"),
    ("checkpoint hashes removed", ["sample", "{copy}"], 1,
     "checkpoint.json records no size and SHA-256 of weights.safetensors", "hashes_removed"),
    ("checkpoint.json edited", ["sample", "{copy}"], 1,
     "checkpoint.json was edited after the checkpoint was written", "meta_edited"),
    ("resume edited checkpoint", [*TR, "--resume", "--steps", "6"], 1,
     "checkpoint.json was edited after", "meta_edited"),
    ("resume edited config.yaml", [*TR, "--resume", "--steps", "6"], 1,
     "run config {copy}/config.yaml exists and was changed after scoregen wrote it",
     "config_edited"),
    ("sample out beside my file", [*S[:-1], "{files}/mine.npz"], 1,
     "--out {files}/mine.png exists and was not written by scoregen"),
    # -- files a user gives: the cause, named -----------------------------------------------
    ("inpaint nan", [*S, "--inpaint", "{files}/nan.npz"], 1,
     "--inpaint: {files}/nan.npz holds 1 NaN value(s) among 4"),
    ("inpaint inf", [*S, "--inpaint", "{files}/inf.npz"], 1, "holds 1 infinite value(s)"),
    ("inpaint garbage", [*S, "--inpaint", "{files}/garbage.npz"], 1,
     "--inpaint: {files}/garbage.npz is not an .npz file (bad header"),
    ("inpaint npy", [*S, "--inpaint", "{files}/single.npy"], 1,
     "is a single .npy array, not an .npz archive"),
    ("inpaint truncated", [*S, "--inpaint", "{files}/truncated.npz"], 1,
     "is a damaged .npz archive"),
    ("inpaint objects", [*S, "--inpaint", "{files}/objects.npz"], 1, "holds Python objects"),
    ("inpaint folder", [*S, "--inpaint", "{files}/empty"], 1, "is a folder, not an .npz"),
    ("inpaint missing", [*S, "--inpaint", "{tmp}/none.npz"], 1, "--inpaint: {tmp}/none.npz does"),
    ("compare reference nan", [*C, "--checkpoint", "{run}", "--reference", "{files}/nan.npz"],
     1, "--reference: {files}/nan.npz holds 1 NaN value(s)"),
    ("compare reference garbage", [*C, "--checkpoint", "{run}", "--reference",
                                   "{files}/garbage.npz"], 1, "bad header"),
    # -- distillation ----------------------------------------------------------------------
    ("distill missing teacher", [*DI, "{tmp}/nope", "--method", "progressive"], 1,
     "is neither a run or checkpoint folder"),
    ("distill damaged teacher", [*DI, "{copy}", "--method", "progressive"], 1,
     "cannot load the teacher", "weights_truncated"),
    ("distill unknown method", [*DI, "{run}", "--method", "nope"], 1,
     "unknown distillation method 'nope'"),
    ("distill unknown option", [*DI, "{run}", "--method", "progressive", "--opt", "nope=1"], 1,
     "has no option 'nope'"),
    ("distill stochastic solver", [*DI, "{run}", "--method", "consistency", "--opt",
                                   "solver=euler_maruyama"], 1, "needs a deterministic sampler"),
    ("distill reflow off linear", [*DI, "{run}", "--method", "reflow", "--set", "sde.name=vp"],
     1, "reflow trains on the linear process"),
    ("distill both teachers", [*DI, "{run}", "--model", "x:y", "--method", "progressive"], 1,
     "exactly one of them"),
    ("distill time limit", [*DI, "{run}", "--method", "progressive", "--time-limit", "soon"], 1,
     "is not a duration"),
    ("compare students and guidance", [*C, "--guidance", "1", "--students", "{tmp}/s"], 1,
     "does not take --checkpoint, --model or --students"),
    ("compare missing student", [*C, "--students", "{tmp}/nope"], 1, "is not a student"),
]


def _fill(arg: str, world: dict[str, Path], tmp: Path, copy: Path) -> str:
    return (arg.replace("{cfg}", str(world["cfg"])).replace("{bare}", str(world["bare"]))
            .replace("{run}", str(world["run"]))
            .replace("{files}", str(world["files"])).replace("{tmp}", str(tmp))
            .replace("{copy}", str(copy)))


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_row(row: tuple, world: dict[str, Path], tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, argv, code, phrase, *rest = row
    setup = rest[0] if rest else None
    env = rest[1] if len(rest) > 1 else {}
    copy = tmp_path / "copy"
    if any("{copy}" in a for a in argv):
        shutil.copytree(world["run"], copy)
    if setup is not None:
        SETUPS[setup](copy)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([_fill(a, world, tmp_path, copy) for a in argv])
        except SystemExit as exit_:  # argparse: usage and one error line
            rc = exit_.code
    text = out.getvalue() + err.getvalue()
    assert rc == code, text
    assert _fill(phrase, world, tmp_path, copy) in text, text
    assert "Traceback" not in text
    if code:
        errors = [ln for ln in err.getvalue().splitlines() if "error:" in ln]
        assert len(errors) == 1, err.getvalue()


# -- library boundaries --------------------------------------------------------------------------
def _mlp() -> ScoreModel:
    return ScoreModel(build_network("mlp", (2,), width=8, depth=1), scoregen.sde.get("vp"))


API_ROWS: list[tuple[str, Callable[[], object], str]] = [
    *[(f"{name}.{method}(t={t})", (lambda n=name, m=method, t=t: getattr(
        scoregen.sde.get(n), m)(torch.tensor(t))), phrase)
      for name in scoregen.sde.list() if "scalar_kernel" in scoregen.sde.get(name).capabilities
      for method in ("alpha", "sigma", "f", "g2", "log_snr")
      for t, phrase in ((2.0, "outside the SDE's range"), (-0.5, "outside the SDE's range"),
                        (float("nan"), "times must be finite"))],
    ("sde.marginal outside", lambda: scoregen.sde.get("ve").perturb(
        torch.zeros(2, 2), torch.tensor([0.5, 1.5]), torch.zeros(2, 2)), "max 1.5"),
    ("sample wrong shape", lambda: scoregen.sample(_mlp(), scoregen.sde.get("vp"), (4, 3)),
     "the model is for data of shape (2,)"),
    ("sample wrong x_T", lambda: scoregen.sample(_mlp(), scoregen.sde.get("vp"),
                                                 torch.zeros(4, 2, 1)), "shape (2, 1)"),
    ("sample steps 0", lambda: scoregen.sample(_mlp(), scoregen.sde.get("vp"), (4, 2), "ddim", 0),
     "steps must be an integer >= 1"),
    ("sample option", lambda: scoregen.sample(_mlp(), scoregen.sde.get("vp"), (4, 2), "ddim", 2,
                                              order=3), "unexpected keyword option 'order'"),
    ("blur on vectors", lambda: scoregen.sample(
        preset("ring8").model(scoregen.sde.get("blur")), scoregen.sde.get("blur"), (4, 2),
        "ddim", 5), "data of shape (2,) are not images"),
    ("sampler without capability", lambda: scoregen.sample(
        preset("ring8").model(scoregen.sde.get("cld")), scoregen.sde.get("cld"), (4, 2),
        "dpm_solver++", 5), "needs what the SDE 'cld' does not offer (scalar_kernel"),
    ("model wrong shape", lambda: _mlp()(torch.zeros(4, 3), torch.full((4,), 0.5)),
     "got x of shape (4, 3)"),
    ("dataset n", lambda: load_dataset("moons", n=-1), "data.n must be a positive integer"),
    ("dataset option", lambda: load_dataset("moons", root="x"), "unknown option(s) 'root'"),
]


@pytest.mark.parametrize("row", API_ROWS, ids=[r[0] for r in API_ROWS])
def test_bad_api_input(row: tuple[str, Callable[[], object], str]) -> None:
    _, call, phrase = row
    with pytest.raises(ValueError) as err:
        call()
    assert phrase in str(err.value)
