"""Peer adapters: the same problem, the same math where it is the same algorithm.

Needs the optional peers (``pip install diffusers torchsde`` and ``pip install --no-deps
k-diffusion``); each test skips with a message when its library is missing.
"""

from __future__ import annotations

import pytest
import torch

import scoregen
from scoregen.cli import main
from scoregen.evaluation import compare, peers
from scoregen.sampling.denoiser import Denoiser


def _need(library: str) -> None:
    why = peers.unavailable(library)
    if why:
        pytest.skip(f"optional peer {library} missing: {why}")


@pytest.fixture(scope="module")
def ring8_ddpm():
    return compare.oracle_problem("ring8", "ddpm", n=64)


def test_diffusers_timestep_k_is_scoregen_time_k_plus_one_over_n(ring8_ddpm):
    pytest.importorskip("diffusers", reason="optional peer diffusers is not installed")
    from scoregen.evaluation.peers import diffusers_schedulers as ds

    sde = ring8_ddpm.sde
    sched = ds.make_scheduler("DDIMScheduler", sde, 10)
    k = torch.tensor([0, 1, 99, 500, 999])
    t = torch.stack([ds.time_of(i, sde) for i in k])
    torch.testing.assert_close(sde.alpha(t) ** 2, sched.alphas_cumprod[k].double(), rtol=1e-5,
                               atol=0)


@pytest.mark.parametrize("steps", [4, 10])
def test_diffusers_ddim_equals_scoregen_ddim_on_the_same_grid(steps, ring8_ddpm):
    """DDIMScheduler (eta=0, alpha_bar_prev=1 at the end) is DDIM on t = (k+1)/N, then 0."""
    _need("diffusers")
    from scoregen.evaluation.peers import diffusers_schedulers as ds

    p = ring8_ddpm
    x_T = compare.initial_noise(p, 64, 0)
    den = Denoiser(p.model, p.sde)
    ours_peer = ds.run_scheduler("DDIMScheduler", den, p.sde, x_T.clone(), steps)
    timesteps = ds.make_scheduler("DDIMScheduler", p.sde, steps).timesteps
    ts = torch.cat([torch.stack([ds.time_of(k, p.sde) for k in timesteps]),
                    torch.zeros(1, dtype=torch.float64)])
    ref = scoregen.sample(p.model, p.sde, x_T.clone(), "ddim", ts=ts)
    assert den.nfe == ref.nfe == steps
    torch.testing.assert_close(ours_peer, ref.x, rtol=0, atol=1e-4)  # diffusers: float32 betas


@pytest.mark.parametrize("sde_name", ["ddpm", "vp", "ve"])
def test_k_diffusion_euler_equals_scoregen_ddim_on_the_karras_grid(sde_name):
    """In x_edm = x / alpha, sigma_edm = sigma / alpha, DDIM's update x_s = alpha_s x0_hat +
    sigma_s eps_hat is x_edm + (sigma_edm_s - sigma_edm_t) eps_hat: Euler's step of the
    probability-flow ODE dx_edm/dsigma_edm = (x_edm - D) / sigma_edm (Karras et al. 2022,
    eq. 3 and sec. 4), k-diffusion's sample_euler."""
    _need("k-diffusion")
    from scoregen.evaluation.peers import kdiffusion as kd

    p = compare.oracle_problem("ring8", sde_name, n=64)
    x_T = compare.initial_noise(p, 64, 0)
    den = Denoiser(p.model, p.sde)
    x_peer = kd.run_sampler("sample_euler", den, p.sde, x_T.clone(), steps=8)
    sigmas = kd.load().get_sigmas_karras(8, *kd.sigma_range(p.sde)).double()
    ts = torch.cat([p.sde.t_from_log_snr(-sigmas[:-1].log()), sigmas[-1:]])
    ref = scoregen.sample(p.model, p.sde, x_T.clone(), "ddim", ts=ts, dtype=torch.float64)
    assert den.nfe == ref.nfe == 8
    torch.testing.assert_close(x_peer, ref.x, rtol=1e-6, atol=1e-6)


def test_peer_budgets_are_honest(ring8_ddpm):
    """Every runnable peer's planned grid has counted NFE <= budget (e.g. Heun: 2n - 1)."""
    methods, _ = peers.peer_methods(None, ring8_ddpm.sde)
    fixed = [m for m in methods if not m.adaptive]
    if not fixed:
        pytest.skip("no optional peer library installed")
    x = compare.initial_noise(ring8_ddpm, 1, 0)
    for m in fixed:
        steps = compare.plan_steps(m, ring8_ddpm, 7)
        nfe = m.draw(ring8_ddpm.model, ring8_ddpm.sde, x, compare.Setting(steps=steps), 0)[1]
        assert nfe <= 7, m.name
        assert nfe >= 7 - (m.nfe_per_step - 1), m.name


def test_missing_peer_is_reported_in_one_line_and_skipped(monkeypatch, tmp_path, capsys):
    def missing():
        raise peers.PeerUnavailableError("cannot import diffusers (test); pip install diffusers")

    monkeypatch.setitem(peers.LOADERS, "diffusers", missing)
    methods, messages = peers.peer_methods(None, compare.oracle_problem("ring8", "ddpm", 8).sde)
    assert not [m for m in methods if m.family == "diffusers"]
    assert [line for line in messages if "diffusers unavailable" in line] == [messages[0]]
    code = main(["compare", "--sde", "ddpm", "--samplers", "ddim", "--peers",
                 "diffusers/ddim", "--budgets", "3", "-n", "50", "--tolerances", "",
                 "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("diffusers unavailable") == 1
    assert "diffusers" not in (tmp_path / "results.csv").read_text()


def test_diffusers_peers_refuse_a_continuous_sde_with_a_reason():
    methods, messages = peers.peer_methods(["diffusers/ddim"], scoregen.sde.get("vp"))
    assert methods == [] and len(messages) == 1
    assert "--sde ddpm" in messages[0] or "unavailable" in messages[0]
