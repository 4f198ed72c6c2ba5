"""Sample-quality metrics: distances between sample sets, mixture-aware errors, Fréchet.

Every metric takes ``samples: (N, *D)`` and a target (a reference set ``(M, *D)`` or, for
the mixture-aware ones, a :class:`scoregen.models.analytic.GaussianMixture`), flattens data to
``(N, D)``, computes in float64 and returns a Python ``float``. Units are those of the data
(``x`` in ``[-1, 1]`` for every dataset here) unless stated.

Two-sample estimators are noisy: two independent sets from the *same* distribution do not
score 0. :func:`with_floor` returns a metric's value together with this **noise floor**
``metric(reference2, reference)`` (a second reference set of the same size as the
samples); a value is only meaningful well above its floor.

Registered in :data:`METRICS` (``METRICS.list()``; metadata ``lower_is_better``,
``target`` = ``"reference"`` or ``"mixture"``, ``units``):

============  =========================================================  ==================
name          quantity                                                   best
============  =========================================================  ==================
``swd``       sliced Wasserstein-2 distance                              lower (0)
``mmd``       unbiased MMD^2, RBF kernel, median bandwidth               lower (0)
``energy``    unbiased energy distance                                   lower (0)
``nll_gap``   E_samples[-log p_data] - H(p_data), nats                   closer to 0
``mode_tv``   total variation of mode weights                            lower (0)
``fd_digits`` Fréchet distance on digits-classifier features             lower (0)
              (registered by :mod:`scoregen.evaluation.digits_classifier`)
``fd_fashion`` the same on Fashion-MNIST classifier features             lower (0)
              (:mod:`scoregen.evaluation.fashion_classifier`)
============  =========================================================  ==================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from scoregen.infra.registry import Registry
from scoregen.models.analytic import GaussianMixture

Metric = Callable[..., float]
METRICS: Registry[Metric] = Registry("metric")

_BLOCK = 2048  # rows per block of a pairwise kernel sum (bounds memory at _BLOCK * M)
_MEDIAN_POINTS = 1000  # points of each set used by the median heuristic


class MetricResult(NamedTuple):
    """A metric's ``value`` and its noise ``floor`` (``None`` when no second reference)."""

    value: float
    floor: float | None


def _flat(x: Tensor, name: str = "x") -> Tensor:
    """``(N, *D) -> (N, D)`` float64, with a clear error for bad input."""
    x = torch.as_tensor(x)
    if x.ndim < 1 or x.shape[0] < 2:
        raise ValueError(f"{name} must be a set of at least 2 samples (N, *D), "
                         f"got shape {tuple(x.shape)}")
    x = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x, y = _flat(x, "x"), _flat(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} values per sample but y has {y.shape[1]}")
    return x, y.to(x.device)


# -- sliced Wasserstein ------------------------------------------------------------------------
@METRICS.register("swd", lower_is_better=True, target="reference", units="data units")
def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance (Bonneel et al. 2015, eq. 7), in data units.

    ``SW_2 = sqrt(mean_theta W_2^2(theta^T x, theta^T y))`` over ``n_projections`` unit
    directions ``theta`` drawn uniformly on the sphere from ``seed`` (the same directions
    for every call with that seed). Each 1-D ``W_2^2 = int_0^1 (F^-1(u) - G^-1(u))^2 du``
    is computed exactly between the two empirical measures: their quantile functions are
    step functions, evaluated on the merged grid of breakpoints ``{i/N} U {j/M}``, so
    unequal sizes need no resampling. In 1-D, ``SW_2 = W_2``.
    """
    x, y = _pair(x, y)
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n_projections, x.shape[1], generator=g, dtype=torch.float64)
    theta = (theta / theta.norm(dim=1, keepdim=True)).to(x.device)
    px, _ = torch.sort(x @ theta.T, dim=0)  # (N, P)
    py, _ = torch.sort(y @ theta.T, dim=0)  # (M, P)
    n, m = px.shape[0], py.shape[0]
    if n == m:
        w2 = ((px - py) ** 2).mean(0)
    else:
        levels = torch.cat([torch.arange(1, n + 1) / n, torch.arange(1, m + 1) / m])
        levels = torch.unique(levels.to(torch.float64))  # sorted breakpoints in (0, 1]
        width = torch.diff(levels, prepend=levels.new_zeros(1))
        mid = levels - width / 2
        ix = (mid * n).long().clamp_max(n - 1)
        iy = (mid * m).long().clamp_max(m - 1)
        w2 = (width.to(px.device)[:, None] * (px[ix] - py[iy]) ** 2).sum(0)
    return math.sqrt(float(w2.mean()))


# -- kernel two-sample statistics --------------------------------------------------------------
def _kernel_mean(a: Tensor, b: Tensor, kernel: Callable[[Tensor], Tensor], same: bool) -> float:
    """Mean of ``kernel(||a_i - b_j||^2)`` over pairs; ``same``: skip ``i == j`` (U-statistic)."""
    total = 0.0
    for start in range(0, a.shape[0], _BLOCK):
        d2 = torch.cdist(a[start:start + _BLOCK], b).pow(2)
        k = kernel(d2)
        if same:
            rows = torch.arange(k.shape[0], device=k.device)
            k[rows, rows + start] = 0.0
        total += float(k.sum())
    pairs = a.shape[0] * (b.shape[0] - 1) if same else a.shape[0] * b.shape[0]
    return total / pairs


def _mmd2(x: Tensor, y: Tensor, kernel: Callable[[Tensor], Tensor], unbiased: bool) -> float:
    """``MMD^2 = E k(x,x') + E k(y,y') - 2 E k(x,y)`` (Gretton et al. 2012, eq. 3 / eq. 5)."""
    kxx = _kernel_mean(x, x, kernel, same=unbiased)
    kyy = _kernel_mean(y, y, kernel, same=unbiased)
    return kxx + kyy - 2 * _kernel_mean(x, y, kernel, same=False)


def median_bandwidth(x: Tensor, y: Tensor) -> float:
    """Median heuristic: the median Euclidean distance between distinct points of the pooled
    sample (the first 1000 points of each set), as in Gretton et al. 2012, sec. 8."""
    x, y = _pair(x, y)
    z = torch.cat([x[:_MEDIAN_POINTS], y[:_MEDIAN_POINTS]])
    d = torch.cdist(z, z)
    i, j = torch.triu_indices(len(z), len(z), offset=1)
    h = float(d[i, j].median())
    if h <= 0:
        raise ValueError("median pairwise distance is 0 (most points coincide); "
                         "pass bandwidth explicitly")
    return h


@METRICS.register("mmd", lower_is_better=True, target="reference", units="dimensionless")
def mmd_rbf(x: Tensor, y: Tensor, bandwidth: float | None = None, unbiased: bool = True) -> float:
    """Squared maximum mean discrepancy with an RBF kernel (Gretton et al. 2012).

    ``k(a, b) = exp(-||a - b||^2 / (2 h^2))`` with ``h`` = ``bandwidth`` or, by default,
    :func:`median_bandwidth` of the pooled sample. ``unbiased=True`` gives the U-statistic
    of eq. 3 (diagonal terms ``i == j`` left out): unbiased for ``MMD^2``, so it fluctuates
    around 0 — slightly negative values mean "indistinguishable at this sample size".
    ``unbiased=False`` gives the biased V-statistic (eq. 5), ``|| mean_i phi(x_i) -
    mean_j phi(y_j) ||^2 >= 0``. Symmetric in ``x``, ``y``; dimensionless (kernel units).
    """
    x, y = _pair(x, y)
    h = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    return _mmd2(x, y, lambda d2: torch.exp(-d2 / (2 * h * h)), unbiased)


@METRICS.register("energy", lower_is_better=True, target="reference", units="data units")
def energy_distance(x: Tensor, y: Tensor, unbiased: bool = True) -> float:
    """Energy distance ``2 E||X - Y|| - E||X - X'|| - E||Y - Y'||`` (Székely & Rizzo 2013,
    eq. 2.1), in data units.

    It is the ``MMD^2`` of the kernel ``-||a - b||``, and is estimated by the same code:
    ``unbiased=True`` leaves out ``i == j`` in the within-set means (U-statistic, can be
    slightly negative); ``unbiased=False`` gives the V-statistic (``>= 0``, exactly 0 for
    identical sets).
    """
    x, y = _pair(x, y)
    return _mmd2(x, y, lambda d2: -d2.clamp_min(0).sqrt(), unbiased)


# -- mixture-aware metrics ---------------------------------------------------------------------
def _check_mixture(mixture: object) -> GaussianMixture:
    if not isinstance(mixture, GaussianMixture):
        raise TypeError("this metric needs the data density: pass a "
                        f"scoregen.models.analytic.GaussianMixture, got {type(mixture).__name__}")
    return mixture


@METRICS.register("nll_gap", lower_is_better=False, closer_to_zero=True, target="mixture",
                  units="nats per sample")
def nll_gap(samples: Tensor, mixture: GaussianMixture, entropy: float | None = None) -> float:
    """``E_q[-log p(x)] - H(p)`` in nats per sample, ``p`` the known data density.

    Equals ``KL(q || p) + H(q) - H(p)``: 0 for exact samples (up to Monte-Carlo error
    ``std(log p) / sqrt(N)``), positive for samples in low-density regions (shifted, too
    spread out), **negative** for samples concentrated at the modes (too little noise,
    low temperature). Report ``|gap|`` with the sign. ``entropy`` defaults to
    ``mixture.entropy(200_000)`` with a fixed seed.
    """
    mixture = _check_mixture(mixture)
    x = _flat(samples, "samples")
    if entropy is None:
        entropy = mixture.entropy(200_000, torch.Generator().manual_seed(0))
    return float(-mixture.log_prob(x).mean()) - float(entropy)


@METRICS.register("mode_tv", lower_is_better=True, target="mixture", units="probability")
def mode_weight_error(samples: Tensor, mixture: GaussianMixture) -> float:
    """Total variation ``0.5 sum_k |n_k / N - w_k|`` between the fraction of samples assigned
    to each component (argmax of the data-density responsibilities ``p(k | x)``) and the true
    weights ``w_k``. In ``[0, 1]``; ~``sqrt(K / N)`` for exact samples, ``1 - w_k`` when
    every sample falls in mode ``k``.
    """
    mixture = _check_mixture(mixture)
    x = _flat(samples, "samples")
    k = mixture.responsibilities(x).argmax(1)
    freq = torch.bincount(k, minlength=mixture.n_components).to(torch.float64) / len(k)
    return 0.5 * float((freq - mixture.weights.to(freq.device)).abs().sum())


# -- Fréchet distance --------------------------------------------------------------------------
def frechet_gaussians(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Squared Fréchet (W_2) distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``:
    ``||mu1 - mu2||^2 + tr(cov1 + cov2 - 2 (cov1^{1/2} cov2 cov1^{1/2})^{1/2})``
    (Dowson & Landau 1982; Heusel et al. 2017, eq. 6).

    The cross term uses the symmetric form ``tr((S1^{1/2} S2 S1^{1/2})^{1/2})``, equal to
    ``tr((S1 S2)^{1/2})``, computed by two symmetric eigen-decompositions with negative
    round-off eigenvalues clipped to 0: real by construction, no ``sqrtm`` imaginary parts.
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64).reshape(-1) for m in (mu1, mu2))
    c1, c2 = (_sym(torch.as_tensor(c, dtype=torch.float64)) for c in (cov1, cov2))
    lam, vec = torch.linalg.eigh(c1)
    root1 = vec @ torch.diag(lam.clamp_min(0).sqrt()) @ vec.T
    cross = torch.linalg.eigvalsh(_sym(root1 @ c2 @ root1)).clamp_min(0).sqrt().sum()
    fd = (mu1 - mu2).pow(2).sum() + torch.trace(c1) + torch.trace(c2) - 2 * cross
    return max(float(fd), 0.0)


def _sym(c: Tensor) -> Tensor:
    return 0.5 * (c + c.T)


def gaussian_fit(feat: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance (divisor ``N - 1``) of ``feat: (N, F)``."""
    f = _flat(feat, "features")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def frechet_distance(feat_x: Tensor, feat_y: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, F)``, ``(M, F)``
    (Heusel et al. 2017, "FID", eq. 6 with the features of any network), in squared
    feature units. Biased upward at finite ``N`` (estimated covariances): compare values
    at equal sample sizes and against the floor from two reference sets.
    """
    mx, cx = gaussian_fit(feat_x)
    my, cy = gaussian_fit(feat_y)
    if mx.shape != my.shape:
        raise ValueError(f"feature sizes differ: {mx.shape[0]} vs {my.shape[0]}")
    return frechet_gaussians(mx, cx, my, cy)


# -- value with its noise floor ----------------------------------------------------------------
def with_floor(
    metric: Metric | str, samples: Tensor, target: Any, reference2: Tensor | None = None,
    **kw: Any,
) -> MetricResult:
    """``MetricResult(metric(samples, target), metric(reference2, target))``.

    ``metric`` is a function or a registered name; ``target`` is the reference set (or the
    mixture for mixture-aware metrics); ``reference2`` an independent set from the target
    distribution, of the same size as ``samples`` (the floor depends on the sample size).
    """
    fn = METRICS.get(metric) if isinstance(metric, str) else metric
    floor = None if reference2 is None else fn(reference2, target, **kw)
    return MetricResult(fn(samples, target, **kw), floor)


def evaluate(
    samples: Tensor,
    *,
    reference: Tensor | None = None,
    reference2: Tensor | None = None,
    mixture: GaussianMixture | None = None,
    names: list[str] | None = None,
) -> dict[str, MetricResult]:
    """Every applicable registered metric (or those in ``names``) with its noise floor.

    Reference-set metrics need ``reference``; mixture-aware ones need ``mixture``. Without
    ``reference2`` the floor comes from an exact mixture sample when a mixture is given.
    Metrics registered with ``named_only`` (``fd_digits``, ``fd_fashion``: they need their
    dataset's images) run only when named.
    """
    if names is None:
        names = [n for n in METRICS if not METRICS.meta(n).get("named_only")]
    if mixture is not None and reference2 is None:
        g = torch.Generator().manual_seed(12345)
        reference2 = mixture.sample(samples.shape[0], g).reshape(samples.shape)
    if mixture is not None and reference is None:
        reference = mixture.sample(samples.shape[0], torch.Generator().manual_seed(54321))
        reference = reference.reshape(samples.shape)
    out: dict[str, MetricResult] = {}
    for name in names:
        target = mixture if METRICS.meta(name)["target"] == "mixture" else reference
        if target is None:
            continue
        out[name] = with_floor(name, samples, target, reference2)
    return out


__all__ = [
    "METRICS",
    "MetricResult",
    "energy_distance",
    "evaluate",
    "frechet_distance",
    "frechet_gaussians",
    "gaussian_fit",
    "median_bandwidth",
    "mmd_rbf",
    "mode_weight_error",
    "nll_gap",
    "sliced_wasserstein",
    "with_floor",
]


def main(argv: list[str] | None = None) -> None:
    """``python -m scoregen.evaluation.metrics [--preset ring8 mix16] [--n 1000 5000]``:
    noise floors.

    Prints each registered mixture/reference metric for an exact sample of ``n`` points
    against the preset mixture (reference: another exact set of ``n``): the floor a
    perfect sampler reaches at that sample size.
    """
    import argparse

    from scoregen.models.analytic import preset

    parser = argparse.ArgumentParser(description="noise floors of the sample metrics")
    parser.add_argument("--preset", nargs="+", default=["ring8", "mix16"])
    parser.add_argument("--n", nargs="+", type=int, default=[1000, 5000])
    args = parser.parse_args(argv)
    names = [n for n in METRICS if not METRICS.meta(n).get("named_only")]
    print(f"{'preset':8s} {'n':>6s} " + " ".join(f"{n:>9s}" for n in names))
    for name in args.preset:
        mix = preset(name)
        for n in args.n:
            exact = mix.sample(n, torch.Generator().manual_seed(1))
            res = evaluate(exact, mixture=mix, names=names)
            print(f"{name:8s} {n:6d} " + " ".join(f"{res[k].value:9.2g}" for k in names))


if __name__ == "__main__":
    main()
