"""Networks and the ScoreModel wrapper: shapes, preconditioning, SDE-independence."""

from __future__ import annotations

import pytest
import torch

import scoregen
from scoregen.models import NETWORKS, PARAMETERIZATIONS, ScoreModel, build_model, build_network
from scoregen.models.prediction import Model, Retargeted, to_x0_eps

SHAPES = {"mlp": [(2,), (16,)], "unet": [(1, 8, 8), (1, 28, 28), (3, 8, 8)]}
TINY = {"mlp": {"width": 16, "depth": 1}, "unet": {"channels": 8, "mult": [1, 2], "attn_res": [4]}}


def _randomize(net: torch.nn.Module) -> torch.nn.Module:
    """Give zero-initialised layers random weights, so outputs depend on every input."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("name", [n for n in NETWORKS.list()
                                  if NETWORKS.meta(n)["kind"] != "classifier"])
def test_every_network_maps_shape_to_shape(name: str) -> None:
    for shape in SHAPES[name]:
        kw = dict(TINY[name], mult=[1, 2, 2], attn_res=[7]) if shape[-1] == 28 else TINY[name]
        net = _randomize(build_network(name, shape, **kw))
        x = torch.randn(3, *shape)
        out = net(x, torch.tensor([-1.0, 0.0, 1.0]))
        assert out.shape == x.shape and torch.isfinite(out).all()
        # the noise condition matters
        assert not torch.allclose(out, net(x, torch.tensor([1.0, 1.0, 1.0])))


def test_unet_rejects_sizes_it_cannot_halve() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        build_network("unet", (1, 10, 10), mult=[1, 2, 2])
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_network("unet", (2,))


def test_build_network_names_unknown_options() -> None:
    with pytest.raises(ValueError, match=r"'widht'.*known: .*width"):
        build_network("mlp", (2,), widht=3)
    with pytest.raises(KeyError, match="known networks: classifier, mlp, unet"):
        build_network("resnet", (2,))


@pytest.mark.parametrize("prediction", PARAMETERIZATIONS)
@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve", "ddpm"])
def test_score_model_is_a_sampler_model(prediction: str, sde_name: str) -> None:
    sde = scoregen.sde.get(sde_name)
    model = ScoreModel(_randomize(build_network("mlp", (2,), **TINY["mlp"])), sde, prediction)
    assert isinstance(model, Model)
    assert model.prediction == PARAMETERIZATIONS[prediction].reports
    x = torch.randn(4, 2)
    out = model(x, torch.full((4,), 0.5))
    assert out.shape == x.shape and torch.isfinite(out).all()
    res = scoregen.sample(model, sde, (4, 2), "ddim", 3)
    assert torch.isfinite(res.x).all()


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_network_input_has_unit_variance(sde_name: str) -> None:
    """c_in = 1/sqrt(alpha^2 sigma_data^2 + sigma^2) whitens x_t when std(x0) = sigma_data."""
    sde = scoregen.sde.get(sde_name)
    model = ScoreModel(build_network("mlp", (1,)), sde, sigma_data=0.5)
    g = torch.Generator().manual_seed(0)
    for t in (sde.t_min, 0.3, 0.7, sde.T):
        tt = torch.tensor([t], dtype=torch.float64)
        alpha, sigma = sde.alpha(tt), sde.sigma(tt)
        x_t = alpha * 0.5 * torch.randn(200_000, generator=g, dtype=torch.float64) + sigma * (
            torch.randn(200_000, generator=g, dtype=torch.float64))
        var = (model.coefficients(tt)["c_in"] * x_t).var()
        assert abs(float(var) - 1) < 0.02


def test_edm_coefficients_match_karras_table1() -> None:
    sde = scoregen.sde.get("ve", sigma_min=0.002, sigma_max=80.0)
    model = ScoreModel(build_network("mlp", (2,)), sde, "edm", sigma_data=0.5)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    c = model.coefficients(t)
    s, sd = sde.sigma(t), 0.5  # VE: alpha = 1, sigma_e = sigma
    torch.testing.assert_close(c["c_skip"], sd**2 / (s**2 + sd**2))
    torch.testing.assert_close(c["c_out"], s * sd / (s**2 + sd**2).sqrt())
    torch.testing.assert_close(c["c_in"], 1 / (s**2 + sd**2).sqrt())
    torch.testing.assert_close(c["c_noise"], s.log() / 4)


@pytest.mark.parametrize("prediction", ["eps", "edm", "v"])
def test_one_network_serves_every_sde_at_equal_log_snr(prediction: str) -> None:
    """The wrapper sees the SDE only through log-SNR: at equal lambda and x scaled by 1/alpha,
    a VP model and a VE model sharing one network predict the same x0 and eps."""
    net = _randomize(build_network("mlp", (2,), **TINY["mlp"])).double()
    vp, ve = scoregen.sde.get("vp"), scoregen.sde.get("ve", sigma_max=200.0)
    m_vp, m_ve = ScoreModel(net, vp, prediction), ScoreModel(net, ve, prediction)
    t_vp = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    t_ve = ve.t_from_log_snr(vp.log_snr(t_vp))
    x_vp = torch.randn(3, 2, dtype=torch.float64)
    x_ve = x_vp / vp.alpha(t_vp)[:, None]
    a = to_x0_eps(m_vp(x_vp, t_vp), m_vp.prediction, x_vp, vp.alpha(t_vp), vp.sigma(t_vp))
    b = to_x0_eps(m_ve(x_ve, t_ve), m_ve.prediction, x_ve, ve.alpha(t_ve), ve.sigma(t_ve))
    torch.testing.assert_close(a.x0, b.x0)
    torch.testing.assert_close(a.eps, b.eps)


def test_under_retargets_and_config_rebuilds() -> None:
    vp = scoregen.sde.get("vp")
    model = ScoreModel(build_network("mlp", (2,), width=8, depth=1), vp, "v", sigma_data=0.4)
    assert model.under(vp) is model
    assert isinstance(model.under(scoregen.sde.get("ve")), Retargeted)
    clone = build_model(model.config())
    assert clone.config() == model.config()
    assert clone.parameterization == "v" and clone.sde == vp
