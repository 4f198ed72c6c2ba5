"""Re-noising times of multistep consistency sampling, chosen for each NFE.

Song et al. 2023 (sec. 6) pick the intermediate times of their 2-step samples by a greedy
ternary search on FID. Here the search is greedy too, one time per added step, on a
distance that needs no feature network: with the times ``tau_1 > ... > tau_{n-2}`` of ``n - 1``
steps fixed, ``tau_{n-1}`` is the candidate below ``tau_{n-2}`` (``C`` of them, uniform in
log-SNR down to ``t_min``) whose samples are closest to reference samples in the energy
distance (Székely & Rizzo 2013)::

    E(P, Q) = 2 E|X - Y| - E|X - X'| - E|Y - Y'|,     X, X' ~ P,  Y, Y' ~ Q,

which is zero exactly when ``P = Q``. Every candidate uses the same seeds (common random
numbers); the reference is training data, never the test split a comparison scores on.
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scoregen.models.prediction import Model
from scoregen.sde.base import SDE


def energy_distance(x: Tensor, y: Tensor) -> float:
    """The energy distance between the samples ``x: (n, *D)`` and ``y: (m, *D)`` (V-statistic,
    float64)."""
    x, y = x.flatten(1).to(torch.float64), y.flatten(1).to(torch.float64)
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean()
                 - torch.cdist(y, y).mean())


def tune_renoise_times(model: Model, sde: SDE, shape: tuple[int, ...], reference: Tensor,
                       max_nfe: int, *, n: int = 1000, candidates: int = 12, seed: int = 0,
                       progress: bool = True) -> tuple[dict[int, list[float]], dict[int, float]]:
    """``({nfe: grid}, {nfe: energy distance})`` for ``nfe = 1 .. max_nfe``: each grid is
    ``[T, tau_1, ..., tau_{nfe-1}, 0]`` for the registered ``consistency`` sampler (module
    docstring); ``n`` samples per candidate."""
    from scoregen.sampling.api import sample
    from scoregen.sampling.noise import seeds_for

    seeds = seeds_for(n, seed)
    ref = reference[:n]

    def score(times: list[float]) -> float:
        grid = torch.tensor([sde.T, *times, 0.0], dtype=torch.float64)
        x = sample(model, sde, (n, *shape), "consistency", ts=grid, seeds=seeds).x
        return energy_distance(x, ref)

    times: list[float] = []
    grids, scores = {1: [sde.T, 0.0]}, {1: score([])}
    bar = tqdm(range(2, max_nfe + 1), desc="re-noising times", disable=not progress,
               leave=False)
    for k in bar:
        hi = torch.tensor(times[-1] if times else sde.T, dtype=torch.float64)
        lam = torch.linspace(float(sde.log_snr(hi)), float(sde.log_snr(torch.tensor(
            sde.t_min, dtype=torch.float64))), candidates + 2, dtype=torch.float64)[1:-1]
        options = [float(t) for t in sde.t_from_log_snr(lam)]
        found = [(score([*times, tau]), tau) for tau in options]
        best, tau = min(found)
        times.append(tau)
        grids[k], scores[k] = [sde.T, *times, 0.0], best
        bar.set_postfix(nfe=k, tau=f"{tau:.4g}")
    return grids, scores


__all__ = ["energy_distance", "tune_renoise_times"]
