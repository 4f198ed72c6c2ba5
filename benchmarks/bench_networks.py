"""Network forward and training-step throughput (MLP on 2-D vectors, U-Net on 1x28x28).

Skipped when :mod:`scoregen.models` is absent. ``extra_info["examples_per_s"]`` is the
batch divided by the median time.
"""

from __future__ import annotations

import pytest
import torch
from conftest import WORKLOADS

models = pytest.importorskip("scoregen.models", reason="scoregen.models is not available")
objectives = pytest.importorskip("scoregen.training.objectives",
                                 reason="scoregen.training.objectives is not available")

from scoregen import sde  # noqa: E402

NETWORK_FOR = {"vector2d": "mlp", "image28": "unet"}


def _model(shape: tuple[int, ...]) -> torch.nn.Module:
    net = models.build_network(NETWORK_FOR["image28" if len(shape) == 3 else "vector2d"], shape)
    return models.ScoreModel(net, sde.get("vp"))


@pytest.mark.parametrize("workload", WORKLOADS, ids=[w[0] for w in WORKLOADS])
def test_forward(benchmark, workload):
    label, shape, batch = workload
    model = _model(shape).eval()
    x, t = torch.randn(batch, *shape), torch.rand(batch) * 0.9 + 0.05
    benchmark.group = "network forward"

    def forward():
        with torch.no_grad():
            return model(x, t)

    benchmark.pedantic(forward, rounds=7, iterations=1, warmup_rounds=2)
    benchmark.extra_info.update(network=NETWORK_FOR[label], batch=batch,
                                examples_per_s=batch / benchmark.stats.stats.min)


@pytest.mark.parametrize("workload", WORKLOADS, ids=[w[0] for w in WORKLOADS])
def test_train_step(benchmark, workload):
    label, shape, batch = workload
    model = _model(shape).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = objectives.build_objective("dsm", model.sde)
    x0 = torch.randn(batch, *shape).clamp(-1, 1)
    data = objectives.random_batch(x0, 0)
    benchmark.group = "training step (DSM loss, Adam)"

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, data)
        loss.backward()
        opt.step()

    benchmark.pedantic(step, rounds=7, iterations=1, warmup_rounds=2)
    benchmark.extra_info.update(network=NETWORK_FOR[label], batch=batch,
                                examples_per_s=batch / benchmark.stats.stats.min)
