"""The comparison's outputs: markdown tables, CSV, JSON and the two PNGs.

``results.md`` has one table per metric (sampler x budget; best scoregen sampler in **bold**,
best peer in _italics_), the wall times and the tolerance runs; :func:`guidance_summary`
tabulates guided comparisons over the scale.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path

from torch import Tensor

from scoregen.evaluation.compare.sweep import Comparison

HIGHER_IS_BETTER = ("class_acc",)


def _score(value: float) -> float:
    """Ranking key: the size of the error (``nll_gap`` is signed), NaN ranks last."""
    return math.inf if math.isnan(value) else abs(value)


def _cell(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"


def _oriented(metric: str, value: float) -> float:
    """A value where smaller is better (``1 - v`` for accuracies)."""
    return 1 - value if metric in HIGHER_IS_BETTER else value


def guidance_summary(comps: dict[float, Comparison]) -> str:
    """One markdown table per budget: method x guidance scale, ``endpoint`` error with the
    class accuracy in parentheses (from :func:`guided_problem` comparisons)."""
    scales = sorted(comps)
    first = comps[scales[0]]
    title = first.problem["name"].split(", CFG scale")[0] + ")"
    lines = [f"# Guided sampling on the exact oracle: {title}", "",
             "Classifier-free guidance, scale w (0 unconditional, 1 conditional). Each cell: "
             "mean L2 endpoint error against a dopri5 solve of the guided PF-ODE at rtol 1e-10 "
             "from the same x_T (class accuracy of the exact classifier in parentheses). "
             "NFE counts guided calls; each is one network call on a doubled batch.", ""]
    budgets = [b for b in first.settings["budgets"]
               if any(r.budget == b for c in comps.values() for r in c.records)]
    for b in budgets:
        lines += [f"## {b} NFE", "", "| sampler | " + " | ".join(f"w={w:g}" for w in scales)
                  + " |", "|---|" + "---|" * len(scales)]
        names = list(dict.fromkeys(r.method for c in comps.values() for r in c.records
                                   if r.budget == b))
        for name in names:
            cells = []
            for w in scales:
                r = next((r for r in comps[w].records if r.method == name and r.budget == b),
                         None)
                cells.append("" if r is None else f"{_cell(r.metrics['endpoint'])} "
                             f"({r.metrics['class_acc']:.3f})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def markdown(comp: Comparison) -> str:
    """Markdown tables: one per metric (sampler x budget) plus wall time and tolerance runs."""
    p, s = comp.problem, comp.settings
    fixed = [r for r in comp.records if r.budget is not None]
    names = list(dict.fromkeys(r.method for r in fixed))
    by_key = {(r.method, r.budget): r for r in fixed}
    budgets = [b for b in s["budgets"] if any(r.budget == b for r in fixed)]
    lines = [f"# Sampler comparison: {p['name']}", "",
             f"{p['n']} samples per run ({p['dtype']}), seed {s['seed']}, machine: {p['machine']}. "
             "NFE is counted; a number in parentheses is the counted NFE where it differs from "
             "the budget. **Bold**: best scoregen sampler at that budget; _italics_: best peer "
             "(by the size of the error).", ""]
    if comp.floor:
        floor = ", ".join(f"{k} {_cell(v)}" for k, v in comp.floor.items())
        lines += ["Noise floor (the metric between two independent sets of real or exact "
                  f"samples): {floor}.", ""]
    for metric in p["metrics"] + ["seconds"]:
        title = ("wall time (s)" if metric == "seconds" else f"{metric} (higher is better)"
                 if metric in HIGHER_IS_BETTER else f"{metric} (closer to 0 is better)")
        lines += [f"## {title}", "", "| sampler | " + " | ".join(f"{b}" for b in budgets) + " |",
                  "|---|" + "---|" * len(budgets)]
        best: dict[tuple[int, bool], str] = {}
        if metric != "seconds":
            for b in budgets:
                for peer in (False, True):
                    rows = [r for r in fixed if r.budget == b and (r.family != "scoregen") == peer]
                    if rows:
                        best[b, peer] = min(rows, key=lambda r: _score(
                            _oriented(metric, r.metrics[metric]))).method
        for name in names:
            cells = []
            for b in budgets:
                r = by_key.get((name, b))
                if r is None:
                    cells.append("")
                    continue
                v = r.seconds if metric == "seconds" else r.metrics[metric]
                text = f"{v:.3g}" if metric == "seconds" else _cell(v)
                if best.get((b, r.family != "scoregen")) == name:
                    text = f"_{text}_" if r.family != "scoregen" else f"**{text}**"
                cells.append(text + (f" ({r.nfe})" if r.nfe != b else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    tol = [r for r in comp.records if r.budget is None]
    if tol:
        lines += ["## self-stepping samplers (tolerance -> counted NFE)", "",
                  "| sampler | tolerance | NFE | seconds | " + " | ".join(p["metrics"]) + " |",
                  "|---|---|---|---|" + "---|" * len(p["metrics"])]
        lines += [f"| {r.method} | {r.tolerance:g} | {r.nfe} | {r.seconds:.3g} | "
                  + " | ".join(_cell(r.metrics[m]) for m in p["metrics"]) + " |" for r in tol]
        lines.append("")
    if comp.skipped:
        lines += ["Skipped: " + "; ".join(comp.skipped) + ".", ""]
    return "\n".join(lines)


def write_csv(comp: Comparison, path: Path) -> None:
    metrics = comp.problem["metrics"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "family", "budget", "steps", "tolerance", "nfe", "seconds", *metrics])
        for r in comp.records:
            w.writerow([r.method, r.family, r.budget, r.steps, r.tolerance, r.nfe,
                        f"{r.seconds:.6g}", *(f"{r.metrics[m]:.6g}" for m in metrics)])


def plot_quality(comp: Comparison, path: Path) -> None:
    """One panel per metric: error size against counted NFE (log-log), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = comp.problem["metrics"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.2), squeeze=False)
    names = list(dict.fromkeys(r.method for r in comp.records))
    colors = plt.get_cmap("tab20")
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, name in enumerate(names):
            rows = sorted((r for r in comp.records if r.method == name), key=lambda r: r.nfe)
            peer = rows[0].family != "scoregen"
            ax.plot([r.nfe for r in rows], [abs(r.metrics[metric]) for r in rows],
                    ls="--" if peer else "-", marker="x" if peer else "o", ms=4,
                    color=colors(i % 20), label=name)
        if metric in comp.floor:
            ax.axhline(abs(comp.floor[metric]), color="0.5", ls=":", label="noise floor")
        ax.set(xscale="log", yscale="log", xlabel="NFE (counted)",
               ylabel=f"|{metric}|" if metric == "nll_gap" else metric, title=metric)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(comp.problem["name"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_samples(comp: Comparison, reference: Tensor, path: Path) -> None:
    """Reference and each method's samples at the shown budget: a scatter of the first two
    coordinates for vectors, an image grid for ``(C, H, W)`` events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scoregen.infra.plotting import image_grid

    panels = {"reference": reference.float().cpu(), **comp.samples}
    cols = min(5, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, x) in zip(axes.flat, panels.items(), strict=False):
        if x.ndim == 4:
            grid = image_grid(x[:64])
            ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
        else:
            pts = x.flatten(1)[:, :2].numpy()
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5)
            ax.set(xlim=(-1.6, 1.6), ylim=(-1.6, 1.6), aspect="equal")
            ax.axis("on")
            ax.tick_params(labelsize=6)
        ax.set_title(name, fontsize=8)
    fig.suptitle(f"samples at {comp.settings['show_nfe']} NFE", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(comp: Comparison, out: str | Path, reference: Tensor) -> dict[str, Path]:
    """Write the Markdown, CSV, JSON and the two PNGs into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "results.md", "csv": out / "results.csv", "json": out / "results.json",
             "plot": out / "quality_vs_nfe.png",
             "samples": out / f"samples_nfe{comp.settings['show_nfe']}.png"}
    paths["md"].write_text(markdown(comp))
    write_csv(comp, paths["csv"])
    raw = {"problem": comp.problem, "settings": comp.settings, "noise_floor": comp.floor,
           "skipped": comp.skipped, "records": [asdict(r) for r in comp.records]}
    paths["json"].write_text(json.dumps(raw, indent=1, allow_nan=True))
    plot_quality(comp, paths["plot"])
    plot_samples(comp, reference, paths["samples"])
    return paths
