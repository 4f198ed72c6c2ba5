"""A model from a plain Python callable: ``"pkg.mod:make_model"`` or ``"path/to/file.py:fn"``.

The module is imported (a ``.py`` path is loaded from that file; a dotted name is looked up
on ``sys.path`` with the current directory first, as ``python -m`` does), the function is
called without arguments, and what it returns must follow :class:`scoregen.models.prediction.Model`:
``prediction`` (``eps``, ``x0``, ``score`` or ``v``), ``sde`` (a scoregen SDE) and
``model(x, t)``. Wrap foreign networks with :mod:`scoregen.adapters.diffusers_unet` or
:mod:`scoregen.adapters.edm` inside the function. Optional attributes used by the command
line: ``shape`` (event shape of one sample, e.g. ``(1, 8, 8)``) and ``dataset`` (the name
of the dataset whose test split is the reference, e.g. ``"digits"``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from scoregen.models.prediction import Model, check_model


class ModelSpecError(ValueError):
    """A ``module:function`` spec that does not give a model; the message says why."""


def _import(module: str) -> ModuleType:
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise FileNotFoundError(f"--model: no such file {path}")
        name = f"_scoregen_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise ModelSpecError(f"--model: cannot import module {module!r} ({err}); run from the "
                             "folder that holds it or put it on PYTHONPATH") from None


def load_model_spec(spec: str) -> Model:
    """The model returned by the function named ``spec`` (``"module:function"``)."""
    module, sep, func = spec.rpartition(":")
    if not sep or not module or not func.isidentifier():
        raise ModelSpecError(f"--model {spec!r} must look like package.module:function or "
                             "path/to/file.py:function")
    fn = getattr(_import(module), func, None)
    if not callable(fn):
        raise ModelSpecError(f"--model: {module!r} has no function {func!r}")
    model = fn()
    if not isinstance(model, Model):
        raise ModelSpecError(f"--model: {spec}() returned {type(model).__name__}, not a scoregen "
                             "model (it needs `prediction`, `sde` and model(x, t); see "
                             "scoregen.models.prediction.Model and scoregen.adapters)")
    try:
        check_model(model, model.sde)
    except (TypeError, ValueError) as err:
        raise ModelSpecError(f"--model: {spec}(): {err}") from None
    return model


__all__ = ["ModelSpecError", "load_model_spec"]
