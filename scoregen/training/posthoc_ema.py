"""Post-hoc EMA: power-function averages tracked in training, any width reconstructed after.

Karras et al. 2024 ("Analyzing and Improving the Training Dynamics of Diffusion Models",
EDM2, sec. 3 and app. C). A **power-function EMA** with exponent ``gamma`` averages the
weights ``theta_k`` after optimizer steps ``k = 1..t`` as::

    theta_hat_t = beta_t theta_hat_{t-1} + (1 - beta_t) theta_t,   beta_t = (1 - 1/t)^(gamma + 1),

which is exactly ``theta_hat_t = int_0^t p_{t,gamma}(s) theta(s) ds`` for ``theta(s) = theta_k``
on ``(k - 1, k]`` and the normalised profile (EDM2, eq. 2-3)::

    p_{t,gamma}(s) = (gamma + 1) s^gamma / t^(gamma + 1),   0 <= s <= t

(unrolling the recursion gives the weight ``(k^(gamma+1) - (k-1)^(gamma+1)) / t^(gamma+1)`` of
``theta_k``, the integral of ``p`` over ``(k - 1, k]``). Its width relative to ``t`` is
``sigma_rel = sqrt(gamma + 1) / ((gamma + 2) sqrt(gamma + 3))`` (EDM2, eq. 4), independent of
``t``: a power EMA keeps its relative length as training goes on, where a fixed decay does not.

The trainer tracks two widths (``train.ema_sigma_rel``, EDM2 uses 0.05 and 0.10) and writes
both averages at regular steps as **snapshots** (``RUN/ema_snapshots/step_XXXXXX.safetensors``,
kept however many checkpoints are pruned). After training, the average of any other profile
``p_target`` (width, or an earlier end time) is the combination ``sum_i x_i theta_hat_i`` of the
snapshots whose profiles come closest to it in ``L2``: the least-squares solve
``A x = b`` with ``A_ij = <p_i, p_j>`` and ``b_i = <p_i, p_target>`` (EDM2, app. C.3), where for
``t_a <= t_b``::

    <p_{t_a,g_a}, p_{t_b,g_b}> = (g_a + 1)(g_b + 1) (t_a / t_b)^(g_b) / ((g_a + g_b + 1) t_b).

``scoregen ema RUN --sigma-rel 0.05,0.1,0.2`` writes each reconstruction as a checkpoint
(:func:`write_reconstruction`) that every command loads like a run.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

SNAPSHOTS = "ema_snapshots"
SIGMA_REL_MAX = 0.5 / math.sqrt(3)  # the width at gamma = 0, a uniform average
_SNAPSHOT = re.compile(r"step_(\d+)\.safetensors")


def sigma_rel_from_gamma(gamma: float) -> float:
    """``sigma_rel = sqrt(gamma + 1) / ((gamma + 2) sqrt(gamma + 3))`` (EDM2, eq. 4)."""
    return math.sqrt(gamma + 1) / ((gamma + 2) * math.sqrt(gamma + 3))


def gamma_from_sigma_rel(sigma_rel: float) -> float:
    """The exponent ``gamma >= 0`` of width ``sigma_rel``: squaring eq. 4 gives
    ``(gamma + 2)^2 (gamma + 3) = (gamma + 1) / sigma_rel^2``, the cubic
    ``gamma^3 + 7 gamma^2 + (16 - s) gamma + 12 - s = 0`` with ``s = sigma_rel^-2``, whose
    largest real root is ``gamma``."""
    if not 0 < sigma_rel < SIGMA_REL_MAX:
        raise ValueError(f"sigma_rel must lie in (0, {SIGMA_REL_MAX:.4f}) (the width of a "
                         f"uniform average), got {sigma_rel!r}")
    s = sigma_rel**-2
    return float(np.roots([1.0, 7.0, 16.0 - s, 12.0 - s]).real.max())


def profile_dot(t_a: Tensor, g_a: Tensor, t_b: Tensor, g_b: Tensor) -> Tensor:
    """``<p_{t_a,g_a}, p_{t_b,g_b}>`` on ``[0, inf)`` (module docstring; broadcasts, float64).
    Written with the ratio of the smaller to the larger end time, so large ``gamma`` never
    overflows."""
    t_a, g_a, t_b, g_b = (torch.as_tensor(v, dtype=torch.float64) for v in (t_a, g_a, t_b, g_b))
    ratio = torch.minimum(t_a, t_b) / torch.maximum(t_a, t_b)
    power = torch.where(t_a <= t_b, g_b, g_a)  # the exponent of the longer profile
    return ((g_a + 1) * (g_b + 1) * ratio**power
            / ((g_a + g_b + 1) * torch.maximum(t_a, t_b)))


def solve_coefficients(t: Sequence[float], gamma: Sequence[float], t_target: float,
                       gamma_target: float) -> Tensor:
    """Coefficients ``x`` with ``sum_i x_i p_{t_i,gamma_i}`` the least-squares fit of
    ``p_{t_target,gamma_target}`` (EDM2, app. C.3; float64 ``(n,)``). Times are scaled by
    ``t_target`` (the solution does not depend on the unit)."""
    t = torch.as_tensor(t, dtype=torch.float64) / t_target
    g = torch.as_tensor(gamma, dtype=torch.float64)
    A = profile_dot(t[:, None], g[:, None], t[None, :], g[None, :])
    b = profile_dot(t, g, torch.ones(()), torch.tensor(gamma_target))
    return torch.linalg.lstsq(A, b[:, None], driver="gelsd").solution[:, 0]


def fit_error(t: Sequence[float], gamma: Sequence[float], x: Tensor, t_target: float,
              gamma_target: float) -> float:
    """Relative ``L2`` error ``||sum_i x_i p_i - p_target|| / ||p_target||`` of a fit."""
    t = torch.as_tensor(t, dtype=torch.float64) / t_target
    g = torch.as_tensor(gamma, dtype=torch.float64)
    one, gt = torch.ones(()), torch.tensor(gamma_target)
    A = profile_dot(t[:, None], g[:, None], t[None, :], g[None, :])
    b = profile_dot(t, g, one, gt)
    target = profile_dot(one, gt, one, gt)
    err2 = x @ A @ x - 2 * x @ b + target
    return float(err2.clamp_min(0).sqrt() / target.sqrt())


class PowerEMA:
    """Power-function EMAs of a module's parameters at the widths ``sigma_rels`` (module
    docstring); buffers are copied. ``update(module, t)`` after optimizer step ``t >= 1``."""

    def __init__(self, module: nn.Module, sigma_rels: Sequence[float]) -> None:
        self.sigma_rels = [float(s) for s in sigma_rels]
        self.gammas = [gamma_from_sigma_rel(s) for s in self.sigma_rels]
        self.averages = [copy.deepcopy(module).eval().requires_grad_(False)
                         for _ in self.sigma_rels]

    @torch.no_grad()
    def update(self, module: nn.Module, t: int) -> None:
        for gamma, avg in zip(self.gammas, self.averages, strict=True):
            beta = (1 - 1 / t) ** (gamma + 1)
            for p_avg, p in zip(avg.parameters(), module.parameters(), strict=True):
                p_avg.lerp_(p, 1 - beta)
            for b_avg, b in zip(avg.buffers(), module.buffers(), strict=True):
                b_avg.copy_(b)

    def state_tensors(self) -> dict[str, Tensor]:
        """``{"<i>.<name>": tensor}`` of every average (checkpoint group ``phema``)."""
        return {f"{i}.{k}": v.detach().cpu().contiguous()
                for i, avg in enumerate(self.averages) for k, v in avg.state_dict().items()}

    def load_tensors(self, tensors: dict[str, Tensor], source: Path) -> None:
        """Inverse of :meth:`state_tensors` (a :class:`ValueError` naming ``source``)."""
        from scoregen.training.checkpoint import load_state

        for i, avg in enumerate(self.averages):
            load_state(avg, {k[len(f"{i}."):]: v for k, v in tensors.items()
                             if k.startswith(f"{i}.")}, source)

    def save_snapshot(self, run_dir: Path, t: int) -> Path:
        """Write ``run_dir/ema_snapshots/step_XXXXXX.safetensors`` atomically: every average at
        step ``t`` and the widths (metadata)."""
        from safetensors.torch import save_file

        folder = Path(run_dir) / SNAPSHOTS
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step_{t:06d}.safetensors"
        tmp = folder / f".{path.name}.tmp-{os.getpid()}"
        save_file(self.state_tensors(), str(tmp),
                  metadata={"step": str(t), "sigma_rel": json.dumps(self.sigma_rels)})
        os.replace(tmp, path)
        return path


# -- snapshots on disk and the reconstruction ------------------------------------------------------
def snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, file)`` of the snapshots of a run, by step."""
    folder = Path(run_dir) / SNAPSHOTS
    found = []
    for p in folder.glob("step_*.safetensors") if folder.is_dir() else ():
        m = _SNAPSHOT.fullmatch(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune_snapshots(run_dir: str | Path, step: int) -> list[Path]:
    """Delete snapshots past ``step`` (left by a run that is resumed from an earlier
    checkpoint: they belong to another trajectory); returns them."""
    gone = [p for s, p in snapshots(run_dir) if s > step]
    for p in gone:
        p.unlink()
    return gone


def reconstruct(run_dir: str | Path, sigma_rel: float, step: int | None = None
                ) -> tuple[dict[str, Tensor], dict[str, float]]:
    """The state dict of the power EMA of width ``sigma_rel`` ending at ``step`` (default: the
    last snapshot), as the least-squares combination of the run's snapshots at steps ``<=
    step``; and ``{"step", "sigma_rel", "gamma", "snapshots", "fit_error"}``.

    Parameters (floating tensors) are combined; other entries (integer buffers) come from the
    last snapshot used. Raises ``ValueError`` when the run has no snapshots.
    """
    from safetensors import safe_open

    found = snapshots(run_dir)
    if step is not None:
        found = [(s, p) for s, p in found if s <= step]
    if not found:
        raise ValueError(f"{Path(run_dir) / SNAPSHOTS} holds no post-hoc EMA snapshots"
                         + ("" if step is None else f" at steps <= {step}")
                         + "; train with train.ema_sigma_rel (e.g. [0.05, 0.1]) to track them")
    t_target = found[-1][0] if step is None else step
    gamma_target = gamma_from_sigma_rel(sigma_rel)
    ts, gs, keys = [], [], []
    for s, path in found:
        with safe_open(str(path), framework="pt") as fh:
            widths = json.loads((fh.metadata() or {})["sigma_rel"])
        for i, w in enumerate(widths):
            ts.append(float(s))
            gs.append(gamma_from_sigma_rel(w))
            keys.append((path, i))
    x = solve_coefficients(ts, gs, float(t_target), gamma_target)
    out: dict[str, Tensor] = {}
    for coef, (path, i) in zip(x.tolist(), keys, strict=True):
        with safe_open(str(path), framework="pt") as fh:
            prefix = f"{i}."
            for name in fh.keys():  # noqa: SIM118 (safe_open has no iterator)
                if not name.startswith(prefix):
                    continue
                key, value = name[len(prefix):], fh.get_tensor(name)
                if value.is_floating_point():
                    acc = out.get(key)
                    term = value.to(torch.float64) * coef
                    out[key] = term if acc is None else acc + term
                else:
                    out[key] = value
    info = {"step": t_target, "sigma_rel": sigma_rel, "gamma": gamma_target,
            "snapshots": len(found), "fit_error": fit_error(ts, gs, x, t_target, gamma_target)}
    return out, info


def write_reconstruction(run_dir: str | Path, sigma_rel: float, step: int | None = None,
                         out: str | Path | None = None) -> tuple[Path, dict[str, float]]:
    """Reconstruct width ``sigma_rel`` (:func:`reconstruct`) and write it as a checkpoint
    (default ``RUN/ema/sigma_rel_0.100``; weights as the model group, no EMA, the run's model
    and run config, ``posthoc_ema`` describing the fit) that ``load_model``, ``scoregen
    sample``, ``evaluate`` and ``compare --checkpoint`` read like a run."""
    from scoregen.models import build_model
    from scoregen.training.checkpoint import load_state, read_checkpoint, save_checkpoint

    run_dir = Path(run_dir)
    state, info = reconstruct(run_dir, sigma_rel, step)
    ckpt = read_checkpoint(run_dir)
    model = build_model(ckpt.meta["model"])
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    load_state(model, {k: v.to(dtypes.get(k, v.dtype)) for k, v in state.items()},
               run_dir / SNAPSHOTS)
    folder = Path(out) if out is not None else run_dir / "ema" / f"sigma_rel_{sigma_rel:.3f}"
    run_config = ckpt.meta.get("run_config")
    written = save_checkpoint(folder, int(info["step"]), model, run_config=run_config,
                              extra_meta={"posthoc_ema": info})
    return written, info


__all__ = [
    "SIGMA_REL_MAX",
    "SNAPSHOTS",
    "PowerEMA",
    "fit_error",
    "gamma_from_sigma_rel",
    "profile_dot",
    "prune_snapshots",
    "reconstruct",
    "sigma_rel_from_gamma",
    "snapshots",
    "solve_coefficients",
    "write_reconstruction",
]
