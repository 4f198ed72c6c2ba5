"""diffusers UNets (or any module with their call) as scoregen models on the ``ddpm`` process.

A diffusers scheduler config fixes the forward process: betas ``beta_k``, ``k = 0 .. N-1``
(``trained_betas``, or ``beta_schedule`` with ``beta_start`` / ``beta_end``) and
``alphas_cumprod[k] = prod_{j<=k} (1 - beta_j)`` (Ho et al. 2020, eq. 4). scoregen's
``ddpm`` SDE with the same betas places ``alpha_bar_i`` (``i = k + 1``) at ``t_i = i / N``
(:mod:`scoregen.sde.ddpm`), so

    diffusers timestep k   <->   scoregen time t = (k + 1) / N,   alpha(t)^2 = alphas_cumprod[k],

and the network is called at ``k = N t - 1`` (a fractional timestep between train
timesteps; the sinusoidal time embedding of diffusers' UNets takes any real number).
``prediction_type`` maps ``epsilon -> eps``, ``v_prediction -> v`` (both libraries define
``v = alpha eps - sigma x0``, Salimans & Ho 2022) and ``sample -> x0``.

Beta schedules are computed as diffusers' ``DDPMScheduler`` computes them (float32, then
exact float64 in the SDE):

- ``linear``:            ``linspace(beta_start, beta_end, N)``;
- ``scaled_linear``:     ``linspace(sqrt(beta_start), sqrt(beta_end), N)^2``;
- ``squaredcos_cap_v2``: ``beta_k = min(1 - abar((k+1)/N) / abar(k/N), 0.999)`` with
  ``abar(s) = cos^2((s + 0.008) / 1.008 * pi / 2)`` (Nichol & Dhariwal 2021, eq. 17).

Other schedules are taken from diffusers' own ``DDPMScheduler`` when diffusers is installed.
``rescale_betas_zero_snr`` (a last beta of 1, infinite noise at ``T``) has no Gaussian prior
and is refused.

:func:`load_diffusers` reads a local ``save_pretrained`` folder (a pipeline folder with
``unet/`` and ``scheduler/``, or a model folder next to a ``scheduler_config.json``) with
``local_files_only=True`` and safetensors weights only: nothing is downloaded or unpickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scoregen.infra.shape import batch_times
from scoregen.models.prediction import Model, retarget
from scoregen.sde.base import SDE
from scoregen.sde.ddpm import DiscreteVPSDE

PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
SCHEDULER_FILE = "scheduler_config.json"


def _linear(n: int, start: float, end: float) -> Tensor:
    return torch.linspace(start, end, n, dtype=torch.float32)


def _scaled_linear(n: int, start: float, end: float) -> Tensor:
    return torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2


def _squaredcos_cap_v2(n: int, start: float, end: float) -> Tensor:
    def abar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - abar((k + 1) / n) / abar(k / n), 0.999) for k in range(n)],
                        dtype=torch.float32)


BETA_SCHEDULES: dict[str, Callable[[int, float, float], Tensor]] = {
    "linear": _linear,
    "scaled_linear": _scaled_linear,
    "squaredcos_cap_v2": _squaredcos_cap_v2,
}


def read_scheduler_config(config: dict[str, Any] | str | Path) -> dict[str, Any]:
    """A scheduler config as a dict: given as one, or read from a ``scheduler_config.json``
    (or the folder holding it)."""
    if isinstance(config, dict):
        return dict(config)
    path = Path(config)
    if path.is_dir():
        path = path / SCHEDULER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no diffusers scheduler config at {path} (expected "
                                f"{SCHEDULER_FILE}, written by scheduler.save_pretrained)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def betas_from_scheduler_config(config: dict[str, Any] | str | Path) -> Tensor:
    """The ``N`` betas (float64) of a diffusers scheduler config (module docstring)."""
    cfg = read_scheduler_config(config)
    if cfg.get("rescale_betas_zero_snr"):
        raise ValueError("scheduler config has rescale_betas_zero_snr=True: its last step has "
                         "infinite noise (alpha_bar = 0) and no Gaussian prior; scoregen's "
                         "ddpm process needs every beta < 1")
    n = int(cfg.get("num_train_timesteps", 1000))
    if cfg.get("trained_betas") is not None:
        betas = torch.as_tensor(cfg["trained_betas"], dtype=torch.float32)
        if betas.numel() != n:
            raise ValueError(f"scheduler config: {betas.numel()} trained_betas but "
                             f"num_train_timesteps={n}")
        return betas.to(torch.float64)
    schedule = cfg.get("beta_schedule", "linear")
    start, end = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    if schedule in BETA_SCHEDULES:
        return BETA_SCHEDULES[schedule](n, start, end).to(torch.float64)
    try:
        from diffusers import DDPMScheduler
    except ImportError:
        raise ValueError(f"beta_schedule {schedule!r} is not built in (known: "
                         f"{', '.join(BETA_SCHEDULES)}); install diffusers to use its own "
                         "schedules") from None
    accepted = {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule"}
    return DDPMScheduler(**{k: v for k, v in cfg.items() if k in accepted}).betas.double()


def ddpm_sde_from_scheduler_config(config: dict[str, Any] | str | Path) -> DiscreteVPSDE:
    """The ``ddpm`` SDE whose ``alpha(t_i)^2`` are the scheduler's ``alphas_cumprod``."""
    return DiscreteVPSDE(betas=betas_from_scheduler_config(config).tolist())


def prediction_from_scheduler_config(config: dict[str, Any] | str | Path) -> str:
    """scoregen's prediction type for the config's ``prediction_type`` (default epsilon)."""
    kind = read_scheduler_config(config).get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"scheduler prediction_type {kind!r} is not supported; known: "
                         f"{', '.join(PREDICTION_TYPES)}")
    return PREDICTION_TYPES[kind]


class DiffusersModel(nn.Module):
    """``net(x, timestep)`` of a diffusers UNet as a :class:`scoregen.models.prediction.Model`.

    Args:
        net: ``net(x: (B, C, H, W), timestep: (B,)) -> out`` with ``out.sample`` (diffusers'
            output classes), ``out[0]`` or a tensor of ``x``'s shape.
        sde: the ``ddpm`` process of the scheduler (:func:`ddpm_sde_from_scheduler_config`).
        prediction: ``eps``, ``v`` or ``x0``.
        shape: event shape ``(C, H, W)`` of one sample, when known (from the UNet config).
    """

    def __init__(self, net: nn.Module, sde: DiscreteVPSDE, prediction: str = "eps",
                 shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if prediction not in PREDICTION_TYPES.values():
            raise ValueError(f"prediction must be one of {sorted(PREDICTION_TYPES.values())}, "
                             f"got {prediction!r}")
        self.net = net
        self.sde = sde
        self.prediction = prediction
        self.shape = None if shape is None else tuple(shape)

    def timestep(self, t: Tensor) -> Tensor:
        """diffusers' timestep ``k = N t - 1`` of scoregen time ``t``."""
        return t.to(torch.float64) * self.sde.n - 1

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = batch_times(t, x)
        dtype = next(self.net.parameters()).dtype
        out = self.net(x.to(dtype), self.timestep(t).to(dtype))
        out = getattr(out, "sample", out)
        if isinstance(out, tuple | list):
            out = out[0]
        return out.to(x.dtype)

    @classmethod
    def from_scheduler_config(cls, net: nn.Module, config: dict[str, Any] | str | Path,
                              shape: tuple[int, ...] | None = None) -> DiffusersModel:
        """``net`` on the ``ddpm`` SDE and prediction type given by a scheduler config."""
        cfg = read_scheduler_config(config)
        return cls(net, ddpm_sde_from_scheduler_config(cfg), prediction_from_scheduler_config(cfg),
                   shape)


def _unet_shape(net: nn.Module) -> tuple[int, ...] | None:
    cfg = getattr(net, "config", None)
    size = getattr(cfg, "sample_size", None)
    channels = getattr(cfg, "in_channels", None)
    if size is None or channels is None:
        return None
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (int(channels), int(h), int(w))


def _locate(folder: Path, scheduler: str | Path | None) -> tuple[Path, Path]:
    """``(model folder, scheduler config file)`` of a ``save_pretrained`` layout."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no such diffusers folder: {folder}")
    model_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no diffusers model (expected config.json, or "
                                "unet/config.json in a pipeline folder)")
    if scheduler is not None:
        sched = Path(scheduler)
        sched = sched / SCHEDULER_FILE if sched.is_dir() else sched
    else:
        candidates = [folder / "scheduler" / SCHEDULER_FILE, folder / SCHEDULER_FILE,
                      model_dir / SCHEDULER_FILE]
        sched = next((c for c in candidates if c.is_file()), candidates[0])
    if not sched.is_file():
        raise FileNotFoundError(f"no scheduler config for {folder}: expected "
                                f"scheduler/{SCHEDULER_FILE} or {SCHEDULER_FILE}, or pass "
                                "scheduler=PATH")
    return model_dir, sched


def load_diffusers(folder: str | Path, *, scheduler: str | Path | None = None,
                   sde: SDE | None = None, device: str | torch.device = "cpu") -> Model:
    """A diffusers model saved with ``save_pretrained`` as a scoregen model, in eval mode.

    ``folder``: a pipeline folder (``unet/`` and ``scheduler/``) or a model folder with a
    ``scheduler_config.json`` beside it (or give ``scheduler=``). The class comes from the
    model's ``config.json`` (``_class_name``, e.g. ``UNet2DModel``); weights must be
    safetensors. ``sde``: the process to present the model on (default: the scheduler's
    ``ddpm`` process; another SDE re-targets it by log-SNR,
    :func:`scoregen.models.prediction.retarget`).
    """
    model_dir, sched = _locate(Path(folder), scheduler)
    try:
        import diffusers
    except ImportError:
        raise ValueError("loading a diffusers folder needs diffusers: pip install "
                         "'scoregen[bench]' (or pip install diffusers)") from None
    class_name = json.loads((model_dir / "config.json").read_text()).get("_class_name",
                                                                       "UNet2DModel")
    cls = getattr(diffusers, class_name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(f"{model_dir / 'config.json'}: diffusers has no model class "
                         f"{class_name!r}")
    try:
        net = cls.from_pretrained(str(model_dir), local_files_only=True, use_safetensors=True)
    except OSError as err:
        raise FileNotFoundError(f"cannot load {class_name} from {model_dir}: {err}") from None
    model = DiffusersModel.from_scheduler_config(net, sched, _unet_shape(net))
    model = model.to(device).eval()
    if sde is None or sde == model.sde:
        return model
    out = retarget(model, sde)
    out.shape = model.shape  # type: ignore[attr-defined]
    return out


__all__ = [
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "DiffusersModel",
    "betas_from_scheduler_config",
    "ddpm_sde_from_scheduler_config",
    "load_diffusers",
    "prediction_from_scheduler_config",
    "read_scheduler_config",
]
