"""Datasets: ``load_dataset(name, split, **options) -> Tensor (N, *D)`` in ``[-1, 1]``.

Registered in ``DATASETS``: 2-D toy sets (``8gaussians``, ``moons``, ``swissroll``,
``checkerboard``, ``rings``), ``mixture`` (analytic presets), ``digits`` (scikit-learn 8x8),
``mnist`` (local IDX files) and ``images`` (a folder or an .npz). Every module of this
package is imported here, so a new dataset file registers itself.
"""

from __future__ import annotations

import importlib
import pkgutil

from scoregen.data.registry import (
    DATASETS,
    SPLITS,
    DataError,
    dataset_options,
    describe,
    load_dataset,
    register,
)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "registry" and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["DATASETS", "SPLITS", "DataError", "dataset_options", "describe", "load_dataset",
           "register"]
