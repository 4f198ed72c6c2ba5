"""Checkpoints: bitwise round trip, resume == uninterrupted, clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import scoregen
from scoregen.data import load_dataset
from scoregen.models import ScoreModel, build_network
from scoregen.sde import get as get_sde
from scoregen.training import Trainer, TrainOptions
from scoregen.training.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_model,
    read_checkpoint,
)
from scoregen.training.objectives import build_objective

VP = get_sde("vp")

DATA = load_dataset("moons", n=2000)


def _trainer(out: Path | None, steps: int, **kw: object) -> Trainer:
    torch.manual_seed(0)
    model = ScoreModel(build_network("mlp", (2,), width=16, depth=1), scoregen.sde.get("vp"))
    opts = TrainOptions(steps=steps, batch_size=32, lr=1e-2, warmup=3, ema_decay=0.9,
                        log_every=5, ckpt_every=0, sample_every=0, progress=False, **kw)
    return Trainer(model, DATA, build_objective("dsm", VP), opts, out)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_round_trip_is_bitwise(tmp_path: Path) -> None:
    tr = _trainer(tmp_path, 6)
    tr.fit()
    raw = load_model(tmp_path, ema=False)
    ema = load_model(tmp_path)
    _assert_same(raw.state_dict(), tr.model.state_dict())
    _assert_same(ema.state_dict(), tr.ema.state_dict())
    assert not torch.equal(raw.network.inp.weight, ema.network.inp.weight)
    x, t = torch.randn(5, 2), torch.rand(5)
    assert torch.equal(ema(x, t), tr.ema(x, t))
    assert ema.config() == tr.model.config() and not ema.training


def test_checkpoint_contents(tmp_path: Path) -> None:
    _trainer(tmp_path, 4, keep_checkpoints=2).fit()
    folder = find_checkpoint(tmp_path)
    assert folder.name == "step_000004"
    meta = json.loads((folder / "checkpoint.json").read_text())
    assert meta["step"] == 4 and meta["model"]["sde"] == {"name": "vp", **scoregen.sde.get(
        "vp").params()}
    assert set(meta["versions"]) == {"scoregen", "torch"}
    tensors = load_file(str(folder / "weights.safetensors"))  # plain safetensors, no pickle
    assert {k.split(".")[0] for k in tensors} == {"model", "ema", "optim", "rng"}
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))  # no temp leftovers
    assert find_checkpoint(tmp_path / "last") == folder
    assert find_checkpoint(folder / "checkpoint.json") == folder


def test_keep_prunes_old_checkpoints(tmp_path: Path) -> None:
    tr = _trainer(tmp_path, 8, keep_checkpoints=2)
    tr.opt.ckpt_every = 2
    tr.fit()
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_000006", "step_000008"]


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    n = 10
    full = _trainer(tmp_path / "full", 2 * n)
    full.fit()
    _trainer(tmp_path / "half", n).fit()
    resumed = _trainer(tmp_path / "half", 2 * n)
    resumed.resume(tmp_path / "half")
    assert resumed.step == n
    resumed.fit()
    _assert_same(resumed.model.state_dict(), full.model.state_dict())
    _assert_same(resumed.ema.state_dict(), full.ema.state_dict())
    a, b = resumed.optimizer.state_dict()["state"], full.optimizer.state_dict()["state"]
    for i in a:
        _assert_same(a[i], b[i])
    assert resumed.position == full.position == 2 * n * 32


def test_truncated_weights_name_the_file(tmp_path: Path) -> None:
    _trainer(tmp_path, 2).fit()
    weights = find_checkpoint(tmp_path) / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"weights\.safetensors are truncated"):
        load_model(tmp_path)


def test_corrupt_weights_and_metadata(tmp_path: Path) -> None:
    _trainer(tmp_path, 2).fit()
    folder = find_checkpoint(tmp_path)
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside a tensor: same size, different content
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"weights\.safetensors are corrupt"):
        load_model(tmp_path)
    (folder / "checkpoint.json").write_text('{"format": 1, "step": ')
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint metadata .*checkpoint\.json"):
        read_checkpoint(folder)


def test_integrity_check_cannot_be_switched_off(tmp_path: Path) -> None:
    """Removing the weights' hashes from checkpoint.json refuses the checkpoint; editing
    checkpoint.json is caught by the digest in the weights' header; garbage weights whose
    hashes were forged still fail to parse, with the file named."""
    import hashlib

    _trainer(tmp_path, 2).fit()
    folder = find_checkpoint(tmp_path)
    meta_file, weights = folder / "checkpoint.json", folder / "weights.safetensors"
    original = meta_file.read_text()
    for files in ({}, None, {"weights.safetensors": {}},
                  {"weights.safetensors": {"bytes": weights.stat().st_size}}):
        meta = json.loads(original)
        if files is None:
            del meta["files"]
        else:
            meta["files"] = files
        meta_file.write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match=r"records no size and SHA-256 of weights"):
            load_model(folder)
    meta = json.loads(original)
    meta["model"]["network"]["width"] = 999  # relabel the weights by hand
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"checkpoint\.json was edited after"):
        load_model(folder)
    meta_file.write_text(json.dumps(json.loads(original), indent=4))  # layout is not content
    assert load_model(folder) is not None
    garbage = b"\x00" * 64
    weights.write_bytes(garbage)
    meta = json.loads(original)
    meta["files"] = {"weights.safetensors": {"bytes": 64,
                                             "sha256": hashlib.sha256(garbage).hexdigest()}}
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint weights .*safetensors"):
        load_model(folder)


def test_missing_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such run"):
        load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_model(tmp_path)
