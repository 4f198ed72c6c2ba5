"""Shared pieces of the speed benchmarks (run with ``pytest benchmarks/ --benchmark-enable``).

``pyproject.toml`` sets ``--benchmark-disable`` and ``testpaths = ["tests"]``, so plain
``pytest`` neither collects nor times these. Files named ``bench_*.py`` are collected by
the hook below.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from scoregen.sde.base import SDE

# (name, event shape, batch) of the two workloads every speed benchmark uses
WORKLOADS = [("vector2d", (2,), 1024), ("image28", (1, 28, 28), 64)]


class ZeroEps:
    """A free model: predicts ``eps_hat = 0`` (``x0_hat = x / alpha``), so a timed run
    measures only what a sampler does outside the network."""

    prediction = "eps"

    def __init__(self, sde: SDE) -> None:
        self.sde = sde

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)


class ZeroEpsConditional(ZeroEps):
    """:class:`ZeroEps` with 8 classes (label 8 is the null label), for guided runs."""

    num_classes = 8

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return torch.zeros_like(x)


def pytest_collect_file(file_path, parent):  # pytest hook
    """Collect ``bench_*.py`` as test modules."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
