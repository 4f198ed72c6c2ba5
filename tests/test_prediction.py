"""Prediction-type conversions, the NFE-counting Denoiser and re-targeting between SDEs."""

from __future__ import annotations

import pytest
import torch

import scoregen.sde as sdes
from scoregen.models.analytic import preset
from scoregen.models.prediction import PREDICTIONS, from_x0_eps, retarget, to_x0_eps
from scoregen.sampling.denoiser import Denoiser


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_round_trip_every_prediction_type(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(
        6, 3, generator=g, dtype=torch.float64)
    alpha = torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    sigma = torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    x = alpha[:, None] * x0 + sigma[:, None] * eps
    pred = from_x0_eps((x0, eps), kind, alpha, sigma)
    back = to_x0_eps(pred, kind, x, alpha, sigma)
    torch.testing.assert_close(back.x0, x0)
    torch.testing.assert_close(back.eps, eps)


def test_v_definition() -> None:
    x0, eps = torch.tensor([[1.0]]), torch.tensor([[2.0]])
    a, s = torch.tensor(0.6), torch.tensor(0.8)
    assert float(from_x0_eps((x0, eps), "v", a, s)) == pytest.approx(0.6 * 2 - 0.8 * 1)


def test_unknown_prediction_type() -> None:
    with pytest.raises(ValueError, match="known: eps, x0, score, v"):
        to_x0_eps(torch.zeros(1, 1), "noise", torch.zeros(1, 1), torch.ones(()), torch.ones(()))


def test_denoiser_counts_calls_and_checks_model() -> None:
    sde = sdes.get("vp")
    mix = preset("ring8")
    d = Denoiser(mix.model(sde, "v"), sde)
    x = torch.randn(4, 2)
    for _ in range(3):
        d(x, torch.tensor(0.5))
    assert d.nfe == 3
    torch.testing.assert_close(d.score(x, torch.tensor(0.5)), mix.score(x, sde, 0.5))
    assert d.nfe == 4
    with pytest.raises(ValueError, match="re-target it"):
        Denoiser(mix.model(sde), sdes.get("ve"))
    with pytest.raises(TypeError, match="declare `prediction` and `sde`"):
        Denoiser(lambda x, t: x, sde)


@pytest.mark.parametrize(("src", "dst"), [("vp", "ve"), ("ve", "subvp"), ("vp", "vp-cosine")])
def test_retarget_is_exact_on_the_oracle(src: str, dst: str) -> None:
    """An exact model for one SDE, re-targeted by log-SNR matching, is exact for another."""
    mix = preset("ring8")
    a, b = sdes.get(src), sdes.get(dst)
    model = retarget(mix.model(a), b)
    t = torch.linspace(0.1, 0.9, 5, dtype=torch.float64) * b.T
    # stay inside the source SDE's log-SNR range
    t = t[(b.log_snr(t) < a.log_snr(torch.tensor(a.t_min, dtype=torch.float64)))
          & (b.log_snr(t) > a.log_snr(torch.tensor(a.T, dtype=torch.float64)))]
    x = mix.sample_t(len(t), b, 0.5 * b.T, torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(x, t), mix.model(b)(x, t), rtol=1e-6, atol=1e-8)
    assert retarget(mix.model(a), a).sde == a


class _CountingConversions:
    """Wraps a model and counts its calls; the conversions of the pair are counted by patching
    ``to_x0_eps`` in the test below."""

    def __init__(self, model) -> None:
        self.model, self.prediction, self.sde = model, model.prediction, model.sde
        self.num_classes = getattr(model, "num_classes", None)
        self.calls = 0

    def __call__(self, x, t, cond=None):
        self.calls += 1
        return self.model(x, t) if cond is None else self.model(x, t, cond=cond)


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_wrapped_models_convert_the_prediction_once_per_call(kind, monkeypatch):
    """A guided, re-targeted model is one network call and one conversion to the pair per NFE,
    and its pair is consistent (x = alpha x0 + sigma eps) and exact on the oracle."""
    import scoregen.models.prediction as prediction
    from scoregen.sampling.guidance import guide

    calls = {"n": 0}
    original = prediction.to_x0_eps

    def counting(*args, **kw):
        calls["n"] += 1
        return original(*args, **kw)

    monkeypatch.setattr(prediction, "to_x0_eps", counting)
    mix, vp, ve = preset("ring8"), sdes.get("vp"), sdes.get("ve", sigma_max=100.0)
    inner = _CountingConversions(mix.model(vp, kind))
    labels = torch.arange(6) % mix.num_classes
    model = guide(retarget(inner, ve), labels, 3.0)
    x = mix.sample_t(6, ve, 0.4, torch.Generator().manual_seed(2))
    t = torch.full((6,), 0.4, dtype=torch.float64)
    pair = Denoiser(model, ve)(x, t)
    assert inner.calls == 1 and calls["n"] == 1  # one call on the doubled batch, one conversion
    alpha, sigma = ve.alpha(t)[:, None], ve.sigma(t)[:, None]
    torch.testing.assert_close(alpha * pair.x0 + sigma * pair.eps, x)
    exact = guide(mix.model(ve), labels, 3.0).predict_pair(x, t)
    torch.testing.assert_close(pair.x0, exact.x0, rtol=1e-6, atol=1e-8)
