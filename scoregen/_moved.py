"""Old import paths of modules that moved into the stage sub-packages.

``scoregen.checkpoint`` is ``scoregen.training.checkpoint``, ``scoregen.metrics`` is
``scoregen.evaluation.metrics``, and so on (:data:`MOVED`): a meta-path finder makes the
old name an alias of the *same* module object (no copy, no second import), so
``from scoregen.checkpoint import load_model`` and ``import scoregen.peers.kdiffusion``
keep working and monkeypatching either name patches both.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

MOVED: dict[str, str] = {
    "scoregen.checkpoint": "scoregen.training.checkpoint",
    "scoregen.config": "scoregen.training.config",
    "scoregen.losses": "scoregen.training.losses",
    "scoregen.metrics": "scoregen.evaluation.metrics",
    "scoregen.likelihood": "scoregen.evaluation.likelihood",
    "scoregen.digits_classifier": "scoregen.evaluation.digits_classifier",
    "scoregen.compare": "scoregen.evaluation.compare",
    "scoregen.peers": "scoregen.evaluation.peers",
}


def new_name(old: str) -> str | None:
    """Where module ``old`` lives now (sub-modules of a moved package too), else ``None``."""
    for before, after in MOVED.items():
        if old == before or old.startswith(before + "."):
            return after + old[len(before):]
    return None


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old name by importing the new one and handing back that module."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> ModuleSpec | None:
        if new_name(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def __init__(self) -> None:
        self._own_spec: dict[str, ModuleSpec | None] = {}

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = importlib.import_module(new_name(spec.name))
        self._own_spec[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias spec on the real module: put its own back
        module.__spec__ = self._own_spec.pop(module.__name__, module.__spec__)


def install() -> None:
    """Put the alias finder first on ``sys.meta_path``, once.

    First, because an old sub-module name (``scoregen.peers.kdiffusion``) would otherwise be
    found by the path finder in the moved package's folder and imported a second time.
    """
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
