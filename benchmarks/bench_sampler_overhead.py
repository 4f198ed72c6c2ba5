"""Per-step overhead of every registered sampler (and of peers where installed).

The model is :class:`ZeroEps` (free), so the time is the sampler's own work: grid,
prediction conversions, noise, update arithmetic and NFE counting. Reported per model call
(``extra_info["us_per_nfe"]``) at batch 1024 for 2-D vectors and 64 for 1x28x28 images,
all on the discrete DDPM process so the diffusers schedulers run on the same problem.

Run as a script, it measures everything *in one process, interleaved round by round* (so a
loaded, shared machine slows every method alike) and reports ratios: each scoregen sampler's
overhead per NFE against the fastest peer with the same update rule (``COUNTERPARTS``), and
against one forward pass of the default MLP (``mlp``, width 128, depth 3) at the same batch::

    python benchmarks/bench_sampler_overhead.py                 # vector2d, batch 1024
    python benchmarks/bench_sampler_overhead.py --rounds 15 --out runs/overhead.md

``--wrappers`` adds models seen through a wrapper, through the public API only
(``scoregen.sample``, ``scoregen.retarget``): classifier-free guidance at ``w = 2`` on a free
class-conditional model (one network call on a doubled batch per NFE), and a free VP model
re-targeted to the DDPM process, each under a few samplers. ``--cpu-time`` times with the
process's CPU time instead of the wall clock, which other processes on a shared machine
disturb less. The script uses only names that also existed before the ``sampling`` package,
so an earlier checkout can be measured with it in the same session for a before/after
comparison::

    git worktree add /tmp/before 04a076c
    python benchmarks/bench_sampler_overhead.py --wrappers --cpu-time
    (cd benchmarks && PYTHONPATH=/tmp/before python bench_sampler_overhead.py --wrappers --cpu-time)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest
import torch
from conftest import WORKLOADS, ZeroEps, ZeroEpsConditional

import scoregen
from scoregen import samplers, sde
from scoregen.evaluation import compare
from scoregen.evaluation.compare import Setting
from scoregen.infra import outputs

STEPS = 20
TOLERANCE = 1e-3
CLOCK = time.perf_counter  # --cpu-time: time.process_time (this process's CPU time)

# scoregen sampler -> peers that take the same step (the fastest one is the bar)
COUNTERPARTS = {
    "ddim": ("diffusers/ddim", "k-diffusion/euler"),
    "ode_euler": ("diffusers/euler", "k-diffusion/euler"),
    "ancestral": ("diffusers/ddpm", "diffusers/euler_ancestral", "k-diffusion/euler_ancestral"),
    "euler_maruyama": ("diffusers/ddpm", "diffusers/euler_ancestral",
                       "k-diffusion/euler_ancestral"),
    "heun": ("diffusers/heun", "k-diffusion/heun"),
    "dpm_solver++": ("diffusers/dpmsolver_multistep", "k-diffusion/dpmpp_2m"),
    "dpm_solver++_single": ("k-diffusion/dpm_2",),
    "unipc": ("diffusers/unipc_multistep",),
    "dpm_solver++_adaptive": ("k-diffusion/dpm_adaptive",),
}


def _problem(shape: tuple[int, ...]) -> compare.Problem:
    process = sde.get("ddpm")
    empty = torch.zeros(0, *shape)
    return compare.Problem("overhead", ZeroEps(process), process, shape, empty,
                           dtype=torch.float32)


def _sampler_names() -> list[str]:
    """The samplers that run on the DDPM process (every sampler, in a checkout that has no
    samplers of other processes)."""
    runs = getattr(samplers, "applicable", None)
    return runs(sde.get("ddpm")) if runs is not None else samplers.list()


def _methods() -> list[compare.Method]:
    from scoregen.evaluation import peers
    found = compare.scoregen_methods(_sampler_names())
    extra, _ = peers.peer_methods(None, sde.get("ddpm"))
    return found + extra


METHODS = {m.name: m for m in _methods()}


def _setting(method: compare.Method) -> Setting:
    return Setting(tolerance=TOLERANCE) if method.adaptive else Setting(steps=STEPS)


@pytest.mark.parametrize("workload", WORKLOADS, ids=[w[0] for w in WORKLOADS])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_sampler_overhead(benchmark, name, workload):
    label, shape, batch = workload
    method = METHODS[name]
    problem = _problem(shape)
    x_T = compare.initial_noise(problem, batch, 0)
    setting = _setting(method)
    nfe = method.draw(problem.model, problem.sde, x_T, setting, 0)[1]
    benchmark.group = f"sampler overhead, {label}, batch {batch}"
    benchmark.pedantic(method.draw, args=(problem.model, problem.sde, x_T, setting, 0),
                       rounds=7, iterations=1, warmup_rounds=2)
    benchmark.extra_info.update(family=method.family, nfe=nfe, batch=batch,
                                us_per_nfe=1e6 * benchmark.stats.stats.min / nfe)


def measure(workload: tuple[str, tuple[int, ...], int], rounds: int) -> tuple[dict, float]:
    """``({method: (us_per_nfe, nfe)}, us per MLP forward)``: minimum over interleaved
    rounds of every method and of the default MLP's forward pass at the same batch."""
    from scoregen.models import build_network

    _, shape, batch = workload
    problem = _problem(shape)
    x_T = compare.initial_noise(problem, batch, 0)
    net = build_network("mlp", shape).eval()
    t = torch.full((batch,), 0.5)
    best: dict[str, float] = {}
    nfes: dict[str, int] = {}
    mlp = float("inf")
    with torch.no_grad():
        for _ in range(rounds):
            start = CLOCK()
            for _ in range(STEPS):
                net(x_T, t)
            mlp = min(mlp, (CLOCK() - start) / STEPS)
            for name, method in METHODS.items():
                start = CLOCK()
                _, nfe = method.draw(problem.model, problem.sde, x_T, _setting(method), 0)
                per = (CLOCK() - start) / nfe
                best[name] = min(best.get(name, float("inf")), per)
                nfes[name] = nfe
    return {k: (1e6 * v, nfes[k]) for k, v in best.items()}, 1e6 * mlp


WRAPPED_SAMPLERS = ("ddim", "dpm_solver++", "unipc", "heun")


def measure_wrappers(workload: tuple[str, tuple[int, ...], int], rounds: int) -> dict:
    """``{row: us_per_nfe}``: guided and re-targeted free models (module docstring),
    minimum over interleaved rounds."""
    _, shape, batch = workload
    ddpm = sde.get("ddpm")
    guided_model = ZeroEpsConditional(ddpm)
    labels = torch.arange(batch) % ZeroEpsConditional.num_classes
    retargeted = scoregen.retarget(ZeroEps(sde.get("vp")), ddpm)
    runs = {}
    for name in WRAPPED_SAMPLERS:
        runs[f"{name}, guided w=2"] = (guided_model, {"cond": labels, "guidance": 2.0})
        runs[f"{name}, re-targeted vp->ddpm"] = (retargeted, {})
    best: dict[str, float] = {}
    for _ in range(rounds):
        for row, (model, kw) in runs.items():
            name = row.split(",")[0]
            start = CLOCK()
            res = scoregen.sample(model, ddpm, (batch, *shape), name, STEPS, **kw)
            per = (CLOCK() - start) / res.nfe
            best[row] = min(best.get(row, float("inf")), per)
    return {k: 1e6 * v for k, v in best.items()}


def wrapper_table(results: dict, mlp_us: float) -> str:
    lines = ["| wrapped model, sampler | us/NFE | % of MLP forward |", "|---|---|---|"]
    lines += [f"| {row} | {us:.0f} | {100 * us / mlp_us:.1f}% |" for row, us in results.items()]
    return "\n".join(lines) + "\n"


def table(results: dict, mlp_us: float, label: str, batch: int) -> str:
    """Markdown: us/NFE, the fastest counterpart peer and the two ratios."""
    lines = [f"Workload {label}, batch {batch}; default MLP forward {mlp_us:.0f} us.", "",
             "| sampler | us/NFE | fastest peer counterpart (us/NFE) | ratio to peer | "
             "% of MLP forward |", "|---|---|---|---|---|"]
    for name in _sampler_names():
        us, _ = results[name]
        peers = [(results[p][0], p) for p in COUNTERPARTS.get(name, ()) if p in results]
        if peers:
            peer_us, peer = min(peers)
            cells = f"{peer} ({peer_us:.0f}) | {us / peer_us:.2f}"
        else:
            cells = "- | -"
        lines.append(f"| {name} | {us:.0f} | {cells} | {100 * us / mlp_us:.1f}% |")
    others = sorted(n for n in results if "/" in n)
    lines += ["", "| peer | us/NFE |", "|---|---|"]
    lines += [f"| {n} | {results[n][0]:.0f} |" for n in others]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--workloads", nargs="+", default=["vector2d"],
                        choices=[w[0] for w in WORKLOADS])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with the process's CPU time instead of the wall clock")
    parser.add_argument("--wrappers", action="store_true",
                        help="also time guided and re-targeted models (module docstring)")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    torch.set_num_threads(args.threads)
    out = []
    for workload in WORKLOADS:
        if workload[0] in args.workloads:
            results, mlp_us = measure(workload, args.rounds)
            out.append(table(results, mlp_us, workload[0], workload[2]))
            print(out[-1], flush=True)
            if args.wrappers:
                out.append(wrapper_table(measure_wrappers(workload, args.rounds), mlp_us))
                print(out[-1], flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        outputs.write_text(args.out, "\n".join(out))


if __name__ == "__main__":
    main()
