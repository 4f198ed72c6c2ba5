"""The comparison's outputs: markdown tables, CSV, JSON and the two PNGs.

All five are written together, atomically, and only over files scoregen wrote
(:mod:`scoregen.infra.outputs`); :func:`check_outputs` is the pre-flight of the folder.

``results.md`` has one table per metric (sampler x budget; best scoregen sampler in **bold**,
best peer in _italics_), the wall times and the tolerance runs; :func:`guidance_summary`
tabulates guided comparisons over the scale. :func:`write_inverse_outputs` writes the inverse
problems' tables (method x budget per problem and metric, the particle curve, the equal-NFE
comparison with RePaint), their plots and, on images, grids of observation / samples / truth.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import Tensor

from scoregen.evaluation.compare.sweep import Comparison, InverseComparison

HIGHER_IS_BETTER = ("class_acc",)
GROUPS = ("scoregen", "peer", "student")  # each marks its best: **bold**, _italics_, **_both_**
MARKS = {"scoregen": "**{}**", "peer": "_{}_", "student": "**_{}_**"}


def _group(family: str) -> str:
    return family if family in ("scoregen", "student") else "peer"


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
             "the budget. **Bold**: best scoregen sampler at that budget; _italics_: best peer; "
             "**_bold italics_**: best distilled student (by the size of the error).", ""]
    if comp.floor:
        floor = ", ".join(f"{k} {_cell(v)}" for k, v in comp.floor.items())
        lines += ["Noise floor (the metric between two independent sets of real or exact "
                  f"samples): {floor}.", ""]
    for metric in p["metrics"] + ["seconds"]:
        title = ("wall time (s)" if metric == "seconds" else f"{metric} (higher is better)"
                 if metric in HIGHER_IS_BETTER else f"{metric} (closer to 0 is better)")
        lines += [f"## {title}", "", "| sampler | " + " | ".join(f"{b}" for b in budgets) + " |",
                  "|---|" + "---|" * len(budgets)]
        best: dict[tuple[int, str], str] = {}
        if metric != "seconds":
            for b in budgets:
                for group in GROUPS:
                    rows = [r for r in fixed if r.budget == b and _group(r.family) == group]
                    if rows:
                        best[b, group] = min(rows, key=lambda r: _score(
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
                if best.get((b, _group(r.family))) == name:
                    text = MARKS[_group(r.family)].format(text)
                cells.append(text + (f" ({r.nfe})" if r.nfe != b else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _endpoint_table(fixed, budgets) + _cost_table(fixed)
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


def _endpoint_table(fixed: list, budgets: list[int]) -> list[str]:
    """Endpoint error (deterministic methods, against the teacher's ODE map of the same
    ``x_T``): method x budget, best of each group marked."""
    rows = [r for r in fixed if "endpoint" in r.metrics]
    if not rows:
        return []
    lines = ["## endpoint error (deterministic methods; closer to 0 is better)", "",
             "Mean distance of each sample to the teacher's probability-flow ODE map of the "
             "same x_T (exact on the oracle, else dopri5 at rtol = atol = 1e-5).", "",
             "| method | " + " | ".join(map(str, budgets)) + " |", "|---|" + "---|" * len(budgets)]
    best = {}
    for b in budgets:
        for group in GROUPS:
            found = [r for r in rows if r.budget == b and _group(r.family) == group]
            if found:
                best[b, group] = min(found, key=lambda r: _score(r.metrics["endpoint"])).method
    for name in dict.fromkeys(r.method for r in rows):
        cells = []
        for b in budgets:
            r = next((r for r in rows if r.method == name and r.budget == b), None)
            if r is None:
                cells.append("")
                continue
            text = _cell(r.metrics["endpoint"])
            if best.get((b, _group(r.family))) == name:
                text = MARKS[_group(r.family)].format(text)
            cells.append(text + (f" ({r.nfe})" if r.nfe != b else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _cost_table(fixed: list) -> list[str]:
    """What each student cost at the NFE it ran at: teacher evaluations (summed over
    examples), optimizer steps, wall and CPU seconds of the stages its model came from; NFE
    with the same cost share a row."""
    rows = [r for r in fixed if r.cost is not None]
    if not rows:
        return []
    lines = ["## what the students cost", "",
             "Teacher NFE: network evaluations of the teacher (and of earlier students acting "
             "as teachers) summed over training examples and pairs; steps: optimizer steps; "
             "seconds: wall time of the training and generation; CPU s: CPU time of the "
             "process (on a shared machine the budget that does not depend on other work).", "",
             "| student | NFE | teacher NFE | steps | seconds | CPU s |",
             "|---|---|---|---|---|---|"]
    groups: dict[tuple, list[int]] = {}
    for r in rows:
        c = r.cost
        key = (r.method, c["teacher_rows"], c["steps"], c["seconds"], c.get("cpu_seconds", 0.0))
        groups.setdefault(key, [])
        if r.nfe not in groups[key]:
            groups[key].append(r.nfe)
    for (method, teacher, steps, seconds, cpu), nfes in groups.items():
        lines.append(f"| {method} | {', '.join(map(str, sorted(nfes)))} | {teacher:.3g} | "
                     f"{steps:.0f} | {seconds:.0f} | {cpu:.0f} |")
    return [*lines, ""]


def write_csv(comp: Comparison, path: Path) -> None:
    """The records as CSV at ``path`` (a temporary file of :func:`write_outputs`)."""
    metrics = comp.problem["metrics"]
    costs = ("teacher_rows", "steps", "seconds", "cpu_seconds")
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "family", "budget", "steps", "tolerance", "nfe", "seconds", *metrics,
                    "endpoint", *(f"cost_{k}" for k in costs)])
        for r in comp.records:
            w.writerow([r.method, r.family, r.budget, r.steps, r.tolerance, r.nfe,
                        f"{r.seconds:.6g}", *(f"{r.metrics[m]:.6g}" for m in metrics),
                        f"{r.metrics['endpoint']:.6g}" if "endpoint" in r.metrics else "",
                        *(f"{r.cost.get(k, 0.0):.6g}" if r.cost else "" for k in costs)])


def plot_quality(comp: Comparison, path: Path) -> None:
    """One panel per metric: error size against counted NFE (log-log), one line per method."""
    import matplotlib.pyplot as plt

    from scoregen.infra.plotting import render

    metrics = list(comp.problem["metrics"])
    if any("endpoint" in r.metrics for r in comp.records) and "endpoint" not in metrics:
        metrics.append("endpoint")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.2), squeeze=False)
    names = list(dict.fromkeys(r.method for r in comp.records))
    colors = plt.get_cmap("tab20")
    style = {"scoregen": ("-", "o", 4), "peer": ("--", "x", 4), "student": ("-.", "*", 11)}
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, name in enumerate(names):
            rows = sorted((r for r in comp.records if r.method == name and metric in r.metrics),
                          key=lambda r: r.nfe)
            if not rows:
                continue
            ls, marker, ms = style[_group(rows[0].family)]
            ax.plot([r.nfe for r in rows], [abs(r.metrics[metric]) for r in rows],
                    ls=ls, marker=marker, ms=ms, color=colors(i % 20), label=name)
        if metric in comp.floor:
            ax.axhline(abs(comp.floor[metric]), color="0.5", ls=":", label="noise floor")
        ax.set(xscale="log", yscale="log", xlabel="NFE (counted)",
               ylabel=f"|{metric}|" if metric == "nll_gap" else metric, title=metric)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()  # every method is in the first
    axes[0][-1].legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(comp.problem["name"], fontsize=10)
    fig.tight_layout()
    render(fig, path, dpi=110)


def plot_samples(comp: Comparison, reference: Tensor, path: Path) -> None:
    """Reference and each method's samples at the shown budget: a scatter of the first two
    coordinates for vectors, an image grid for ``(C, H, W)`` events."""
    import matplotlib.pyplot as plt

    from scoregen.infra.plotting import image_grid, render

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
    render(fig, path, dpi=100)


def output_paths(out: str | Path, show_nfe: int) -> dict[str, Path]:
    """The files :func:`write_outputs` writes into the folder ``out``."""
    out = Path(out)
    return {"md": out / "results.md", "csv": out / "results.csv", "json": out / "results.json",
            "plot": out / "quality_vs_nfe.png", "samples": out / f"samples_nfe{show_nfe}.png"}


def check_outputs(out: str | Path, show_nfe: int) -> None:
    """The pre-flight of :func:`write_outputs` (:mod:`scoregen.infra.outputs`): ``out`` is a
    folder that can be written, and no file it would replace is someone else's."""
    from scoregen.infra import outputs

    outputs.check_folder(out, what="--out")
    for path in output_paths(out, show_nfe).values():
        outputs.check_target(path, what="--out")


def write_outputs(comp: Comparison, out: str | Path, reference: Tensor) -> dict[str, Path]:
    """Write the Markdown, CSV, JSON and the two PNGs into ``out`` together, atomically and
    only over files scoregen wrote (:func:`scoregen.infra.outputs.replacing`); returns their
    paths."""
    from scoregen.infra import outputs

    paths = output_paths(out, comp.settings["show_nfe"])
    raw = {"problem": comp.problem, "settings": comp.settings, "noise_floor": comp.floor,
           "skipped": comp.skipped, "records": [asdict(r) for r in comp.records]}
    with outputs.replacing(*paths.values(), what="--out") as tmps:
        tmp = dict(zip(paths, tmps, strict=True))
        tmp["md"].write_text(markdown(comp))
        write_csv(comp, tmp["csv"])
        tmp["json"].write_text(json.dumps(raw, indent=1, allow_nan=True))
        plot_quality(comp, tmp["plot"])
        plot_samples(comp, reference, tmp["samples"])
    return paths


# -- inverse problems ---------------------------------------------------------------------------
INVERSE_TITLES = {
    "nll_gap": "NLL gap against the exact posterior (nats, signed; closer to 0 is better)",
    "swd": "sliced W2 to exact posterior samples (lower is better)",
    "weight_tv": "posterior-weight error (total variation; lower is better)",
    "residual": "measurement residual RMS(A x - y) (sigma_y = 0: 0 is exact)",
    "label_agreement": "label agreement: completions the digits classifier gives the true "
                       "label (higher is better)",
}


def inverse_markdown(comp: InverseComparison) -> str:
    """Per problem: one table per metric (method x budget; the counted NFE in parentheses
    where it differs), the particle curve, and the equal-NFE comparison with RePaint."""
    st = comp.settings
    lines = ["# Inverse problems: posterior samples against the exact posterior", "",
             f"{st['n']} samples per measured point, seed {st['seed']}, machine: "
             f"{st['machine']}. NFE counts every network evaluation (every particle, every "
             "RePaint pass). Metrics are means over the points of each problem.", ""]
    budgets = st["budgets"]
    for name, info in comp.problems.items():
        recs = [r for r in comp.records if r.problem == name and r.budget is not None]
        floor = info["floor"]
        metrics_ = list(floor) if not recs else list(recs[0].metrics)
        lines += [f"## {name}", ""]
        shown = ", ".join(f"{k} {_cell(v)}" for k, v in floor.items())
        what = ("Exact posterior samples (the noise floor)" if "nll_gap" in floor else
                "The true images (the classifier's ceiling; exact posterior samples are not "
                "known here)")
        lines += [f"{what}: {shown}.", ""]
        methods = list(dict.fromkeys(r.method for r in recs))
        by_key = {(r.method, r.budget): r for r in recs}
        for metric in metrics_:
            lines += [f"### {INVERSE_TITLES.get(metric, metric)}", "",
                      "| method | " + " | ".join(str(b) for b in budgets) + " |",
                      "|---|" + "---|" * len(budgets)]
            for m in methods:
                cells = []
                for b in budgets:
                    r = by_key.get((m, b))
                    cells.append("" if r is None else _cell(r.metrics[metric])
                                 + (f" ({r.nfe})" if r.nfe != b else ""))
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
            lines.append("")
        curve = sorted((r for r in comp.records if r.problem == name and r.particles),
                       key=lambda r: r.particles)
        if curve:
            lines += [f"### particle method over K ({st['curve_sampler']}, {st['curve_steps']} "
                      "steps)", "", "| K | NFE | " + " | ".join(metrics_) + " | seconds |",
                      "|---|---|" + "---|" * len(metrics_) + "---|"]
            lines += [f"| {r.particles} | {r.nfe} | " + " | ".join(
                _cell(r.metrics[m]) for m in metrics_) + f" | {r.seconds:.3g} |" for r in curve]
            lines.append("")
        lines += _against_repaint(recs, budgets)
    if comp.skipped:
        lines += ["Skipped: " + "; ".join(comp.skipped) + ".", ""]
    return "\n".join(lines)


def _against_repaint(recs: list, budgets: list[int]) -> list[str]:
    """At each budget: RePaint's NLL gap, the best method's and their ratio."""
    if not recs or "nll_gap" not in recs[0].metrics:
        return []
    rows = []
    for b in budgets:
        at = [r for r in recs if r.budget == b]
        rep = [r for r in at if r.method.startswith("repaint")]
        if not rep or not at:
            continue
        best = min(at, key=lambda r: _score(r.metrics["nll_gap"]))
        g_rep, g_best = rep[0].metrics["nll_gap"], best.metrics["nll_gap"]
        ratio = abs(g_rep) / max(abs(g_best), 1e-12)
        rows.append(f"| {b} | {_cell(g_rep)} | {best.method} | {_cell(g_best)} | {ratio:.3g} |")
    if not rows:
        return []
    return ["### equal NFE: the best method against RePaint (NLL gap)", "",
            "| NFE | RePaint | best method | its NLL gap | RePaint / best |",
            "|---|---|---|---|---|", *rows, ""]


def plot_inverse(comp: InverseComparison, path: Path) -> None:
    """|NLL gap| (or label agreement) against counted NFE, one panel per problem, and the
    particle curve over K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(comp.problems)
    metric = "nll_gap" if any("nll_gap" in r.metrics for r in comp.records) else (
        "label_agreement")
    has_curve = any(r.particles for r in comp.records)
    cols = len(names) + int(has_curve)
    fig, axes = plt.subplots(1, cols, figsize=(4.2 * cols, 3.8), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, name in zip(axes[0], names, strict=False):
        recs = [r for r in comp.records if r.problem == name and r.budget is not None]
        for i, m in enumerate(dict.fromkeys(r.method for r in recs)):
            rows = sorted((r for r in recs if r.method == m), key=lambda r: r.nfe)
            ax.plot([r.nfe for r in rows], [abs(r.metrics[metric]) for r in rows], "o-", ms=3,
                    color=colors(i % 10), label=m)
        floor = comp.problems[name]["floor"]
        if metric == "nll_gap":
            ax.axhline(max(abs(floor["nll_gap"]), floor["nll_se"]), color="0.5", ls=":",
                       label="exact samples")
            ax.set_yscale("log")
        ax.set(xscale="log", xlabel="NFE (counted)", title=name)
        ax.set_ylabel("|NLL gap| (nats)" if metric == "nll_gap" else metric)
        ax.tick_params(labelsize=7)
        ax.title.set_fontsize(8)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][len(names) - 1].legend(fontsize=6)
    if has_curve:
        ax = axes[0][-1]
        for i, name in enumerate(names):
            rows = sorted((r for r in comp.records if r.problem == name and r.particles),
                          key=lambda r: r.particles)
            ax.plot([r.particles for r in rows], [abs(r.metrics[metric]) for r in rows], "o-",
                    ms=3, color=colors(i % 10), label=name)
        ax.set(xscale="log", xlabel="particles K",
               title=f"particle method, {comp.settings['curve_steps']} steps")
        if metric == "nll_gap":
            ax.set_yscale("log")
            ax.set_ylabel("|NLL gap| (nats)")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_inverse_grid(comp: InverseComparison, name: str, observed: Tensor, truth: Tensor,
                      path: Path, columns: int = 12) -> None:
    """Rows: the observation (``A^+ y``), each method's sample of the first ``columns``
    points (at the shown budget), the truth; images in ``[-1, 1]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scoregen.infra.plotting import image_grid

    n = comp.settings["n"]
    rows = {"observation": observed[:columns], **{
        m: x[::n][:columns] for (p, m), x in comp.samples.items() if p == name},
        "truth": truth[:columns]}
    fig, axes = plt.subplots(len(rows), 1, figsize=(columns * 0.55 + 1.5, 0.7 * len(rows) + 0.6),
                             squeeze=False)
    for ax, (label, x) in zip(axes[:, 0], rows.items(), strict=True):
        grid = image_grid(x.float().clamp(-1, 1), ncol=columns)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label.replace(" ", "\n"), rotation=0, ha="right", va="center",
                      fontsize=6)
    fig.suptitle(f"{name}: {comp.settings['show_nfe']} NFE", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def inverse_output_paths(out: str | Path, digits: bool, grids: Sequence[str] = ()
                         ) -> dict[str, Path]:
    """The files ``compare --inverse`` writes into ``out``: ``results.md``, ``.csv``, ``.json``,
    ``nll_gap_vs_nfe.png`` (``label_agreement_vs_nfe.png`` on digits) and one
    ``grid_<key>.png`` per image problem (``grids``: the keys)."""
    out = Path(out)
    paths = {"md": out / "results.md", "csv": out / "results.csv", "json": out / "results.json",
             "plot": out / ("label_agreement_vs_nfe.png" if digits else "nll_gap_vs_nfe.png")}
    paths.update({f"grid {key}": out / f"grid_{key}.png" for key in grids})
    return paths


def grid_key(problem: dict[str, Any]) -> str:
    """The file key of an image problem's grid: its operator and noise level."""
    return f"{problem['operator'].replace(':', '_')}_sigma{problem['sigma_y']:g}"


def write_inverse_outputs(comp: InverseComparison, out: str | Path,
                          images: dict[str, tuple[Tensor, Tensor]] | None = None
                          ) -> dict[str, Path]:
    """Write :func:`inverse_output_paths` together, atomically and only over files scoregen
    wrote (:func:`scoregen.infra.outputs.replacing`); for image problems (``images``: name ->
    (observation, truth)) one grid each."""
    from scoregen.infra import outputs

    images = images or {}
    digits = not any("nll_gap" in r.metrics for r in comp.records)
    keys = {name: grid_key(comp.problems[name]) for name in images}
    paths = inverse_output_paths(out, digits, list(keys.values()))
    metrics_ = sorted({k for r in comp.records for k in r.metrics})
    raw = {"settings": comp.settings, "problems": comp.problems, "skipped": comp.skipped,
           "records": [asdict(r) for r in comp.records]}
    with outputs.replacing(*paths.values(), what="--out") as tmps:
        tmp = dict(zip(paths, tmps, strict=True))
        tmp["md"].write_text(inverse_markdown(comp))
        with open(tmp["csv"], "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["problem", "method", "budget", "particles", "steps", "nfe", "seconds",
                        *metrics_])
            for r in comp.records:
                w.writerow([r.problem, r.method, r.budget, r.particles, r.steps, r.nfe,
                            f"{r.seconds:.6g}", *(f"{r.metrics.get(m, math.nan):.6g}"
                                                  for m in metrics_)])
        tmp["json"].write_text(json.dumps(raw, indent=1, allow_nan=True))
        plot_inverse(comp, tmp["plot"])
        for name, (observed, truth) in images.items():
            plot_inverse_grid(comp, name, observed, truth, tmp[f"grid {keys[name]}"])
    return paths
