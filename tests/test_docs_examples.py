"""The worked example of docs/adding-a-sampler.md runs and passes the shared checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from _oracle import MIXTURE, CountingModel, order_slope

import scoregen
from scoregen import samplers
from scoregen.samplers import SAMPLERS

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-a-sampler.md"


@pytest.fixture
def ralston():
    text = DOC.read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "@register" in b)
    exec(compile(code, str(DOC), "exec"), {"__name__": "ralston_example"})
    yield "ode_ralston"
    SAMPLERS.unregister("ode_ralston")


def test_the_worked_example_registers_converges_and_counts_nfe(ralston):
    assert ralston in samplers.list()
    slope, errors = order_slope(ralston, "vp", (40, 80))
    assert slope > 1.5, (errors, slope)
    sde = scoregen.sde.get("vp")
    model = CountingModel(MIXTURE.model(sde))
    out = scoregen.sample(model, sde, (8, 2), ralston, 10, dtype=torch.float64)
    assert out.nfe == model.calls == 2 * 9 + 1
