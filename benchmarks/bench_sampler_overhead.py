"""Per-step overhead of every registered sampler (and of peers where installed).

The model is :class:`ZeroEps` (free), so the time is the sampler's own work: grid,
prediction conversions, noise, update arithmetic and NFE counting. Reported per model call
(``extra_info["us_per_nfe"]``) at batch 1024 for 2-D vectors and 64 for 1x28x28 images,
all on the discrete DDPM process so the diffusers schedulers run on the same problem.
"""

from __future__ import annotations

import pytest
import torch
from conftest import WORKLOADS, ZeroEps

from scoregen import samplers, sde
from scoregen.evaluation import compare
from scoregen.evaluation.compare import Setting

STEPS = 20
TOLERANCE = 1e-3


def _problem(shape: tuple[int, ...]) -> compare.Problem:
    process = sde.get("ddpm")
    empty = torch.zeros(0, *shape)
    return compare.Problem("overhead", ZeroEps(process), process, shape, empty,
                           dtype=torch.float32)


def _methods() -> list[compare.Method]:
    from scoregen.evaluation import peers
    found = compare.scoregen_methods(samplers.list())
    extra, _ = peers.peer_methods(None, sde.get("ddpm"))
    return found + extra


METHODS = {m.name: m for m in _methods()}


@pytest.mark.parametrize("workload", WORKLOADS, ids=[w[0] for w in WORKLOADS])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_sampler_overhead(benchmark, name, workload):
    label, shape, batch = workload
    method = METHODS[name]
    problem = _problem(shape)
    x_T = compare.initial_noise(problem, batch, 0)
    setting = Setting(tolerance=TOLERANCE) if method.adaptive else Setting(steps=STEPS)
    nfe = method.draw(problem.model, problem.sde, x_T, setting, 0)[1]
    benchmark.group = f"sampler overhead, {label}, batch {batch}"
    benchmark.pedantic(method.draw, args=(problem.model, problem.sde, x_T, setting, 0),
                       rounds=7, iterations=1, warmup_rounds=2)
    benchmark.extra_info.update(family=method.family, nfe=nfe, batch=batch,
                                us_per_nfe=1e6 * benchmark.stats.stats.min / nfe)
