"""Several processes (2 x gloo on the CPU, through ``torchrun``) against one process.

One ``torchrun`` job (``tests/dist_worker.py``) runs training with DDP and gradient
accumulation, training on streamed data, a resume of a one-process checkpoint at two
processes, sharded sampling, a sharded compare and a sharded likelihood; the test makes the
one-process references in its own process and checks: the same trajectory (loss and weights
to float-reduction precision), the same samples file byte for byte, the same comparison
metrics. Two slow jobs make a rank die or hang mid-run: the job must stop with an error,
and resuming continues from the last checkpoint. The core helpers (sharding, batch
splitting, keyed batches) and the streamed datasets are checked in-process.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import scoregen
from scoregen import sde as sde_lib
from scoregen.cli import main
from scoregen.evaluation.likelihood import log_likelihood, log_likelihood_sharded
from scoregen.infra import distributed
from scoregen.models import analytic
from scoregen.training.batches import EpochOrder, draw_batch, local_slices
from scoregen.training.checkpoint import load_model

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("dist_worker.py")
JOB_TIMEOUT_S = 150  # one bound for the whole torchrun job
TINY = {
    "data": {"name": "moons", "n": 400},
    "sde": {"name": "vp"},
    "model": {"network": "mlp", "width": 16, "depth": 1},
    "train": {"steps": 20, "batch_size": 32, "lr": 1e-2, "warmup": 3, "log_every": 5,
              "ckpt_every": 10, "sample_every": 0, "threads": 1},
    "sample": {"sampler": "ddim", "steps": 4, "n": 16},
}


def _torchrun(root: Path, *extra: str, timeout: int = 30) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           distributed.TIMEOUT_ENV: str(timeout), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--monitor-interval=0.5", str(WORKER), str(root), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
                          cwd=root)


def _train(root: Path, out: str, *args: str) -> None:
    assert main(["train", str(root / "tiny.yaml"), "--out", str(root / out), "--no-progress",
                 *args]) == 0


def _losses(run: Path) -> list[float]:
    with open(run / "log.csv") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh)]


def _assert_same_run(a: Path, b: Path) -> None:
    """Same trajectory up to the order of float sums: logged losses and final weights."""
    assert _losses(a) == pytest.approx(_losses(b), rel=1e-5, abs=1e-7)
    for ema in (False, True):
        sa, sb = load_model(a, ema=ema).state_dict(), load_model(b, ema=ema).state_dict()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-process references, then the two-process job over them."""
    root = tmp_path_factory.mktemp("dist")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    _train(root, "single")
    _train(root, "resumed", "--steps", "10")  # the job resumes it at two processes
    start = time.perf_counter()
    proc = _torchrun(root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.perf_counter() - start < JOB_TIMEOUT_S
    return root


def test_two_processes_follow_the_one_process_trajectory(job: Path) -> None:
    # 2 ranks x 2 accumulation steps x 8 examples against one process x 32 examples
    _assert_same_run(job / "ddp", job / "single")
    _assert_same_run(job / "ddp_stream", job / "single")  # DataLoader workers on each rank
    assert sorted(p.name for p in (job / "ddp" / "checkpoints").glob("step_*")) == [
        "step_000010", "step_000020"]  # written once, by rank 0


def test_resume_at_another_world_size(job: Path) -> None:
    _assert_same_run(job / "resumed", job / "single")  # one process -> two
    back = job / "back"  # two processes -> one: from the two-process step-10 checkpoint
    shutil.copytree(job / "ddp", back)
    shutil.rmtree(back / "checkpoints" / "step_000020")
    (back / "checkpoints" / "LATEST").write_text("step_000010\n")
    rows = (back / "log.csv").read_text().splitlines()
    (back / "log.csv").write_text("\n".join(rows[:3]) + "\n")
    _train(job, "back", "--resume")
    _assert_same_run(back, job / "single")


def test_sharded_sampling_is_bitwise_the_one_process_file(job: Path) -> None:
    out = job / "single_samples.npz"
    assert main(["sample", str(job / "single"), "-n", "13", "--sampler", "ancestral",
                 "--steps", "6", "--out", str(out), "--no-progress"]) == 0
    assert (job / "ddp_samples.npz").read_bytes() == out.read_bytes()
    x = np.load(out)["x"]
    assert x.shape == (13, 2) and np.isfinite(x).all() and len(np.unique(x[:, 0])) == 13


def test_sharded_compare_matches_one_process(job: Path) -> None:
    out = job / "single_compare"
    assert main(["compare", "--checkpoint", str(job / "single"), "-n", "40", "--budgets", "4",
                 "--samplers", "ddim,euler_maruyama,ode_dopri5", "--tolerances", "0.01",
                 "--out", str(out), "--no-progress"]) == 0
    one = json.loads((out / "results.json").read_text())["records"]
    two = json.loads((job / "ddp_compare" / "results.json").read_text())["records"]
    assert [r["method"] for r in one] == [r["method"] for r in two]
    for a, b in zip(one, two, strict=True):
        if a["budget"] is not None:  # fixed grids: the very same samples
            assert a["metrics"] == b["metrics"] and a["nfe"] == b["nfe"]
        else:  # the adaptive solver controls its steps on its own shard
            assert a["metrics"]["swd"] == pytest.approx(b["metrics"]["swd"], rel=0.2)


def test_sharded_likelihood_matches_one_process(job: Path) -> None:
    vp = sde_lib.get("vp")
    mix = analytic.preset("ring8")
    x = mix.sample_t(24, vp, vp.t_min, torch.Generator().manual_seed(0))
    one = log_likelihood_sharded(mix.model(vp), vp, x, rtol=1e-6, atol=1e-6)
    two = np.load(job / "ddp_logp.npz")
    np.testing.assert_allclose(two["logp"], one.logp.numpy(), rtol=0, atol=1e-3)
    exact = mix.log_prob(x, vp, vp.t_min).numpy()
    np.testing.assert_allclose(two["logp"], exact, rtol=0, atol=1e-2)


def test_ranks_that_disagree_fail_together(job: Path) -> None:
    for rank in (0, 1):
        text = (job / f"consistency_{rank}.txt").read_text()
        assert text.startswith("the probe differs between ranks in 1 tensor(s) (weight)"), text


@pytest.mark.slow
def test_a_dying_rank_stops_the_job_and_resume_continues(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    start = time.perf_counter()
    proc = _torchrun(tmp_path, "die")
    assert proc.returncode != 0
    assert time.perf_counter() - start < 60  # no hang waiting for the dead rank
    assert "exitcode" in proc.stderr and "17" in proc.stderr, proc.stderr[-2000:]
    ckpts = tmp_path / "faulty" / "checkpoints"
    assert (ckpts / "LATEST").read_text().strip() == "step_000010"
    assert not list(ckpts.glob(".tmp-*"))
    proc = _torchrun(tmp_path)  # `faulty` exists: the job resumes it
    assert proc.returncode == 0, proc.stderr[-3000:]
    _train(tmp_path, "single")
    model_a = load_model(tmp_path / "faulty", ema=False).state_dict()
    model_b = load_model(tmp_path / "single", ema=False).state_dict()
    for k in model_a:
        torch.testing.assert_close(model_a[k], model_b[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_hanging_rank_times_out_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    start = time.perf_counter()
    proc = _torchrun(tmp_path, "hang", timeout=5)
    assert proc.returncode != 0
    assert time.perf_counter() - start < 60
    assert "scoregen train: error: rank 0 of 2: a collective failed at step 13" in proc.stderr
    assert "within 5 s" in proc.stderr and "--resume" in proc.stderr


# -- in-process pieces ----------------------------------------------------------------------------
def test_shards_partition_the_indices_in_order() -> None:
    parts = [distributed.shard(11, r, 3) for r in range(3)]
    assert torch.equal(torch.sort(torch.cat(parts)).values, torch.arange(11))
    assert all(((p % 3) == r).all() for r, p in enumerate(parts))
    assert torch.equal(distributed.gather_ordered(torch.arange(5.0), 5), torch.arange(5.0))


def test_batch_must_split_evenly_with_the_fix_in_the_message() -> None:
    with pytest.raises(ValueError, match=r"train.batch_size=30 .* multiple of 4 \(e.g. 28 or 32"):
        local_slices(30, 2, 0, 2)
    slices = [s for r in range(2) for s in local_slices(32, 2, r, 2)]
    assert torch.equal(torch.cat(slices), torch.arange(32))


def test_examples_own_their_randomness() -> None:
    x0 = torch.zeros(8, 3)
    full = draw_batch(x0, seed=5, step=7, index=torch.arange(8))
    part = draw_batch(x0[:3], seed=5, step=7, index=torch.arange(5, 8))
    assert torch.equal(full.eps[5:], part.eps) and torch.equal(full.u[5:], part.u)
    other = draw_batch(x0, seed=5, step=8, index=torch.arange(8))
    assert not torch.equal(full.eps, other.eps)
    assert ((full.u > 0) & (full.u < 1)).all()
    order = EpochOrder(10, seed=3)
    stream = order.indices(0, 30)
    for e in range(3):  # every epoch is a permutation, and epochs differ
        assert torch.equal(torch.sort(stream[10 * e:10 * (e + 1)]).values, torch.arange(10))
    assert not torch.equal(stream[:10], stream[10:20])
    assert torch.equal(order.indices(7, 9), stream[7:16])


def test_per_sample_seeds_make_the_likelihood_batch_independent() -> None:
    vp = sde_lib.get("vp")
    mix = analytic.preset("ring8")
    x = mix.sample_t(6, vp, vp.t_min, torch.Generator().manual_seed(1)).to(torch.float64)
    kw = {"divergence": "hutchinson", "dequantize": 256, "method": "rk4",
          "options": {"step_size": 0.05}}
    full = log_likelihood(mix.model(vp), vp, x, seeds=torch.arange(6), **kw)
    part = log_likelihood(mix.model(vp), vp, x[2:4], seeds=torch.arange(2, 4), **kw)
    torch.testing.assert_close(full.logp[2:4], part.logp, rtol=1e-12, atol=1e-10)


def test_single_process_needs_no_process_group() -> None:
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.world, ctx.backend) == (0, 1, None) and ctx.is_main
    assert not torch.distributed.is_initialized()
    m = torch.nn.Linear(2, 2)
    distributed.check_consistency(m)  # a no-op for one process
    assert scoregen.infra.distributed.all_reduce(torch.tensor(3.0), "mean") == 3.0


# -- streamed data -------------------------------------------------------------------------------
def _image_folder(root: Path, n: int = 40) -> Path:
    from PIL import Image

    folder = root / "imgs"
    folder.mkdir()
    g = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(g.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def _idx_file(path: Path, images: np.ndarray) -> None:
    import gzip
    import struct

    raw = b"\x00\x00\x08\x03" + struct.pack(">3I", *images.shape) + images.tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def test_streamed_datasets_equal_the_in_memory_ones(tmp_path: Path) -> None:
    from scoregen.data import load_dataset
    from scoregen.data.loader import open_dataset

    folder = _image_folder(tmp_path)
    images = np.random.default_rng(1).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    (tmp_path / "plain").mkdir()
    _idx_file(tmp_path / "plain" / "train-images-idx3-ubyte", images)
    (tmp_path / "gz").mkdir()
    _idx_file(tmp_path / "gz" / "train-images-idx3-ubyte.gz", images)
    npz = tmp_path / "digits.npz"  # uint8 images with a labels array beside them
    np.savez(npz, x=images[:, None], labels=np.arange(12) % 3)
    cases = [("images", {"path": str(folder)}, "test"), ("images", {"path": str(folder)}, "train"),
             ("images", {"path": str(npz)}, "train"),
             ("mnist", {"root": str(tmp_path / "plain")}, "train"),
             ("mnist", {"root": str(tmp_path / "gz")}, "train")]
    for name, opts, split in cases:
        lazy, full = open_dataset(name, split, **opts), load_dataset(name, split, **opts)
        assert len(lazy) == len(full)
        assert all(torch.equal(lazy[i], full[i]) for i in range(len(full))), (name, opts)
    assert isinstance(open_dataset("mnist", root=str(tmp_path / "plain")).arr.base, np.memmap)


def test_streamed_training_equals_in_memory_and_resumes(tmp_path: Path) -> None:
    from scoregen.data import load_dataset
    from scoregen.data.loader import open_dataset
    from scoregen.models import ScoreModel, build_network
    from scoregen.training import Trainer, TrainOptions
    from scoregen.training.objectives import build_objective

    folder = _image_folder(tmp_path)

    def trainer(data: object, steps: int, out: Path | None = None, seed: int = 0) -> Trainer:
        torch.manual_seed(0)
        net = build_network("mlp", (1, 8, 8), width=16, depth=1)
        opts = TrainOptions(steps=steps, batch_size=8, accumulate=2, lr=1e-2, warmup=1,
                            log_every=1, ckpt_every=0, sample_every=0, progress=False,
                            workers=1, seed=seed)
        vp = sde_lib.get("vp")
        return Trainer(ScoreModel(net, vp), data, build_objective("dsm", vp), opts, out)

    memory = trainer(load_dataset("images", path=str(folder)), 8)
    memory.fit()  # 8 steps x 8 examples: over the 36 train images, into a second epoch
    trainer(open_dataset("images", path=str(folder)), 4, tmp_path / "run").fit()
    resumed = trainer(open_dataset("images", path=str(folder)), 8, tmp_path / "run", seed=9)
    resumed.resume(tmp_path / "run")
    assert resumed.position == 4 * 8 and resumed.seed == 0  # the checkpoint's stream
    resumed.fit()
    for a, b in zip(memory.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
