"""Adapters: diffusers UNets, EDM / k-diffusion denoisers and ``module:function`` models run
scoregen's samplers and reproduce the other library's own sampling loop.

diffusers and k-diffusion are optional extras; CI installs both (README's test command).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

import scoregen
import scoregen.sde as sdes
from scoregen.adapters import (
    DiffusersModel,
    EDMDenoiserModel,
    ModelSpecError,
    betas_from_scheduler_config,
    edm_precond,
    load_diffusers,
    load_model_spec,
)
from scoregen.adapters.diffusers_unet import prediction_from_scheduler_config
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.noise import NoiseSource, seeds_for

N_TRAIN = 1000


def _tiny_unet():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8)


def _save_pipeline(folder: Path, scheduler_cls: str, **config) -> Path:
    """A randomly initialised UNet2DModel and a scheduler, saved like a pipeline folder."""
    diffusers = pytest.importorskip("diffusers")
    _tiny_unet().save_pretrained(folder / "unet")
    getattr(diffusers, scheduler_cls)(num_train_timesteps=N_TRAIN, **config).save_pretrained(
        folder / "scheduler")
    return folder


def _scheduler(folder: Path, cls_name: str, steps: int):
    diffusers = pytest.importorskip("diffusers")
    sched = getattr(diffusers, cls_name).from_pretrained(folder / "scheduler")
    sched.set_timesteps(steps)
    return sched


def _grid(timesteps, n: int) -> torch.Tensor:
    """scoregen times (k + 1) / N of diffusers' timesteps, then the final 0."""
    ks = torch.as_tensor(timesteps, dtype=torch.float64)
    return torch.cat([(ks + 1) / n, torch.zeros(1, dtype=torch.float64)])


def _close_in_float32(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal up to float32 rounding (diffusers keeps alphas_cumprod in float32): the random
    UNet drives samples to a few hundred, so the tolerance is relative to their size."""
    scale = max(1.0, float(ref.abs().max()))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=3e-6 * scale)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_betas_are_diffusers_betas(schedule):
    diffusers = pytest.importorskip("diffusers")
    cfg = {"num_train_timesteps": 500, "beta_start": 2e-4, "beta_end": 0.03,
           "beta_schedule": schedule}
    ref = diffusers.DDPMScheduler(**cfg)
    torch.testing.assert_close(betas_from_scheduler_config(cfg), ref.betas.double(), rtol=0,
                               atol=0)
    sde = sdes.get("ddpm", betas=betas_from_scheduler_config(cfg).tolist())
    t = (torch.arange(500, dtype=torch.float64) + 1) / 500
    torch.testing.assert_close(sde.alpha(t) ** 2, ref.alphas_cumprod.double(), rtol=2e-5, atol=0)


def test_scheduler_config_errors():
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        betas_from_scheduler_config({"rescale_betas_zero_snr": True})
    with pytest.raises(ValueError, match="prediction_type"):
        prediction_from_scheduler_config({"prediction_type": "flow"})
    with pytest.raises(ValueError, match="trained_betas"):
        betas_from_scheduler_config({"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]})


@pytest.mark.parametrize(("prediction_type", "spacing", "steps", "eta"), [
    ("epsilon", "leading", 10, 0.0),
    ("epsilon", "trailing", 8, 1.0),
    ("v_prediction", "trailing", 10, 0.0),
    ("sample", "leading", 5, 0.5),
])
def test_ddim_reproduces_diffusers_ddim_scheduler(tmp_path, prediction_type, spacing, steps, eta):
    """The DDIMScheduler loop (clip_sample=False, set_alpha_to_one) on its own timesteps,
    with scoregen's per-sample noise as variance_noise, equals scoregen's ddim on the grid
    t = (k + 1) / N followed by 0, from the same x_T. DDIMScheduler steps from k to
    k - N // steps, the next timestep of its grid for leading and trailing spacing when
    steps divides N (the grids agree; otherwise it steps to a time it never evaluates)."""
    folder = _save_pipeline(tmp_path, "DDIMScheduler", prediction_type=prediction_type,
                            timestep_spacing=spacing, clip_sample=False)
    model = load_diffusers(folder)
    assert isinstance(model, DiffusersModel) and model.shape == (1, 8, 8)
    assert model.prediction == {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}[
        prediction_type]
    sched = _scheduler(folder, "DDIMScheduler", steps)
    seeds = seeds_for(6, 0)
    noise = NoiseSource(seeds, (1, 8, 8))
    x_T = noise.draw(0)
    x = x_T.clone()
    with torch.no_grad():
        for i, k in enumerate(sched.timesteps):
            out = model.net(x, k).sample
            x = sched.step(out, k, x, eta=eta, variance_noise=noise.draw(i + 1)).prev_sample
    ours = scoregen.sample(model, model.sde, x_T.clone(), "ddim", ts=_grid(sched.timesteps,
                           N_TRAIN), seeds=seeds, eta=eta)
    assert ours.nfe == steps
    _close_in_float32(ours.x, x)


@pytest.mark.parametrize("steps", [5, 10, 20])
def test_dpm_solver_pp_reproduces_diffusers_multistep(tmp_path, steps):
    """DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint, final sigma 0) equals
    scoregen's dpm_solver++ on the same grid with the same orders: diffusers' 2M takes a
    first-order step only at the start and on its final step to sigma = 0, which is
    scoregen's denoising step x0_hat; so scoregen runs with lower_order_final=False (its
    default also lowers the second-to-last step on grids under 10 steps, which shows here
    as a difference 10^3 times larger at 5 steps)."""
    folder = _save_pipeline(tmp_path, "DPMSolverMultistepScheduler")
    model = load_diffusers(folder)
    sched = _scheduler(folder, "DPMSolverMultistepScheduler", steps)
    x_T = NoiseSource(seeds_for(6, 3), (1, 8, 8)).draw(0)
    x = x_T.clone()
    with torch.no_grad():
        for k in sched.timesteps:
            x = sched.step(model.net(x, k).sample, k, x).prev_sample
    ours = scoregen.sample(model, model.sde, x_T.clone(), "dpm_solver++",
                           ts=_grid(sched.timesteps, N_TRAIN), seeds=seeds_for(6, 3),
                           lower_order_final=False)
    assert ours.nfe == steps
    _close_in_float32(ours.x, x)


def test_load_diffusers_retargets_and_reports_bad_folders(tmp_path):
    folder = _save_pipeline(tmp_path / "p", "DDPMScheduler")
    ddpm_model = load_diffusers(folder)
    vp = sdes.get("vp")
    vp_model = load_diffusers(folder, sde=vp)
    assert vp_model.sde == vp and vp_model.shape == (1, 8, 8)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t_vp = torch.full((3,), 0.4, dtype=torch.float64)
    t_ddpm = ddpm_model.sde.t_from_log_snr(vp.log_snr(t_vp))
    scale = ddpm_model.sde.alpha(t_ddpm) / vp.alpha(t_vp)
    with torch.no_grad():  # eps at equal log-SNR: the same prediction (x rescaled)
        torch.testing.assert_close(vp_model(x, t_vp.float()),
                                   ddpm_model(x * scale.float()[:, None, None, None], t_ddpm),
                                   rtol=1e-4, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="no such diffusers folder"):
        load_diffusers(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no diffusers model"):
        load_diffusers(tmp_path / "empty")
    (folder / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no scheduler config"):
        load_diffusers(folder)


class _TinyNet(torch.nn.Module):
    """A raw network F(x_in, c_noise) for EDM preconditioning (float64, random weights)."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w1 = torch.nn.Parameter(torch.randn(dim + 1, 32, generator=g, dtype=torch.float64))
        self.w2 = torch.nn.Parameter(torch.randn(32, dim, generator=g, dtype=torch.float64) / 6)

    def forward(self, x, c_noise):
        h = torch.cat([x, c_noise[:, None].to(x.dtype)], 1)
        return torch.tanh(h @ self.w1) @ self.w2


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_edm_denoiser_reproduces_k_diffusion_euler(sde_name):
    """k-diffusion's sample_euler(D, x, sigmas) with an EDM-preconditioned denoiser equals
    scoregen's ddim on the times with sigma(t)/alpha(t) = sigmas (Karras et al. 2022, eq. 3:
    Euler in (x / alpha, sigma / alpha) is the first-order exponential step) from the same
    start; on VE the start and the samples are the same tensors."""
    from scoregen.evaluation import peers
    from scoregen.evaluation.peers import kdiffusion

    why = peers.unavailable("k-diffusion")
    if why:
        pytest.skip(f"optional k-diffusion missing: {why}")
    kd = kdiffusion.load()
    sde = sdes.get(sde_name)
    D = edm_precond(_TinyNet(), sigma_data=0.5)
    model = EDMDenoiserModel(D, sde, sigma_data=0.5)
    lam = sde.log_snr(torch.tensor([sde.t_min, sde.T], dtype=torch.float64))
    s_min, s_max = float(torch.exp(-lam[0])), float(torch.exp(-lam[1]))
    sigmas = kd.get_sigmas_karras(9, s_min, s_max).double()
    sigmas[0] = s_max  # k-diffusion builds the ramp in float32; start both at sigma(T) exactly
    x_edm = s_max * torch.randn(64, 2, generator=torch.Generator().manual_seed(2),
                                dtype=torch.float64)
    with torch.no_grad():
        ref = kd.sample_euler(D, x_edm.clone(), sigmas, disable=True)
    ts = torch.cat([sde.t_from_log_snr(-sigmas[:-1].log()), sigmas[-1:]])
    ts[0] = sde.T
    alpha_T = sde.alpha(ts[:1])
    res = scoregen.sample(model, sde, x_edm * alpha_T, "ddim", ts=ts, dtype=torch.float64)
    assert res.nfe == 9
    # the grid goes sigma -> t -> sigma (and the coefficients through log-SNR): float64
    # round-off of that round trip, not a difference of the method
    torch.testing.assert_close(res.x, ref, rtol=1e-6, atol=1e-8)


def test_edm_model_is_the_x0_of_a_known_denoiser():
    """For N(0, s^2) data, D(x, sigma) = s^2 x / (s^2 + sigma^2); under VP the x0 model is
    E[x0 | x_t] = alpha s^2 x / (alpha^2 s^2 + sigma^2), the Wiener filter."""
    s2 = 0.3

    def wiener(x, sigma):
        return s2 * x / (s2 + sigma[:, None] ** 2)

    vp = sdes.get("vp")
    model = EDMDenoiserModel(wiener, vp)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.1, 0.9, 5, dtype=torch.float64)
    a, s = vp.alpha(t)[:, None], vp.sigma(t)[:, None]
    torch.testing.assert_close(model(x, t), a * s2 * x / (a**2 * s2 + s**2))
    assert Denoiser(model, vp)(x, t).x0.shape == x.shape
    with pytest.raises(ValueError, match="sigma_data"):
        edm_precond(_TinyNet(), sigma_data=0)


USER_MODULE = textwrap.dedent('''
    import scoregen
    from scoregen.models.analytic import preset


    def make_model():
        model = preset("ring8").model(scoregen.sde.get("vp"))
        model.shape = (2,)
        model.dataset = "mixture"
        return model


    def not_a_model():
        return 42
''')


def test_model_spec_from_a_file_and_a_module(tmp_path, monkeypatch):
    (tmp_path / "adapter_models.py").write_text(USER_MODULE)
    model = load_model_spec(f"{tmp_path / 'adapter_models.py'}:make_model")
    assert model.prediction == "eps" and model.shape == (2,)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_model_spec("adapter_models:make_model")
    res = scoregen.sample(model, model.sde, (8, 2), "ddim", 5)
    assert torch.isfinite(res.x).all() and res.nfe == 5
    for spec, match in [("adapter_models", "must look like"),
                        ("adapter_models:nope", "no function"),
                        ("adapter_models:not_a_model", "not a scoregen model"),
                        ("no_such_module_xyz:f", "cannot import module")]:
        with pytest.raises(ModelSpecError, match=match):
            load_model_spec(spec)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_model_spec("missing.py:make_model")


def test_adapters_import_foreign_libraries_only_when_used():
    """No module of scoregen.adapters imports diffusers or k-diffusion at module level (so
    scoregen works without them); the layering itself is checked by tests/test_imports.py."""
    import ast

    import scoregen.adapters

    for path in Path(scoregen.adapters.__file__).parent.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] in ("diffusers", "k_diffusion")], (
                path.name, names)


def test_ci_runs_the_readme_test_command_with_the_optional_libraries():
    """`.ci/run` runs exactly the README's test command, and that command installs diffusers
    (the `bench` extra) and k-diffusion, so the equivalence tests above run in CI."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    section = readme.split("## Run the tests", 1)[1]
    command = section.split("```bash\n", 1)[1].split("\n```", 1)[0].strip()
    ci = [line for line in (root / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [command]
    assert '".[dev,bench]"' in command and "k-diffusion" in command
    assert "torch==2.13.0" in command and command.endswith("&& pytest")
    pyproject = (root / "pyproject.toml").read_text()
    assert 'bench = ["diffusers' in pyproject
