"""One ``torchrun`` job for ``tests/test_distributed.py``: every distributed path in turn.

``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/dist_worker.py DIR
[die|hang]``. DIR holds ``tiny.yaml`` and the single-process runs the test made; each step
below writes its own output under DIR. With ``die`` (``hang``), rank 1 exits abruptly
(stops answering) during training after the step-10 checkpoint, which must take the whole
job down.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scoregen import sde as sde_lib
from scoregen.cli import main
from scoregen.evaluation.likelihood import log_likelihood_sharded
from scoregen.infra import distributed
from scoregen.models import analytic
from scoregen.training import Trainer


def _fail_at(step: int, how: str) -> None:
    """Make rank 1 exit abruptly (``die``: a crash, not an exception) or stop answering
    (``hang``) when it reaches ``step``."""
    original = Trainer.train_step

    def train_step(self: Trainer) -> float:
        if self.ctx.rank == 1 and self.step == step:
            if how == "die":
                os._exit(17)
            time.sleep(3600)
        return original(self)

    Trainer.train_step = train_step


def run(root: Path, fault: str | None) -> None:
    cfg = str(root / "tiny.yaml")
    quiet = ["--no-progress"]
    if fault is not None:
        _fail_at(12, fault)
        code = main(["train", cfg, "--out", str(root / "faulty"), *quiet])
        raise SystemExit(code or "training went on after a rank failed")
    if (root / "faulty").exists():  # the job after a crash: resume from the last checkpoint
        assert main(["train", cfg, "--out", str(root / "faulty"), "--resume", *quiet]) == 0
        return
    # 1. two processes, two accumulation steps each: the trajectory of one process
    assert main(["train", cfg, "--out", str(root / "ddp"), "--set", "train.accumulate=2",
                 *quiet]) == 0
    # 1b. the same, streamed through a DataLoader with a worker per process
    assert main(["train", cfg, "--out", str(root / "ddp_stream"), "--set", "data.stream=true",
                 "--set", "data.workers=1", *quiet]) == 0
    # 2. a one-process checkpoint (step 10) resumed on two processes
    assert main(["train", cfg, "--out", str(root / "resumed"), "--resume", *quiet]) == 0
    # 3. sharded sampling, gathered in index order (a stochastic sampler: per-sample noise)
    assert main(["sample", str(root / "single"), "-n", "13", "--sampler", "ancestral",
                 "--steps", "6", "--out", str(root / "ddp_samples.npz"), *quiet]) == 0
    # 4. sharded compare on a checkpoint
    assert main(["compare", "--checkpoint", str(root / "single"), "-n", "40", "--budgets",
                 "4", "--samplers", "ddim,euler_maruyama,ode_dopri5", "--tolerances", "0.01",
                 "--out", str(root / "ddp_compare"), *quiet]) == 0
    # 5. sharded likelihood with an adaptive solver (step counts differ per rank)
    vp = sde_lib.get("vp")
    mix = analytic.preset("ring8")
    x = mix.sample_t(24, vp, vp.t_min, torch.Generator().manual_seed(0))
    res = log_likelihood_sharded(mix.model(vp), vp, x, rtol=1e-6, atol=1e-6)
    if distributed.context().is_main:
        np.savez(root / "ddp_logp.npz", logp=res.logp.numpy(), nfe=res.nfe)
    # 6. the consistency check: equal weights pass, one changed value fails on every rank
    torch.manual_seed(0)
    probe = torch.nn.Linear(3, 2)
    distributed.check_consistency(probe, "the probe")
    if distributed.context().rank == 1:
        with torch.no_grad():
            probe.weight[0, 0] += 1e-6
    try:
        distributed.check_consistency(probe, "the probe")
        outcome = "no error"
    except distributed.DistributedError as err:
        outcome = str(err)
    (root / f"consistency_{distributed.context().rank}.txt").write_text(outcome)


if __name__ == "__main__":
    run(Path(sys.argv[1]), fault=sys.argv[2] if len(sys.argv) > 2 else None)
