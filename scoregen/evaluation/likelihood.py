"""Log-likelihood of data through the probability-flow ODE.

The probability-flow ODE ``dx/dt = v(x, t) = f(t) x - g(t)^2 score(x, t) / 2`` (Song et al.
2021, eq. 13) transports the marginal ``p_t`` into ``p_T``; along a trajectory the
instantaneous change of variables (Chen et al. 2018, "Neural ODEs", thm. 1; Song et al.
2021, eq. 39 / app. D.2) gives::

    d/dt [x_t, log p_t(x_t)] = [v(x_t, t), -div_x v(x_t, t)],

so integrating from ``t_min`` to ``T``::

    log p_{t_min}(x) = log p_T(x_T) + int_{t_min}^T div_x v(x_t, t) dt.

``log p_T`` is replaced by the SDE's prior ``N(0, prior_std^2 I)`` (``sde.prior_logp``);
the error this makes is ``log prior(x_T) - log p_T(x_T)``, tiny when ``alpha(T) * data``
is small against ``sigma(T)``.

Conventions (also in ``docs/metrics.md``):

- **What is measured.** The ODE starts at ``t_min`` (default ``sde.t_min``), so the result
  is the log-density of ``x`` under ``p_{t_min}``, the data distribution convolved with
  ``N(0, sigma(t_min)^2)`` and scaled by ``alpha(t_min)`` — the slightly noised data, as in
  Song et al. 2021 (they start at ``eps = 1e-5``).
- **Units.** ``logp`` is in nats per sample (summed over all ``D`` dimensions).
- **Divergence.** ``"exact"``: ``D`` reverse-mode passes per function evaluation;
  ``"hutchinson"``: ``div v = E_z[z^T (dv/dx) z]`` with probes ``z`` fixed for the whole
  trajectory (Grathwohl et al. 2018, "FFJORD", eq. 6), unbiased for the integral;
  ``"auto"``: exact when ``D <= 16``.
- **Bits per dimension.** With ``dequantize=L`` the data are ``L`` grey levels on
  ``[-1, 1]``; uniform noise of one bin width ``Delta = 2/(L-1)`` is added and
  ``bpd = -(logp + D log Delta) / (D ln 2)``, an upper bound on the discrete code length in
  expectation (the change of variables and the bound are written out in
  :mod:`scoregen.evaluation.dequantize`). Without ``dequantize`` the data are treated as
  continuous and ``bpd`` is ``None``.
- **Augmented processes.** A process whose state is larger than the data (critically-damped
  Langevin's ``(x, v)``) gives the density of the state. Data ``x`` are lifted to a state with
  the auxiliary part drawn (:meth:`scoregen.sde.base.SDE.lift`, ``v_0 ~ q``), and ``logp`` is
  ``log p(x, v_0) - log q(v_0)``, whose mean is a lower bound on ``log p(x)`` (Dockhorn et al.
  2022, eq. 16); ``state=True`` takes ``x`` as a state and gives its density.
- **Randomness.** With ``seeds`` (one per example, e.g. ``seed + global index``) the
  dequantization noise (draw 0) and the probes (draws ``1 .. n_probes``) come from the
  counter-based :class:`scoregen.sampling.noise.NoiseSource`, so an example's result does not depend
  on the batch it is in (or the process that ran it); otherwise one ``torch.Generator``
  seeded with ``seed`` draws them for the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from scoregen.evaluation.dequantize import Quantization, uniform_from_normal
from scoregen.models.prediction import Model
from scoregen.sampling.denoiser import Denoiser
from scoregen.sampling.noise import NoiseSource
from scoregen.sde.base import FINITE_TERMINAL_SNR, SDE

DIVERGENCES = ("auto", "exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
EXACT_MAX_DIM = 16
LIFT_DRAW = 998  # the draw of an example's noise stream that lifts data to a state
ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


class LikelihoodResult(NamedTuple):
    """Result of :func:`log_likelihood`.

    Attributes:
        logp: ``(B,)`` log-density in nats, ``prior_logp + delta_logp`` (of the dequantized
            point when ``dequantize`` is given).
        bpd: ``(B,)`` bits per dimension of the discrete data, or ``None`` without
            ``dequantize``.
        nfe: network evaluations (one per ODE function call on the whole batch; the
            divergence's backward passes are extra).
        prior_logp: ``(B,)`` ``log N(x_T; 0, prior_std^2 I)``.
        delta_logp: ``(B,)`` ``int_{t_min}^T div v dt``.
        x_T: ``(B, *D)`` end point of the ODE.
    """

    logp: Tensor
    bpd: Tensor | None
    nfe: int
    prior_logp: Tensor
    delta_logp: Tensor
    x_T: Tensor  # noqa: N815 (the paper symbol)


def log_likelihood(
    model: Model,
    sde: SDE,
    x: Tensor,
    *,
    divergence: str = "auto",
    probes: str = "rademacher",
    n_probes: int = 1,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float | None = None,
    seed: int = 0,
    dequantize: int | None = None,
    prior_logp: Callable[[Tensor], Tensor] | None = None,
    options: dict[str, Any] | None = None,
    seeds: Tensor | None = None,
    state: bool = False,
) -> LikelihoodResult:
    """``log p_{t_min}(x)`` in nats by the probability-flow ODE (see the module docstring).

    Args:
        model: any :class:`scoregen.models.prediction.Model` built for ``sde``.
        sde: the process; ``x`` is integrated from ``t_min`` to ``sde.T``.
        x: ``(B, *D)`` data (vectors or images). Computation runs in ``x``'s dtype; use
            float64 for tight tolerances.
        divergence: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact for ``D <= 16``).
        probes: Hutchinson probe distribution, ``"rademacher"`` or ``"gaussian"``.
        n_probes: probes per sample averaged at every evaluation (Hutchinson only).
        method, rtol, atol: passed to ``torchdiffeq.odeint`` (adaptive ``dopri5`` default).
        t_min: start time (default ``sde.t_min``).
        seed: seeds the probes and the dequantization noise (without ``seeds``).
        dequantize: number of grey levels ``L`` of discrete data in ``[-1, 1]``; adds
            uniform noise of one bin width and reports bits/dim.
        seeds: ``(B,)`` per-example seeds for the probes and the dequantization noise
            (batch-independent; see the module docstring).
        prior_logp: ``x_T -> (B,)`` log-density at ``T`` (default ``sde.prior_logp``); the
            exact ``p_T`` of an analytic model removes the prior mismatch.
        options: extra ``torchdiffeq.odeint`` options (e.g. ``{"step_size": 0.01}`` for the
            fixed-step ``"rk4"``).
        seeds: ``(B,)`` per-sample seeds: sample ``k``'s probes and dequantization noise
            come from its own :class:`~scoregen.sampling.noise.NoiseSource` stream (so they do not
            depend on the batch; :func:`log_likelihood_sharded`) instead of ``seed``.
        state: ``x`` is a state of ``sde`` (of an augmented process: the joint ``(x, v)``), not
            data to lift (module docstring).
    """
    from torchdiffeq import odeint

    kind = _check_args(x, divergence, probes, n_probes)
    t0 = sde.t_min if t_min is None else float(t_min)
    if not 0 <= t0 < sde.T:
        raise ValueError(f"t_min must lie in [0, T={sde.T}), got {t0}")
    if FINITE_TERMINAL_SNR not in sde.capabilities:
        raise ValueError(f"the probability-flow ODE of {sde!r} has an infinite drift at T "
                         "(zero terminal SNR), so its likelihood is not integrated here; "
                         "evaluate sample metrics instead")
    D = x[0].numel()
    shape = tuple(x.shape[1:])
    event = shape if state else sde.state_shape(shape)
    if kind == "auto":
        kind = "exact" if math.prod(event) <= EXACT_MAX_DIM else "hutchinson"
    gen = torch.Generator(device=x.device).manual_seed(seed)
    noise = None
    if seeds is not None:
        seeds = torch.as_tensor(seeds, dtype=torch.int64)
        if seeds.shape != (x.shape[0],):
            raise ValueError(f"seeds must have shape ({x.shape[0]},), got {tuple(seeds.shape)}")
        noise = NoiseSource(seeds.to(x.device), tuple(x.shape[1:]), x.dtype, x.device)
    quant = None if dequantize is None else Quantization(dequantize)
    with torch.inference_mode(False), torch.no_grad():
        x = x.detach().clone()
        if quant is not None:
            u = (uniform_from_normal(noise.draw(0)) if noise is not None else
                 torch.rand(x.shape, generator=gen, dtype=x.dtype, device=x.device) - 0.5)
            x = quant.dequantize(x, u)
        log_q = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if event != shape:
            stream = None if noise is None else NoiseSource(seeds.to(x.device), event, x.dtype,
                                                            x.device)
            lift = (torch.randn((x.shape[0], *event), generator=gen, dtype=x.dtype,
                                device=x.device) if stream is None else stream.draw(LIFT_DRAW))
            x, log_q = sde.lift(x, lift)
            noise = stream
        z = None
        if kind == "hutchinson":
            z = (_draw_probes(probes, (n_probes, *x.shape), gen, x) if noise is None else
                 _probes_from_normals(probes, [noise.draw(1 + p) for p in range(n_probes)]))
        denoiser = Denoiser(model, sde)

        ts = torch.tensor([t0, sde.T], dtype=x.dtype, device=x.device)

        def rhs(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            # Adaptive solvers probe t0 + h0 when choosing the first step, which may lie past
            # T; steps themselves end exactly at T (``step_t``), so clamping only affects
            # that probe.
            return _drift_and_divergence(denoiser, sde, state[0], t.clamp(max=ts[-1]), z)

        zero = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        opts = {"step_t": ts[-1:]} if method in ADAPTIVE else {}
        opts.update(options or {})
        xs, divs = odeint(rhs, (x, zero), ts, method=method, rtol=rtol, atol=atol,
                          options=opts)
        x_T, delta_logp = xs[-1], divs[-1]
        prior = (sde.prior_logp if prior_logp is None else prior_logp)(x_T)
        logp = prior + delta_logp - log_q
        bpd = None if quant is None else quant.bits_per_dim(logp, D)
    return LikelihoodResult(logp, bpd, denoiser.nfe, prior, delta_logp, x_T)


def divergence_exact(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """``(fn(x), div fn(x))`` with the trace of the Jacobian from ``D`` reverse-mode passes.

    ``fn`` maps ``(B, *D) -> (B, *D)`` acting per sample; the divergence is ``(B,)``.
    """
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        out = fn(xr)
        flat = out.reshape(out.shape[0], -1)
        D = flat.shape[1]
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(D):
            (g,) = torch.autograd.grad(flat[:, i].sum(), xr, retain_graph=i < D - 1)
            div = div + g.reshape(g.shape[0], -1)[:, i]
    return out.detach(), div.detach()


def divergence_hutchinson(
    fn: Callable[[Tensor], Tensor], x: Tensor, z: Tensor
) -> tuple[Tensor, Tensor]:
    """``(fn(x), mean_p z_p^T (dfn/dx) z_p)``: Hutchinson's trace estimate (FFJORD, eq. 6).

    ``z``: ``(P, B, *D)`` probes with ``E[z z^T] = I``; one vector-Jacobian product each.
    """
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        out = fn(xr)
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for p in range(z.shape[0]):
            (g,) = torch.autograd.grad(out, xr, z[p], retain_graph=p < z.shape[0] - 1)
            div = div + (g * z[p]).reshape(x.shape[0], -1).sum(1)
    return out.detach(), div.detach() / z.shape[0]


def _drift_and_divergence(
    denoiser: Denoiser, sde: SDE, x: Tensor, t: Tensor, z: Tensor | None
) -> tuple[Tensor, Tensor]:
    """PF-ODE drift ``v(x, t)`` and its divergence (exact when ``z`` is None)."""

    def v(xx: Tensor) -> Tensor:
        return sde.ode_drift(xx, t, denoiser.score(xx, t))

    return divergence_exact(v, x) if z is None else divergence_hutchinson(v, x, z)


def _draw_probes(kind: str, shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    """Probes with ``E[z z^T] = I``: Rademacher signs or standard normals."""
    if kind == "gaussian":
        return torch.randn(shape, generator=gen, dtype=like.dtype, device=like.device)
    signs = torch.randint(0, 2, shape, generator=gen, device=like.device)
    return (2 * signs - 1).to(like.dtype)


def _probes_from_normals(kind: str, normals: list[Tensor]) -> Tensor:
    """``(P, B, *D)`` probes from standard normal draws: the signs (Rademacher) or the draws."""
    z = torch.stack(normals)
    return z if kind == "gaussian" else torch.where(z < 0, -1.0, 1.0).to(z.dtype)


def log_likelihood_sharded(model: Model, sde: SDE, x: Tensor, *, seed: int = 0,
                           **kwargs: Any) -> LikelihoodResult | None:
    """:func:`log_likelihood` of ``x`` shared out over the processes of a ``torchrun`` job.

    Rank ``r`` integrates the samples ``k`` with ``k mod world == r`` on its own, with the
    per-sample seeds ``seed + k`` (no DDP wrapper and no collective inside the solve, so an
    adaptive solver may take a different number of steps on each rank without any rank
    waiting for another); rank 0 gathers the results in index order and gets the
    :class:`LikelihoodResult` (``nfe``: the largest count of a rank), the others ``None``.
    One process: the same per-sample seeds, so the result does not depend on the number of
    processes except through the adaptive step control, which sees its own shard.
    """
    from scoregen.infra import distributed

    n = x.shape[0]
    index = distributed.shard(n)
    res = log_likelihood(model, sde, x[index.to(x.device)], seeds=seed + index,
                         seed=seed, **kwargs)
    nfe = int(distributed.all_reduce(torch.tensor(res.nfe), "max"))
    parts = {name: distributed.gather_ordered(getattr(res, name).contiguous(), n)
             for name in ("logp", "prior_logp", "delta_logp", "x_T")}
    bpd = None if res.bpd is None else distributed.gather_ordered(res.bpd.contiguous(), n)
    if parts["logp"] is None:
        return None
    return LikelihoodResult(parts["logp"], bpd, nfe, parts["prior_logp"], parts["delta_logp"],
                            parts["x_T"])


def _check_args(x: Tensor, divergence: str, probes: str, n_probes: int) -> str:
    if x.ndim < 2:
        raise ValueError(f"x must be a batch (B, *D), got shape {tuple(x.shape)}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; known: {', '.join(DIVERGENCES)}")
    if probes not in PROBES:
        raise ValueError(f"unknown probes {probes!r}; known: {', '.join(PROBES)}")
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    return divergence


def main(argv: list[str] | None = None) -> None:
    """``python -m scoregen.evaluation.likelihood [--preset ring8] [--n 256] [--sde vp ve linear]``.

    Checks the ODE likelihood on the exact mixture oracle: for ``n`` exact samples of
    ``p_{t_min}`` (states: the joint ``(x, v)`` for ``cld``) prints the mean NLL from the ODE
    (default options, ``--rtol``, ``--exact-prior``) and from the closed form, the largest
    absolute error, the NFE and the wall time. Under ``torchrun`` the
    samples are shared out (:func:`log_likelihood_sharded`) and rank 0 prints.
    """
    import argparse
    import time

    import scoregen.sde as sdes
    from scoregen.infra import distributed
    from scoregen.models.analytic import preset

    parser = argparse.ArgumentParser(description="ODE likelihood vs closed form")
    parser.add_argument("--preset", default="ring8")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--sde", nargs="+", default=["vp", "ve", "linear"])
    parser.add_argument("--divergence", default="auto", choices=DIVERGENCES)
    parser.add_argument("--rtol", type=float, default=1e-5, help="rtol = atol of dopri5")
    parser.add_argument("--exact-prior", action="store_true",
                        help="the mixture's exact p_T as the prior (no prior mismatch)")
    args = parser.parse_args(argv)
    mix = preset(args.preset)
    main_rank = distributed.setup("cpu").is_main
    say = print if main_rank else (lambda *a, **k: None)
    say(f"{'sde':8s} {'NLL ode':>9s} {'NLL exact':>10s} {'max |err|':>10s} {'NFE':>5s} "
          f"{'seconds':>8s}   ({args.preset}, n={args.n}, nats per sample)")
    for name in args.sde:
        sde = sdes.get(name)
        x = mix.sample_t(args.n, sde, sde.t_min, torch.Generator().manual_seed(0))  # states
        prior = (lambda z, s=sde: mix.log_prob(z, s, s.T)) if args.exact_prior else None
        start = time.perf_counter()
        res = log_likelihood_sharded(mix.model(sde), sde, x, divergence=args.divergence,
                                     state=True, rtol=args.rtol, atol=args.rtol,
                                     prior_logp=prior)
        seconds = time.perf_counter() - start
        if res is None:  # not rank 0
            continue
        exact = mix.log_prob(x, sde, sde.t_min)
        err = float((res.logp - exact).abs().max())
        say(f"{name:8s} {-float(res.logp.mean()):9.4f} {-float(exact.mean()):10.4f} "
              f"{err:10.2e} {res.nfe:5d} {seconds:8.2f}")


__all__ = [
    "DIVERGENCES",
    "LikelihoodResult",
    "divergence_exact",
    "divergence_hutchinson",
    "log_likelihood",
    "log_likelihood_sharded",
]


if __name__ == "__main__":
    main()
