"""The dataset registry ``DATASETS`` and :func:`load_dataset`.

A dataset is a function ``fn(split="train", **options) -> Tensor`` returning float32 data
``(N, *D)`` scaled to ``[-1, 1]``; ``split`` is ``"train"`` or ``"test"`` (a fixed split).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor

from scoregen.registry import Registry

DatasetFn = Callable[..., Tensor]
DATASETS: Registry[DatasetFn] = Registry("dataset")
SPLITS = ("train", "test")


class DataError(ValueError):
    """A dataset could not be read (wrong size, channels, format); the message says why."""


def register(name: str, kind: str) -> Callable[[DatasetFn], DatasetFn]:
    """Register a dataset function under ``name`` (``kind``: ``toy``, ``mixture``, ``image``)."""
    return DATASETS.register(name, kind=kind)


def dataset_options(name: str) -> dict[str, Any]:
    """Keyword options of dataset ``name`` (except ``split``) with their defaults."""
    sig = inspect.signature(DATASETS.get(name))
    return {k: p.default for k, p in sig.parameters.items() if k != "split"}


def load_dataset(name: str, split: str = "train", **options: Any) -> Tensor:
    """Data of dataset ``name`` for ``split``; unknown options raise a ``ValueError``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    known = dataset_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for dataset "
                         f"{name!r}; known: {', '.join(sorted(known)) or '(none)'}")
    return DATASETS.get(name)(split=split, **options)


def describe(name: str) -> str:
    """First line of the dataset function's docstring."""
    doc = (DATASETS.get(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
