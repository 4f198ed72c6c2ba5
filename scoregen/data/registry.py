"""The dataset registry ``DATASETS`` and :func:`load_dataset`.

A dataset is a function ``fn(split="train", **options) -> Tensor`` returning float32 data
``(N, *D)`` scaled to ``[-1, 1]``; ``split`` is ``"train"`` or ``"test"`` (a fixed split).
A dataset registered with ``labeled=True`` also takes ``labels: bool`` and then returns
``(x, y)`` with int64 class labels ``y: (N,)`` in ``0 .. C-1``
(``load_dataset(..., labels=True)``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from scoregen.infra.registry import Registry

DatasetFn = Callable[..., Tensor]
DATASETS: Registry[DatasetFn] = Registry("dataset")
SPLITS = ("train", "test")


class DataError(ValueError):
    """A dataset could not be read (wrong size, channels, format); the message says why."""


def register(name: str, kind: str, labeled: bool = False) -> Callable[[DatasetFn], DatasetFn]:
    """Register a dataset function under ``name`` (``kind``: ``toy``, ``mixture``, ``image``;
    ``labeled``: it gives class labels)."""
    return DATASETS.register(name, kind=kind, labeled=labeled)


def dataset_options(name: str) -> dict[str, Any]:
    """Keyword options of dataset ``name`` (except ``split``) with their defaults."""
    sig = inspect.signature(DATASETS.get(name))
    return {k: p.default for k, p in sig.parameters.items() if k not in ("split", "labels")}


def load_dataset(name: str, split: str = "train", labels: bool = False,
                 **options: Any) -> Tensor | tuple[Tensor, Tensor]:
    """Data of dataset ``name`` for ``split`` (with ``labels``: ``(x, y)``); unknown options
    raise a ``ValueError``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    known = dataset_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for dataset "
                         f"{name!r}; known: {', '.join(sorted(known)) or '(none)'}")
    if not labels:
        return DATASETS.get(name)(split=split, **options)
    if not DATASETS.meta(name).get("labeled"):
        with_labels = [n for n in DATASETS.list() if DATASETS.meta(n).get("labeled")]
        raise DataError(f"dataset {name!r} has no class labels; labeled datasets: "
                        f"{', '.join(with_labels)}")
    x, y = DATASETS.get(name)(split=split, labels=True, **options)
    return x, check_labels(y, len(x), name)


def check_labels(y: Tensor, n: int, source: object) -> Tensor:
    """``y`` as int64 labels ``(n,)`` in ``0 .. C-1`` (clear errors otherwise)."""
    y = torch.as_tensor(y)
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise DataError(f"{source}: labels must be integers")
    y = y.to(torch.int64)
    if y.shape != (n,):
        raise DataError(f"{source}: {n} samples but labels of shape {tuple(y.shape)}")
    if n and y.min() < 0:
        raise DataError(f"{source}: labels must be >= 0, got {int(y.min())}")
    return y


def num_classes(y: Tensor) -> int:
    """``C = max(y) + 1``."""
    return int(y.max()) + 1 if y.numel() else 0


def describe(name: str) -> str:
    """First line of the dataset function's docstring."""
    doc = (DATASETS.get(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
