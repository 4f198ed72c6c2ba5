"""Evaluate a model: held-out likelihood by two estimators, and sample metrics.

- **Likelihood** (:func:`evaluate_batch`, a function of one batch of held-out examples and
  their global indices, so a distributed run can shard the data and gather the rows):
  the probability-flow ODE (:func:`scoregen.evaluation.likelihood.log_likelihood`: exact
  trace or Hutchinson, adaptive ``torchdiffeq`` solver) and the variational bound of the
  SDE (:func:`scoregen.evaluation.bound.variational_bound`), both at the same points. Discrete
  image data are dequantized first (:mod:`scoregen.evaluation.dequantize`) and reported in
  bits/dim; continuous data in nats. Example ``i`` uses seed ``seed + i`` for all its noise,
  so results do not depend on the batch size or on how the data were split.
- **Sample metrics**: ``n`` samples from the sampler and step count given, scored against
  the held-out split with each metric's noise floor (:mod:`scoregen.evaluation.metrics`).

Every estimate is a mean over examples with its standard error ``std / sqrt(n)`` (the
spread over examples, which includes the Monte-Carlo noise of Hutchinson probes and of the
bound's draws). On a dataset with a known density (the ``mixture`` presets) the exact
``-log p_{t_min}(x)`` is computed at the same points, with the mean difference of each
estimator and its standard error.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scoregen.evaluation.bound import variational_bound
from scoregen.evaluation.dequantize import Quantization, uniform_from_normal
from scoregen.evaluation.likelihood import DIVERGENCES, EXACT_MAX_DIM, log_likelihood
from scoregen.infra import outputs
from scoregen.models.analytic import GaussianMixture
from scoregen.models.prediction import Model
from scoregen.sampling.noise import NoiseSource
from scoregen.sde.base import SCALAR_KERNEL, SDE

ESTIMATORS = ("nll", "bound")  # the probability-flow ODE and the variational bound


@dataclass
class LikelihoodOptions:
    """Settings of both likelihood estimators (defaults are those of the command line)."""

    divergence: str = "auto"
    probes: str = "rademacher"
    n_probes: int = 1
    method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    bound_times: int = 16
    sigma_data: float = 0.5
    t_min: float | None = None
    seed: int = 0
    dtype: str = "float64"

    def __post_init__(self) -> None:
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence {self.divergence!r}; known: "
                             f"{', '.join(DIVERGENCES)}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")


def evaluate_batch(
    model: Model,
    sde: SDE,
    x: Tensor,
    index: Tensor,
    *,
    estimators: tuple[str, ...] = ESTIMATORS,
    quantization: Quantization | None = None,
    options: LikelihoodOptions | None = None,
    mixture: GaussianMixture | None = None,
) -> dict[str, Tensor]:
    """Per-example log-densities of one batch ``x: (B, *D)`` with global indices ``index``.

    Returns ``(B,)`` float64 tensors on the CPU: ``logp_nll`` (ODE), ``logp_bound`` (minus the
    bound) and ``bound_se`` for the estimators asked for, ``logp_exact`` with a ``mixture``,
    and ``nfe_nll`` / ``nfe_bound`` (network evaluations of this batch, repeated per row).
    All log-densities are of the (dequantized) continuous point on the ``[-1, 1]`` scale.
    """
    opts = options or LikelihoodOptions()
    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise ValueError(f"unknown likelihood estimator(s) {sorted(unknown)}; known: "
                         f"{', '.join(ESTIMATORS)}")
    dtype = getattr(torch, opts.dtype)
    x = x.to(dtype)
    seeds = opts.seed + torch.as_tensor(index, dtype=torch.int64).to(x.device)
    if quantization is not None:
        quantization.check_on_grid(x)
        u = uniform_from_normal(NoiseSource(seeds, tuple(x.shape[1:]), dtype, x.device).draw(0))
        x = quantization.dequantize(x, u)
    t0 = sde.t_min if opts.t_min is None else opts.t_min
    out: dict[str, Tensor] = {}
    B = x.shape[0]
    if "nll" in estimators:
        res = log_likelihood(model, sde, x, divergence=opts.divergence, probes=opts.probes,
                             n_probes=opts.n_probes, method=opts.method, rtol=opts.rtol,
                             atol=opts.atol, t_min=t0, seeds=seeds)
        out["logp_nll"] = res.logp
        out["nfe_nll"] = torch.full((B,), float(res.nfe))
    if "bound" in estimators:
        if SCALAR_KERNEL not in sde.capabilities:
            raise ValueError(f"the variational bound is written for the scalar kernel (log-SNR "
                             f"draws, the transition from t_min), which {sde.name!r} does not "
                             "offer; evaluate its likelihood with the probability-flow ODE (nll)")
        bound = variational_bound(model, sde, x, n_times=opts.bound_times, t_min=t0,
                                  seeds=seeds, sigma_data=opts.sigma_data)
        out["logp_bound"] = -bound.nll
        out["bound_se"] = bound.se
        out["nfe_bound"] = torch.full((B,), float(bound.nfe))
    if mixture is not None:
        out["logp_exact"] = mixture.log_prob(x, sde, t0)
    return {k: v.detach().to(torch.float64).cpu() for k, v in out.items()}


def likelihood_rows(
    model: Model,
    sde: SDE,
    data: Tensor,
    *,
    batch_size: int = 256,
    estimators: tuple[str, ...] = ESTIMATORS,
    quantization: Quantization | None = None,
    options: LikelihoodOptions | None = None,
    mixture: GaussianMixture | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Tensor]:
    """:func:`evaluate_batch` over ``data`` in batches (a tqdm bar), rows concatenated."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    rows: dict[str, list[Tensor]] = {}
    bar = tqdm(range(0, len(data), batch_size), desc="likelihood", disable=not progress)
    for start in bar:
        xb = data[start:start + batch_size].to(device)
        index = torch.arange(start, start + len(xb))
        for key, value in evaluate_batch(model, sde, xb, index, estimators=estimators,
                                         quantization=quantization, options=options,
                                         mixture=mixture).items():
            rows.setdefault(key, []).append(value)
        first = next((k for k in ("logp_nll", "logp_bound") if k in rows), None)
        if first is not None:
            bar.set_postfix(nll=f"{-float(torch.cat(rows[first]).mean()):.4g}")
    return {k: torch.cat(v) for k, v in rows.items()}


@dataclass
class Estimate:
    """A mean over examples with its standard error; ``nfe`` per batch (mean)."""

    nats: float
    se_nats: float
    bpd: float
    se_bpd: float
    nfe: float | None = None
    vs_exact: float | None = None
    se_vs_exact: float | None = None


def _mean_se(v: Tensor) -> tuple[float, float]:
    n = v.numel()
    return float(v.mean()), float(v.std() / math.sqrt(n)) if n > 1 else math.nan


def summarize(rows: dict[str, Tensor], dim: int,
              quantization: Quantization | None = None) -> dict[str, Estimate]:
    """Means and standard errors of every estimator (and of the exact density).

    ``nats``: the code length of one example, ``-(logp + D log Delta)`` for quantized data
    (:mod:`~scoregen.evaluation.dequantize`), else ``-logp``; ``bpd = nats / (D ln 2)``.
    ``vs_exact``: mean of ``nll - nll_exact`` at the same points (with its standard error).
    """
    def nats(logp: Tensor) -> Tensor:
        return -logp if quantization is None else quantization.nll(logp, dim)

    per_bit = dim * math.log(2)
    out: dict[str, Estimate] = {}
    for name in (*ESTIMATORS, "exact"):
        key = f"logp_{name}"
        if key not in rows:
            continue
        v = nats(rows[key])
        m, se = _mean_se(v)
        est = Estimate(m, se, m / per_bit, se / per_bit)
        if f"nfe_{name}" in rows:
            est.nfe = float(rows[f"nfe_{name}"].mean())
        if name != "exact" and "logp_exact" in rows:
            est.vs_exact, est.se_vs_exact = _mean_se(v - nats(rows["logp_exact"]))
        out[name] = est
    return out


# -- sample metrics ------------------------------------------------------------------------------
@dataclass
class SampleSettings:
    """How samples for the sample metrics are drawn."""

    sampler: str = "ddim"
    steps: int = 50
    spacing: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)


def draw_samples(model: Model, sde: SDE, shape: tuple[int, ...], n: int,
                 settings: SampleSettings, *, seed: int = 0, batch_size: int = 256,
                 device: torch.device | str = "cpu", progress: bool = True
                 ) -> tuple[Tensor, int]:
    """``n`` samples in batches (sample ``k`` has seed ``seed + k``) and the NFE per batch."""
    from scoregen.sampling.api import sample
    from scoregen.sampling.noise import seeds_for

    parts, nfe = [], 0
    bar = tqdm(range(0, n, batch_size), desc=f"sample {settings.sampler}", disable=not progress)
    for start in bar:
        size = min(batch_size, n - start)
        res = sample(model, sde, (size, *shape), settings.sampler, settings.steps,
                     spacing=settings.spacing, seeds=seeds_for(size, seed + start),
                     device=device, **settings.options)
        parts.append(res.x.detach().to(torch.float64).cpu())
        nfe = res.nfe
    x = torch.cat(parts)
    if not torch.isfinite(x).all():
        raise ValueError(f"sampler {settings.sampler!r} produced NaN or infinite samples")
    return x, nfe


def sample_metrics(samples: Tensor, names: list[str], reference: Tensor,
                   reference2: Tensor | None = None,
                   mixture: GaussianMixture | None = None) -> dict[str, dict[str, float | None]]:
    """Each metric's value and noise floor (``metric(reference2, reference)``)."""
    from scoregen.evaluation import digits_classifier  # noqa: F401 (registers fd_digits)
    from scoregen.evaluation.metrics import METRICS, with_floor

    out = {}
    for name in names:
        target = mixture if METRICS.meta(name)["target"] == "mixture" else reference
        if target is None:
            raise ValueError(f"metric {name!r} needs the exact data density (a mixture dataset)")
        kw = {"entropy": mixture.entropy(200_000, torch.Generator().manual_seed(0))} if (
            name == "nll_gap") else {}
        res = with_floor(name, samples, target, reference2, **kw)
        out[name] = {"value": res.value, "floor": res.floor}
    return out


# -- the report ----------------------------------------------------------------------------------
@dataclass
class EvaluationReport:
    """Everything ``scoregen evaluate`` writes (JSON and a markdown table)."""

    source: str
    sde: dict[str, Any]
    data: dict[str, Any]
    likelihood: dict[str, Estimate]
    likelihood_settings: dict[str, Any]
    samples: dict[str, dict[str, float | None]]
    sample_settings: dict[str, Any]
    seconds: dict[str, float]
    machine: str = field(default_factory=lambda: (
        f"{platform.machine()} {platform.system()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["likelihood"] = {k: asdict(v) for k, v in self.likelihood.items()}
        return d

    def write(self, path: str | Path) -> tuple[Path, Path]:
        """``path`` (JSON) and the markdown table beside it (``.md``), written together,
        atomically and only over files scoregen wrote (:mod:`scoregen.infra.outputs`)."""
        path = Path(path)
        md = path.with_suffix(".md")
        with outputs.replacing(path, md) as (tmp_json, tmp_md):
            tmp_json.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=True))
            tmp_md.write_text(self.markdown())
        return path, md

    def markdown(self) -> str:
        d, ls = self.data, self.likelihood_settings
        unit = (f"bits/dim of the {d['levels']}-level data (uniform dequantization)"
                if d.get("levels") else "nats per example (continuous data)")
        lines = [f"# Evaluation: {self.source}", "",
                 f"SDE {self.sde.get('name')}, data {d.get('name')} ({d['split']} split, "
                 f"{d['n']} examples, D = {d['dim']}); likelihood of p at t_min = "
                 f"{ls['t_min']:g}; machine: {self.machine}.", ""]
        if self.likelihood:
            lines += ["| estimator | NLL (nats) | bits/dim | NFE | vs exact (nats) |",
                      "|---|---|---|---|---|"]
            for name, e in self.likelihood.items():
                label = {"nll": f"probability-flow ODE ({ls['divergence_used']}, {ls['method']} "
                                f"rtol {ls['rtol']:g} atol {ls['atol']:g})",
                         "bound": f"variational bound ({ls['bound_times']} log-SNR draws x 2)",
                         "exact": "exact density (mixture)"}[name]
                nfe = "" if e.nfe is None else f"{e.nfe:.0f}"
                vs = "" if e.vs_exact is None else f"{e.vs_exact:+.4f} ± {e.se_vs_exact:.4f}"
                lines.append(f"| {label} | {e.nats:.4f} ± {e.se_nats:.4f} | {e.bpd:.4f} ± "
                             f"{e.se_bpd:.4f} | {nfe} | {vs} |")
            lines += ["", f"Units: {unit}; ± one standard error over examples. NFE: network "
                      f"calls per batch of up to {ls['batch_size']} examples (ODE: adaptive, "
                      "mean over batches, the divergence's backward passes extra; bound: one "
                      "call per draw on the batch of antithetic pairs).", ""]
        if self.samples:
            s = self.sample_settings
            lines += [f"Samples: {s['n']} from `{s['sampler']}`, {s['steps']} steps "
                      f"({s['nfe']} NFE), against the {d['split']} split; the floor is the same "
                      "metric for real data.", "",
                      "| metric | value | noise floor |", "|---|---|---|"]
            for name, v in self.samples.items():
                floor = "" if v["floor"] is None else f"{v['floor']:.4g}"
                lines.append(f"| {name} | {v['value']:.4g} | {floor} |")
            lines.append("")
        return "\n".join(lines)


def divergence_used(divergence: str, dim: int) -> str:
    """The trace estimator ``auto`` picks for ``dim`` dimensions."""
    if divergence == "auto":
        return "exact" if dim <= EXACT_MAX_DIM else "hutchinson"
    return divergence


def run_evaluation(
    model: Model,
    sde: SDE,
    data: Tensor,
    *,
    source: str,
    data_info: dict[str, Any],
    estimators: tuple[str, ...] = ESTIMATORS,
    metrics: tuple[str, ...] = (),
    n: int = 1000,
    batch_size: int = 256,
    quantization: Quantization | None = None,
    options: LikelihoodOptions | None = None,
    sampling: SampleSettings | None = None,
    reference2: Tensor | None = None,
    mixture: GaussianMixture | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> EvaluationReport:
    """Likelihood of ``data[:n]`` (held-out examples) and sample metrics of ``n`` samples."""
    if n < 2:
        raise ValueError(f"--n must be at least 2, got {n}")
    opts = options or LikelihoodOptions()
    held_out = data[:n]
    dim = held_out[0].numel()
    seconds: dict[str, float] = {}
    summary: dict[str, Estimate] = {}
    if estimators:
        start = time.perf_counter()
        rows = likelihood_rows(model, sde, held_out, batch_size=batch_size,
                               estimators=estimators, quantization=quantization, options=opts,
                               mixture=mixture, device=device, progress=progress)
        seconds["likelihood"] = time.perf_counter() - start
        summary = summarize(rows, dim, quantization)
        for name, est in summary.items():
            if not math.isfinite(est.nats):
                raise ValueError(f"the {name} estimate is not finite ({est.nats}); the model "
                                 "returns NaN or the solver diverged")
    samples: dict[str, dict[str, float | None]] = {}
    settings: dict[str, Any] = {}
    if metrics:
        sampling = sampling or SampleSettings()
        start = time.perf_counter()
        x, nfe = draw_samples(model, sde, tuple(held_out.shape[1:]), n, sampling,
                              seed=opts.seed, batch_size=batch_size, device=device,
                              progress=progress)
        seconds["sampling"] = time.perf_counter() - start
        ref = held_out.to(torch.float64).cpu()
        ref2 = None if reference2 is None else reference2[:n].to(torch.float64).cpu()
        samples = sample_metrics(x, list(metrics), ref, ref2, mixture)
        settings = {**asdict(sampling), "n": n, "nfe": nfe}
    ls = {**asdict(opts), "divergence_used": divergence_used(opts.divergence, dim),
          "batch_size": batch_size, "estimators": list(estimators),
          "t_min": sde.t_min if opts.t_min is None else opts.t_min}
    info = {**data_info, "n": len(held_out), "dim": dim,
            "levels": None if quantization is None else quantization.levels,
            "bin_width": None if quantization is None else quantization.bin_width}
    return EvaluationReport(source, sde.config(), info, summary, ls, samples, settings, seconds)


def main(argv: list[str] | None = None) -> None:
    """``python -m scoregen.evaluation.evaluate [--preset ring8 mix16] [--sde vp ve] [--n 1000]``.

    Both likelihood estimators on the exact mixture oracle against the closed form: for
    ``n`` exact data samples, the mean NLL of ``p_{t_min}`` from the ODE (default options;
    exact trace up to 16 dimensions) and from the bound (16 draws), the mean difference to
    the exact NLL with its standard error, the NFE per batch and the wall time.
    """
    import argparse

    from scoregen.models.analytic import from_spec
    from scoregen.sde.spec import from_spec as sde_from_spec

    parser = argparse.ArgumentParser(description="ODE likelihood and bound vs closed form")
    parser.add_argument("--preset", nargs="+", default=["ring8", "mix16"])
    parser.add_argument("--sde", nargs="+", default=["vp", "ve"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args(argv)
    print("| preset | sde | NLL exact | estimator | NLL | minus exact | NFE/batch | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.preset:
        mix = from_spec(name)
        x = mix.sample(args.n, torch.Generator().manual_seed(0))
        for sde_name in args.sde:
            sde = sde_from_spec(sde_name)
            for est in ESTIMATORS:
                start = time.perf_counter()
                rows = likelihood_rows(mix.model(sde), sde, x, batch_size=args.batch_size,
                                       estimators=(est,), mixture=mix, progress=False)
                seconds = time.perf_counter() - start
                e, exact = (summarize(rows, mix.dim)[k] for k in (est, "exact"))
                print(f"| {name} | {sde_name} | {exact.nats:.4f} | {est} | {e.nats:.4f} | "
                      f"{e.vs_exact:+.4f} ± {e.se_vs_exact:.4f} | {e.nfe:.0f} | {seconds:.1f} |")


__all__ = [
    "ESTIMATORS",
    "Estimate",
    "EvaluationReport",
    "LikelihoodOptions",
    "SampleSettings",
    "draw_samples",
    "evaluate_batch",
    "likelihood_rows",
    "run_evaluation",
    "sample_metrics",
    "summarize",
]


if __name__ == "__main__":
    main()
