"""``scoregen.sample``: per-sample reproducibility, shapes, dtypes, grids, graphs, progress.

Parametrised over every registered sampler, like ``tests/test_samplers.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import scoregen
from scoregen import samplers
from scoregen import sde as sde_lib
from scoregen.models import analytic
from scoregen.models.analytic import GaussianMixture

SAMPLERS = samplers.list()
FIXED_STEP = [n for n in SAMPLERS if samplers.meta(n)["nfe_per_step"] is not None]
SDE = sde_lib.get("vp")
RING = analytic.preset("ring8")
NEW = ("cld", "vdm")  # processes beyond VP whose samplers are checked here too (flat data)


def pairs(names: list[str]) -> list[tuple[str, str]]:
    """``(sampler, process)``: every sampler on VP where it runs, else on CLD, and every sampler
    that runs on a process of :data:`NEW` on that process."""
    out = [(n, "vp" if not samplers.missing(n, SDE) else "cld") for n in names]
    return out + [(n, p) for p in NEW for n in names
                  if not samplers.missing(n, sde_lib.get(p)) and (n, p) not in out]


def opts(name: str) -> dict:
    """A small step count, or a tolerance and the ``[T, t_min, 0]`` grid for adaptive ones."""
    meta = samplers.meta(name)
    if meta["nfe_per_step"] is not None:
        return {"steps": 6}
    tol = dict.fromkeys(meta.get("tolerance_options", ("rtol", "atol")), 1e-2)
    return {"steps": None, "ts": torch.tensor([SDE.T, SDE.t_min, 0.0]), **tol}


@pytest.mark.parametrize(("name", "process"), pairs(FIXED_STEP))
def test_sample_k_is_the_same_in_any_batch(name, process):
    """x_T and every injected noise of sample k are functions of its own seed only."""
    sde = sde_lib.get(process)
    model = RING.model(sde)
    big = scoregen.sample(model, sde, (16, 2), name, seed=100, dtype=torch.float64, **opts(name))
    for k in (0, 5, 15):
        one = scoregen.sample(model, sde, (1, 2), name, seeds=torch.tensor([100 + k]),
                              dtype=torch.float64, **opts(name))
        torch.testing.assert_close(one.x[0], big.x[k], rtol=1e-10, atol=1e-10)
    again = scoregen.sample(model, sde, (16, 2), name, seed=100, dtype=torch.float64,
                            **opts(name))
    assert torch.equal(again.x, big.x)


def test_a_generator_gives_reproducible_seeds():
    model = RING.model(SDE)
    a = scoregen.sample(model, SDE, (8, 2), "ancestral", 5,
                        generator=torch.Generator().manual_seed(3))
    b = scoregen.sample(model, SDE, (8, 2), "ancestral", 5,
                        generator=torch.Generator().manual_seed(3))
    c = scoregen.sample(model, SDE, (8, 2), "ancestral", 5,
                        generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)


IMAGE_MIXTURE = GaussianMixture(torch.randn(3, 16, generator=torch.Generator().manual_seed(0)),
                                0.05, shape=(1, 4, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("name", "process"), [*pairs(SAMPLERS)[:len(SAMPLERS)], *(
    (n, "blur") for n in SAMPLERS if not samplers.missing(n, sde_lib.get("blur")))])
def test_image_batches_and_dtypes(name, process, dtype):
    sde = sde_lib.get(process)
    model = IMAGE_MIXTURE.model(sde)
    out = scoregen.sample(model, sde, (5, 1, 4, 4), name, dtype=dtype, **opts(name))
    assert out.x.shape == (5, 1, 4, 4)
    assert out.x.dtype == dtype
    assert torch.isfinite(out.x).all()
    assert out.sampler == name and out.seconds >= 0


class TinyEpsNet(nn.Module):
    """A trainable eps-predictor: sampling must not build graphs through its parameters."""

    prediction = "eps"

    def __init__(self, sde=SDE) -> None:
        super().__init__()
        self.sde = sde
        self.layer = nn.Linear(sde.state_shape((2,))[0] + 1, 2)

    def forward(self, x, t):
        return self.layer(torch.cat([x, t[:, None].to(x.dtype)], dim=1))


@pytest.mark.parametrize(("name", "process"), pairs(SAMPLERS)[:len(SAMPLERS)])
def test_sampling_keeps_no_graph(name, process):
    sde = sde_lib.get(process)
    with torch.enable_grad():
        out = scoregen.sample(TinyEpsNet(sde), sde, (4, 2), name, **opts(name))
    assert not out.x.requires_grad and out.x.grad_fn is None


@pytest.mark.parametrize(("name", "process"), pairs(FIXED_STEP)[:len(FIXED_STEP)])
def test_a_user_grid_is_followed(name, process):
    sde = sde_lib.get(process)
    ts = torch.tensor([1.0, 0.7, 0.3, 0.1, 0.02, 0.0], dtype=torch.float64)
    seen = []
    out = scoregen.sample(RING.model(sde), sde, (4, 2), name, None, ts=ts,
                          callback=lambda i, t, x: seen.append(float(t)))
    assert torch.equal(out.ts, ts)
    assert seen == ts[1:].tolist()


def test_an_explicit_start_is_used_and_validated():
    model = RING.model(SDE)
    x_T = torch.randn(4, 2, dtype=torch.float64)
    a = scoregen.sample(model, SDE, x_T, "ddim", 5)
    b = scoregen.sample(model, SDE, x_T.clone(), "ddim", 5)
    assert torch.equal(a.x, b.x) and a.x.dtype == torch.float64
    with pytest.raises(ValueError, match="NaN"):
        scoregen.sample(model, SDE, torch.full((2, 2), float("nan")), "ddim", 5)
    with pytest.raises(ValueError, match="shape"):
        scoregen.sample(model, SDE, (0, 2), "ddim", 5)


def test_progress_bar_is_off_by_default_and_on_when_asked(capsys):
    model = RING.model(SDE)
    scoregen.sample(model, SDE, (4, 2), "euler_maruyama", 20)
    assert "euler_maruyama" not in capsys.readouterr().err
    scoregen.sample(model, SDE, (4, 2), "euler_maruyama", 20, progress=True)
    err = capsys.readouterr().err
    assert "euler_maruyama" in err and "20/20" in err
