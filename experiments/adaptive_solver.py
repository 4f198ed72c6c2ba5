"""Adaptive exponential integrator against k-diffusion's ``sample_dpm_adaptive`` at equal NFE.

On the exact mixtures ring8 and mix64 under the discrete DDPM process, both solvers start
from the same ``x_T`` (256 samples) and integrate to ``t_min``; k-diffusion then takes the
denoising step, scoregen solves the last interval to ``sigma = 0`` at its order (its default;
the table also gives it with ``final="jump"``, k-diffusion's ending). The endpoint error is
the median per-sample RMS distance to a teacher solve (UniPC order 4, 500 log-SNR steps, its
final interval solved,
:func:`scoregen.sampling.grid_tuning.teacher_trajectories`). Both map a tolerance to
``rtol = tol, atol = 0.156 tol``. For every tolerance of k-diffusion in 0.1 .. 0.001 the
table gives its counted NFE and error, and scoregen's ``dpm_solver++_adaptive`` error at the
same NFE (log-log interpolation of its error-versus-NFE curve over a dense tolerance sweep).
``ode_dopri5`` is listed for reference. Writes ``runs/adaptive_solver/results.md`` and
``error_vs_nfe.png``::

    python experiments/adaptive_solver.py [--n 256] [--out runs/adaptive_solver] [--digits RUN]

The trained digits model (``--digits``, default ``runs/digits`` when it exists) is compared
the same way, its teacher being the same solver on the network.
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import torch

import scoregen
from scoregen import sde as sde_lib
from scoregen.evaluation import compare, peers
from scoregen.evaluation.compare import Setting
from scoregen.infra import outputs
from scoregen.infra.plotting import save_figure
from scoregen.models import analytic
from scoregen.sampling.grid_tuning import endpoint_error, teacher_trajectories

PEER_TOLS = (0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
OUR_TOLS = tuple(10 ** (-k / 4) for k in range(2, 16))  # 0.32 .. 1.8e-4
JUMP = "dpm_solver++_adaptive (final='jump')"


def interpolate(curve: list[tuple[int, float]], nfe: float) -> float:
    """``log err`` linear in ``log nfe`` between the nearest points of ``curve`` (sorted)."""
    pts = sorted(curve)
    if nfe <= pts[0][0]:
        return pts[0][1] if nfe == pts[0][0] else math.nan
    for (n0, e0), (n1, e1) in itertools.pairwise(pts):
        if n0 <= nfe <= n1:
            if n1 == n0:
                return min(e0, e1)
            w = (math.log(nfe) - math.log(n0)) / (math.log(n1) - math.log(n0))
            return math.exp((1 - w) * math.log(e0) + w * math.log(e1))
    return math.nan


def problem(name: str, n: int):
    """``(title, model, sde, event shape, dtype)`` of an exact preset or a checkpoint run."""
    if name in analytic.PRESETS:
        mix, sde = analytic.preset(name), sde_lib.get("ddpm")
        return f"{name} (exact oracle, ddpm)", mix.model(sde), sde, mix.shape, torch.float64
    found = compare.checkpoint_problem(Path(name), n, sde="ddpm")
    return (f"trained model {name} (ddpm)", found.model, found.sde, found.shape,
            found.dtype)


def sweep(name: str, n: int) -> tuple[list[str], dict[str, list[tuple[int, float]]]]:
    title, model, sde, shape, dtype = problem(name, n)
    teacher = teacher_trajectories(model, sde, shape, n, teacher_steps=500, dtype=dtype)
    ts = torch.tensor([sde.T, sde.t_min, 0.0], dtype=torch.float64)
    curves: dict[str, list[tuple[int, float]]] = {
        "dpm_solver++_adaptive": [], JUMP: [], "ode_dopri5": [], "k-diffusion/dpm_adaptive": []}
    for tol in OUR_TOLS:
        for key, final in (("dpm_solver++_adaptive", "solve"), (JUMP, "jump")):
            res = scoregen.sample(model, sde, teacher.x_start.clone(), "dpm_solver++_adaptive",
                                  None, ts=ts, rtol=tol, final=final)
            curves[key].append((res.nfe, float(endpoint_error(res.x, teacher.x_end).median())))
        if tol >= 1e-3:
            res = scoregen.sample(model, sde, teacher.x_start.clone(), "ode_dopri5", None, ts=ts,
                                  rtol=tol, atol=tol)
            curves["ode_dopri5"].append(
                (res.nfe, float(endpoint_error(res.x, teacher.x_end).median())))
    found, messages = peers.peer_methods(["k-diffusion/dpm_adaptive"], sde)
    if not found:
        raise SystemExit(f"k-diffusion is needed for this comparison: {messages}")
    lines = [f"### {title}, {n} samples", "",
             "| tolerance | k-diffusion NFE | k-diffusion error | scoregen error at that NFE "
             "| ratio | scoregen NFE at this tolerance | scoregen with the jump at that NFE "
             "| ratio |", "|---|---|---|---|---|---|---|---|"]
    ours = dict(zip(OUR_TOLS, curves["dpm_solver++_adaptive"], strict=True))
    for tol in PEER_TOLS:
        x, nfe = found[0].draw(model, sde, teacher.x_start.clone(), Setting(tolerance=tol), 0)
        err = float(endpoint_error(x, teacher.x_end).median())
        curves["k-diffusion/dpm_adaptive"].append((nfe, err))
        mine = interpolate(curves["dpm_solver++_adaptive"], nfe)
        jump = interpolate(curves[JUMP], nfe)
        own = scoregen.sample(model, sde, teacher.x_start[:1].clone(), "dpm_solver++_adaptive",
                              None, ts=ts, rtol=tol).nfe if tol not in ours else ours[tol][0]
        lines.append(f"| {tol:g} | {nfe} | {err:.3g} | {mine:.3g} | {err / mine:.2f}x | "
                     f"{own} | {jump:.3g} | {err / jump:.2f}x |")
    return [*lines, ""], curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--out", default="runs/adaptive_solver")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--digits", default="runs/digits",
                        help="a trained run to compare on too, if it exists ('' for none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text, all_curves = ["# Adaptive exponential integrator vs k-diffusion dpm_adaptive", ""], {}
    problems = ["ring8", "mix64"] + ([args.digits] if args.digits and Path(args.digits).exists()
                                      else [])
    for preset in problems:
        lines, curves = sweep(preset, args.n)
        text += lines
        all_curves[preset] = curves
        text += ["scoregen `dpm_solver++_adaptive` (NFE, error): " + ", ".join(
            f"({n}, {e:.2g})" for n, e in curves["dpm_solver++_adaptive"]),
                 "`ode_dopri5` (NFE, error): " + ", ".join(
            f"({n}, {e:.2g})" for n, e in curves["ode_dopri5"]), ""]
        print("\n".join(lines), flush=True)
    outputs.write_text(out / "results.md", "\n".join(text))
    _plot(all_curves, out / "error_vs_nfe.png")
    print(f"wrote {out / 'results.md'} and {out / 'error_vs_nfe.png'}")


def _plot(all_curves, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_curves), figsize=(5.5 * len(all_curves), 4.2))
    for ax, (preset, curves) in zip(axes, all_curves.items(), strict=True):
        for name, pts in curves.items():
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name,
                    ls="--" if "/" in name else "-")
        ax.set(xscale="log", yscale="log", xlabel="NFE (counted)",
               ylabel="median endpoint error", title=f"{preset}, ddpm")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    main()
