"""Endpoint error to sigma = 0 versus NFE: the final interval at each solver's order.

From the same starts ``x_T``, ``sampler="auto"`` (the default of ``scoregen.sample``), every
deterministic scoregen sampler on the default grid (final interval solved at its order,
``final="solve"``, and two with the plain denoising jump, ``final="jump"``) and
k-diffusion's ``sample_lms`` and ``sample_dpmpp_2m`` (Karras grid, their own last step to
``sigma = 0``) are compared with the exact probability-flow ODE solution at ``sigma = 0``
(:func:`scoregen.evaluation.reference.pf_ode_endpoint`: dopri5 at 1e-11 in float64, then the
exact flow in ``tau = sigma~^2`` to 0). Reported: the median over starts of the L2 endpoint
error, and the NLL gap (nats) of ``--nll-n`` samples against the exact density, whose noise
floor (exact samples) is printed below the table. Float64, exact mixture scores::

    python experiments/endpoint_error.py                          # ring8 + mix64 under ddpm
    python experiments/endpoint_error.py --presets ring8 --budgets 20 50 --starts 16
    python experiments/endpoint_error.py --sde ve:sigma_min=0.002,sigma_max=80 --budgets 5 10 20

About 15 minutes on a 2-core CPU (much longer on a loaded one).

Writes ``--out/endpoint_error.md`` and ``--out/endpoint_error.png``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

import scoregen
from scoregen import samplers
from scoregen.evaluation.metrics import nll_gap
from scoregen.evaluation.reference import pf_ode_endpoint
from scoregen.infra import outputs
from scoregen.infra.plotting import save_figure
from scoregen.models.analytic import preset
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.noise import NoiseSource, seeds_for
from scoregen.sde.spec import describe, from_spec

# label: (sampler, options); "auto" is what scoregen.sample runs by default for the budget
OURS = {
    "auto": ("auto", {}),
    "ddim": ("ddim", {}),
    "ode_midpoint": ("ode_midpoint", {}),
    "ode_rk4": ("ode_rk4", {}),
    "heun": ("heun", {}),
    "dpm_solver++ (2M)": ("dpm_solver++", {}),
    "dpm_solver++ (3M)": ("dpm_solver++", {"order": 3}),
    "dpm_solver++_single (2S)": ("dpm_solver++_single", {}),
    "unipc (p=2)": ("unipc", {}),
    "unipc (p=3)": ("unipc", {"order": 3}),
    "ipndm": ("ipndm", {}),
    "dpm_solver++ (3M), jump": ("dpm_solver++", {"order": 3, "final": "jump"}),
    "unipc (p=3), jump": ("unipc", {"order": 3, "final": "jump"}),
}
PEERS = {"k-diffusion/lms": "sample_lms", "k-diffusion/dpmpp_2m": "sample_dpmpp_2m"}


def _steps(name: str, opts: dict, budget: int) -> int:
    """The step count whose NFE on a grid ending in ``0`` is the largest ``<= budget``: ``n``
    for one-NFE samplers, ``k (n - 1) + 1`` for ``k`` evaluations per step (the final
    interval costs one); ``tests/test_samplers.py`` checks these counts."""
    per = opts.get("order", 2) if name == "dpm_solver++_single" else (
        1 if name == "auto" else samplers.meta(name)["nfe_per_step"])
    return budget if per == 1 else (budget - 1) // per + 1


def _draw(label: str, mix, sde, x_T: torch.Tensor, budget: int) -> tuple[torch.Tensor, int]:
    if label in PEERS:
        from scoregen.evaluation.peers import kdiffusion

        den = Denoiser(mix.model(sde), sde)
        return kdiffusion.run_sampler(PEERS[label], den, sde, x_T, budget), den.nfe
    name, opts = OURS[label]
    res = scoregen.sample(mix.model(sde), sde, x_T, name, _steps(name, opts, budget), **opts)
    return res.x, res.nfe


def run(preset_name: str, sde, budgets: list[int], starts: int, nll_n: int,
        nll_budgets: list[int], labels: list[str] | None = None) -> tuple[dict, dict, float]:
    """``(errors[label][budget], nll[label][budget], noise floor of |nll gap|)``."""
    mix = preset(preset_name)
    x_T = sde.prior_std() * NoiseSource(seeds_for(starts, 7), mix.shape, torch.float64).draw(0)
    x_nll = sde.prior_std() * NoiseSource(seeds_for(nll_n, 1000), mix.shape,
                                          torch.float64).draw(0)
    ref = pf_ode_endpoint(mix, sde, x_T)
    entropy = mix.entropy(200_000, torch.Generator().manual_seed(0))
    exact = [abs(nll_gap(mix.sample(nll_n, torch.Generator().manual_seed(k)), mix, entropy))
             for k in range(5)]
    errors: dict = {}
    nll: dict = {}
    labels = labels or [*OURS, *PEERS]
    for label in tqdm(labels, desc=preset_name, leave=False):
        for budget in budgets:
            x, nfe = _draw(label, mix, sde, x_T, budget)
            errors.setdefault(label, {})[budget] = (
                float((x - ref).flatten(1).norm(dim=1).median()), nfe)
            if budget in nll_budgets:
                x, _ = _draw(label, mix, sde, x_nll, budget)
                nll.setdefault(label, {})[budget] = nll_gap(x, mix, entropy)
    return errors, nll, max(exact)


def markdown(preset_name: str, sde, errors: dict, nll: dict, floor: float) -> str:
    budgets = sorted(next(iter(errors.values())))
    head = " | ".join(f"{b}" for b in budgets)
    lines = [f"### {preset_name} under {describe(sde)}: median endpoint error to sigma = 0", "",
             f"| sampler | {head} |", "|---|" + "---|" * len(budgets)]
    for label, row in errors.items():
        lines.append(f"| {label} | " + " | ".join(f"{row[b][0]:.2e}" for b in budgets) + " |")
    nll_budgets = sorted(next(iter(nll.values()))) if nll else []
    if nll_budgets:
        lines += ["", f"NLL gap (nats) at each budget; exact samples: |gap| <= {floor:.3f} "
                  "(5 draws of the same size).", "",
                  "| sampler | " + " | ".join(map(str, nll_budgets)) + " |",
                  "|---|" + "---|" * len(nll_budgets)]
        for label, row in nll.items():
            lines.append(f"| {label} | " + " | ".join(f"{row[b]:+.3f}" for b in nll_budgets)
                         + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (title, errors) in zip(axes[0], results.items(), strict=True):
        for label, row in errors.items():
            nfe = [v[1] for v in row.values()]
            err = [v[0] for v in row.values()]
            style = "--" if "/" in label else ":" if "jump" in label else "-"
            ax.loglog(nfe, err, style, marker="o", ms=3, label=label)
        ax.set(title=title, xlabel="NFE", ylabel="median endpoint error to sigma = 0")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["ring8", "mix64"])
    parser.add_argument("--sde", default="ddpm")
    parser.add_argument("--budgets", nargs="+", type=int,
                        default=[20, 50, 100, 200, 500, 1000])
    parser.add_argument("--nll-budgets", nargs="+", type=int, default=[50, 100])
    parser.add_argument("--starts", type=int, default=32)
    parser.add_argument("--nll-n", type=int, default=1000)
    parser.add_argument("--methods", nargs="+", default=None, choices=[*OURS, *PEERS],
                        metavar="LABEL", help="a subset of the labelled methods")
    parser.add_argument("--out", default="runs/endpoint_error")
    args = parser.parse_args(argv)
    sde = from_spec(args.sde)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reports, curves = [], {}
    for name in args.presets:
        errors, nll, floor = run(name, sde, args.budgets, args.starts, args.nll_n,
                                 args.nll_budgets, args.methods)
        reports.append(markdown(name, sde, errors, nll, floor))
        curves[f"{name} ({describe(sde)})"] = errors
        print(reports[-1], flush=True)
    outputs.write_text(out / "endpoint_error.md", "\n".join(reports))
    plot(curves, out / "endpoint_error.png")
    print(f"wrote {out / 'endpoint_error.md'} and .png (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; log10 of 1e-6 = {math.log10(1e-6):.0f})")


if __name__ == "__main__":
    main()
