"""List registered SDEs, samplers, objectives, distillation methods, networks, datasets,
mixture presets, loss weightings, measurement operators and inverse-problem methods."""

from __future__ import annotations

import argparse

SECTIONS = ("sdes", "samplers", "objectives", "methods", "networks", "datasets", "presets",
            "weightings", "operators", "inverse")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="?", choices=SECTIONS, help="show only this registry")


def _first_line(obj: object) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def _rows(what: str) -> list[tuple[str, str]]:
    if what == "sdes":
        from scoregen import sde as sde_lib
        from scoregen.samplers import SAMPLERS, applicable

        rows = []
        for n in sde_lib.list():
            process = sde_lib.get(n)
            runs = applicable(process)
            refused = [s for s in SAMPLERS.list() if s not in runs]
            which = ("every sampler" if not refused else
                     f"every sampler but {', '.join(refused)}" if len(refused) < len(runs) else
                     f"samplers: {', '.join(runs) or '(none)'}")
            caps = ", ".join(sorted(process.capabilities)) or "generic"
            rows.append((n, f"{_first_line(type(process))} [{caps}; {which}]"))
        return rows
    if what == "samplers":
        from scoregen.samplers import SAMPLERS

        rows = []
        for n in SAMPLERS.list():
            m = SAMPLERS.meta(n)
            kind = "stochastic" if m.get("stochastic") else "deterministic"
            nfe = m.get("nfe_per_step")
            needs = ", ".join(sorted(m["requires"])) or "any SDE"
            model = "" if m.get("model", "denoiser") == "denoiser" else f"; a {m['model']} model"
            rows.append((n, f"order {m.get('order')}, {kind}, "
                            f"{'adaptive' if nfe is None else f'{nfe} NFE/step'}; needs "
                            f"{needs}{model}"))
        return rows
    if what == "objectives":
        from scoregen.training.objectives import OBJECTIVES, objective_options

        return [(n, f"{_first_line(OBJECTIVES.get(n))} [options: "
                    f"{', '.join(f'{k}={v!r}' for k, v in objective_options(n).items()) or '-'}]")
                for n in OBJECTIVES.list()]
    if what == "methods":
        from scoregen.training.distill import METHODS, method_options

        return [(n, f"{_first_line(METHODS.get(n))} [options: "
                    f"{', '.join(f'{k}={v!r}' for k, v in method_options(n).items()) or '-'}]")
                for n in METHODS.list()]
    if what == "networks":
        from scoregen.models import NETWORKS

        return [(n, f"[{NETWORKS.meta(n).get('kind', '')}] {_first_line(NETWORKS.get(n))}")
                for n in NETWORKS.list()]
    if what == "datasets":
        from scoregen.data import DATASETS, describe

        return [(n, f"[{DATASETS.meta(n)['kind']}] {describe(n)}") for n in DATASETS.list()]
    if what == "presets":
        from scoregen.models.analytic import PRESETS

        return [(n, _first_line(PRESETS.get(n))) for n in PRESETS.list()]
    if what == "operators":
        from scoregen.sampling.inverse import OPERATORS

        return [(f"{n}:{OPERATORS.meta(n)['arg']}", _first_line(OPERATORS.get(n)))
                for n in OPERATORS.list()]
    if what == "inverse":
        from scoregen.sampling.inverse import METHODS

        rows = []
        for n in METHODS.list():
            m = METHODS.get(n)
            needs = [s for s, on in (("SVD", m.needs_svd), ("gradient", m.gradient)) if on]
            fits = "every sampler" if m.samplers is None else ", ".join(m.samplers)
            needs_text = f"; needs {', '.join(needs)}" if needs else ""
            rows.append((n, f"{m.summary} [{fits}{needs_text}]"))
        return rows
    from scoregen.training.objectives.dsm import WEIGHTINGS

    return [(n, _first_line(WEIGHTINGS.get(n))) for n in WEIGHTINGS.list()]


def run(args: argparse.Namespace) -> int:
    for what in [args.what] if args.what else SECTIONS:
        rows = _rows(what)
        print(f"{what}:")
        width = max((len(n) for n, _ in rows), default=0)
        for name, text in rows:
            print(f"  {name:<{width}}  {text}".rstrip())
    return 0
