"""Problems of the comparison: a model, its SDE, the event shape and reference samples.

A :class:`Problem` is what every method samples: the exact mixture oracle
(:func:`oracle_problem`), the oracle under classifier-free guidance with a high-accuracy
reference solve (:func:`guided_problem`), a trained checkpoint (:func:`checkpoint_problem`) or
any model (:func:`model_problem`). :func:`initial_noise` is the shared ``x_T``.

An :class:`InverseProblem` is a linear measurement of ``P`` true points: on the oracle with the
exact posterior of each (:func:`oracle_inverse_problem`), on a trained digits model with the
true labels (:func:`digits_inverse_problem`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scoregen.infra.npz import check_finite, open_npz, pick_key, read_array
from scoregen.models.analytic import GaussianMixture, LinearPosterior, from_spec, preset
from scoregen.models.prediction import Model
from scoregen.sampling.inverse.base import Operator
from scoregen.sampling.inverse.operators import operator
from scoregen.sampling.noise import NoiseSource, seeds_for
from scoregen.sde.base import SDE
from scoregen.sde.spec import describe
from scoregen.sde.spec import from_spec as sde_from_spec

MIXTURE_METRICS = ("swd", "nll_gap", "mode_tv")
GUIDED_METRICS = ("endpoint", "class_acc", "swd")


@dataclass
class Problem:
    """What every method samples: ``model`` under ``sde``, events of shape ``shape``.

    ``reference``/``floor_reference``: two independent sets of true samples ``(n, *shape)``
    (the second gives the metric's noise floor; may be ``None``). ``mixture``: the exact
    data distribution when known (enables ``nll_gap`` and ``mode_tv``).
    """

    name: str
    model: Model
    sde: SDE
    shape: tuple[int, ...]
    reference: Tensor
    floor_reference: Tensor | None = None
    mixture: GaussianMixture | None = None
    dtype: torch.dtype = torch.float64
    device: torch.device | str = "cpu"
    labels: Tensor | None = None
    endpoint_reference: Tensor | None = None
    plan_model: Model | None = None
    _entropy: float | None = field(default=None, repr=False)

    def metric_names(self) -> tuple[str, ...]:
        if self.labels is not None:
            return GUIDED_METRICS
        if self.mixture is not None:
            return MIXTURE_METRICS
        return ("swd", "fd_digits") if self.shape == (1, 8, 8) else ("swd",)

    def entropy(self) -> float:
        """``H(p_data)`` of the mixture (Monte Carlo, computed once; see ``nll_gap``)."""
        if self._entropy is None:
            self._entropy = self.mixture.entropy(200_000, torch.Generator().manual_seed(0))
        return self._entropy


def oracle_problem(name: str = "ring8", sde: str | SDE = "vp", n: int = 2000, seed: int = 0,
                   dtype: torch.dtype = torch.float64) -> Problem:
    """The exact mixture ``name`` under ``sde``; both may carry parameters
    (``ring8:classes=2``, ``ve:sigma_min=0.002,sigma_max=80``; see
    :func:`scoregen.models.analytic.from_spec` and :func:`scoregen.sde.spec.from_spec`)."""
    mixture, process = from_spec(name), sde_from_spec(sde)
    g = torch.Generator().manual_seed(10_000 + seed)
    ref, floor = mixture.sample(n, g), mixture.sample(n, g)
    return Problem(f"{name} (exact oracle, {describe(process)})", mixture.model(process), process,
                   mixture.shape, ref.to(dtype), floor.to(dtype), mixture, dtype)


def guided_problem(name: str = "ring8", sde: str | SDE = "vp", scale: float = 1.0,
                   n: int = 2000, seed: int = 0, dtype: torch.dtype = torch.float64,
                   rtol: float = 1e-10) -> Problem:
    """Classifier-free guidance at ``scale`` on the exact class-conditional oracle.

    Sample ``k`` asks for class ``k mod C`` (component ``j`` is class ``j`` unless the preset
    says otherwise, e.g. ``ring8:classes=2``). The
    reference is a high-accuracy solve of the guided probability-flow ODE from the same
    ``x_T`` (dopri5 at ``rtol = atol = rtol`` in float64), so ``endpoint`` (the mean over
    samples of the L2 distance to their own reference endpoints) isolates each method's
    solver error; ``class_acc``
    is the exact Bayes classifier's accuracy on the requested class and ``swd`` the sliced
    Wasserstein distance to the reference endpoints. Every method, peers included, sees the
    same guided model (:class:`scoregen.sampling.guidance.Guided`).
    """
    from scoregen.sampling.api import sample
    from scoregen.sampling.guidance import guide

    mixture, process = from_spec(name), sde_from_spec(sde)
    labels = torch.arange(n) % mixture.num_classes
    oracle = mixture.model(process)
    model = guide(oracle, labels, float(scale))
    noise = NoiseSource(seeds_for(n, seed), process.state_shape(mixture.shape), torch.float64)
    x_T = process.prior_from_normal(noise.draw(0))
    ref = sample(model, process, x_T, "ode_dopri5", None, ts=adaptive_grid(process),
                 rtol=rtol, atol=rtol).x
    return Problem(f"{name} (exact oracle, {describe(process)}, CFG scale {scale:g})", model,
                   process, mixture.shape, ref.to(dtype), None, mixture, dtype,
                   labels=labels, endpoint_reference=ref.to(dtype),
                   plan_model=guide(oracle, labels[:1], float(scale)))


def checkpoint_problem(path: str | Path, n: int = 2000, *, reference: str | Path | None = None,
                       sde: str | SDE | None = None, ema: bool = True,
                       device: str | torch.device = "cpu") -> Problem:
    """A trained model on the run's dataset (see :func:`model_problem`)."""
    from scoregen.training.checkpoint import load_model, read_checkpoint
    from scoregen.training.config import parse_config

    model = load_model(path, ema=ema, device=device)
    run_cfg = read_checkpoint(path).meta.get("run_config")
    if not run_cfg and reference is None:
        raise ValueError(f"checkpoint {path} holds no run config; give --reference file.npz")
    cfg = parse_config(run_cfg) if run_cfg else None
    return model_problem(model, n, shape=tuple(model.network.spec["shape"]),
                         name=f"checkpoint {path}", dataset=cfg.data.name if cfg else None,
                         data_options=cfg.data.options if cfg else None, reference=reference,
                         sde=sde, device=device)


def model_problem(model: Model, n: int = 2000, *, shape: tuple[int, ...], name: str,
                  dataset: str | None = None, data_options: dict[str, Any] | None = None,
                  reference: str | Path | None = None, sde: str | SDE | None = None,
                  device: str | torch.device = "cpu") -> Problem:
    """Any model (a trained run, an adapter, ``--model module:function``); reference samples
    from ``reference`` (an ``.npz``; array ``x`` or its only array, finite) or else the test
    split of ``dataset`` (mixture datasets also give the exact mixture). The noise floor compares a
    second real set with the reference: the rest of the split when it holds ``2n`` samples,
    else the dataset's train split (8x8 digits: the 1500 train images against the 297 test
    images)."""
    import numpy as np

    from scoregen.data import load_dataset
    from scoregen.models.prediction import retarget

    process = sde_from_spec(sde) if sde else model.sde
    options = dict(data_options or {})
    mixture = None
    if reference is not None:
        with open_npz(reference, "--reference") as npz:
            arr = read_array(npz, pick_key(npz, ("x",), "--reference"), "--reference")
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"--reference: {reference} holds {arr.dtype} values, not numbers")
        data = torch.as_tensor(check_finite(arr, f"--reference: {reference}"))
    else:
        if dataset is None:
            raise ValueError(f"{name}: no dataset for the reference samples; give "
                             "--reference file.npz")
        data = load_dataset(dataset, "test", **options)
        if dataset == "mixture":
            mixture = preset(options.get("preset", "ring8"))
    data = data.to(torch.float32)
    if tuple(data.shape[1:]) != tuple(shape):
        raise ValueError(f"reference samples have shape {tuple(data.shape[1:])}, the model "
                         f"makes {tuple(shape)}")
    ref = data[:n]
    floor = data[n:2 * n] if len(data) >= 2 * n else None
    if floor is None and reference is None:  # a small test split: real train data as the floor
        floor = load_dataset(dataset, "train", **options)[:n].to(torch.float32)
    return Problem(f"{name} ({describe(process)})", retarget(model, process), process, tuple(shape),
                   ref, floor, mixture, torch.float32, device)


def adaptive_grid(sde: SDE) -> Tensor:
    """The grid a self-stepping solver is given: ``[T, t_min, 0]`` (it picks its own steps
    in between and ends with the denoising step)."""
    return torch.tensor([sde.T, sde.t_min, 0.0], dtype=torch.float64)


def initial_noise(problem: Problem, n: int, seed: int) -> Tensor:
    """``x_T`` for samples ``seed .. seed+n-1``: exactly the draw :func:`scoregen.sample` makes."""
    sde = problem.sde
    noise = NoiseSource(seeds_for(n, seed), sde.state_shape(problem.shape), problem.dtype,
                        problem.device)
    return sde.prior_from_normal(noise.draw(0))


INVERSE_METRICS = ("swd", "nll_gap", "weight_tv", "residual")
DIGITS_INVERSE_METRICS = ("label_agreement", "residual")


@dataclass
class InverseProblem:
    """Measurements ``y_p = A x_p + sigma_y n_p`` of ``P`` true points ``truth: (P, *shape)``.

    On the oracle: ``posteriors`` (the exact posterior of each ``y_p``), ``references`` (two
    independent exact sets per point: the reference and the noise floor) and ``entropies``
    (``H(x | y_p)``, Monte Carlo). On a digits model: ``labels`` (the true class of each point).
    """

    name: str
    model: Model
    sde: SDE
    operator: Operator
    sigma_y: float
    y: Tensor
    truth: Tensor
    dtype: torch.dtype = torch.float64
    posteriors: list[LinearPosterior] | None = None
    references: list[tuple[Tensor, Tensor]] | None = None
    entropies: list[float] | None = None
    labels: Tensor | None = None

    @property
    def points(self) -> int:
        return len(self.y)

    def metric_names(self) -> tuple[str, ...]:
        return INVERSE_METRICS if self.posteriors is not None else DIGITS_INVERSE_METRICS


def _measure(op: Operator, truth: Tensor, sigma_y: float, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(20_000 + seed)
    n = torch.randn(len(truth), *op.out_shape, generator=g, dtype=torch.float64)
    return op.A(truth.to(torch.float64)) + sigma_y * n


def oracle_inverse_problem(name: str, sde: str | SDE, spec: str, sigma_y: float,
                           points: int = 2, n: int = 500, seed: int = 0) -> InverseProblem:
    """``points`` exact draws of the mixture ``name`` measured by the operator ``spec`` with
    noise ``sigma_y``, each with its exact posterior and two exact sets of ``n`` samples."""
    from scoregen import sde as sde_lib

    mixture = preset(name)
    process = sde_lib.get(sde) if isinstance(sde, str) else sde
    op = operator(spec, mixture.shape)
    g = torch.Generator().manual_seed(30_000 + seed)
    truth = mixture.sample(points, g)
    y = _measure(op, truth, sigma_y, seed)
    posteriors = [mixture.posterior(op, y[p], sigma_y) for p in range(points)]
    refs = [(post.sample(n, g), post.sample(n, g)) for post in posteriors]
    entropies = [post.mixture.entropy(100_000, g) for post in posteriors]
    return InverseProblem(f"{name} {op.name} sigma_y={sigma_y:g}", mixture.model(process),
                          process, op, float(sigma_y), y, truth, torch.float64, posteriors,
                          refs, entropies)


def digits_inverse_problem(model: Model, spec: str, sigma_y: float, points: int = 200,
                           seed: int = 0, sde: SDE | None = None) -> InverseProblem:
    """The first ``points`` held-out 8x8 digits measured by ``spec`` (noise ``sigma_y``), with
    their labels; ``model`` is a trained digits model (re-targeted to ``sde`` if given)."""
    from scoregen.data.digits import digits_with_labels
    from scoregen.models.prediction import retarget

    images, labels = digits_with_labels("test")
    if points > len(images):
        raise ValueError(f"the digits test split holds {len(images)} images, asked for {points}")
    truth, labels = images[:points].to(torch.float64), labels[:points]
    op = operator(spec, tuple(truth.shape[1:]))
    process = sde or model.sde
    return InverseProblem(f"digits {op.name} sigma_y={sigma_y:g}", retarget(model, process),
                          process, op, float(sigma_y), _measure(op, truth, sigma_y, seed),
                          truth, torch.float32, labels=labels)
