"""Where the ``sample``, ``evaluate`` and ``compare`` commands get their model: a run or
checkpoint folder, a distilled student's folder (:mod:`scoregen.training.distill`: the model is
the :class:`~scoregen.training.distill.Student`, which samples its own way), or ``--model
module:function`` (:mod:`scoregen.adapters.user`).

(The leading underscore keeps this helper out of the discovered commands.)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scoregen.models.prediction import Model
from scoregen.sde.base import SDE

MODEL_HELP = ("a Python callable that returns a scoregen model, as package.module:function or "
              "path/to/file.py:function (see scoregen.adapters), instead of a run folder")


@dataclass
class ModelSource:
    """A model with what the commands need to know about it.

    ``shape``: event shape of one sample (``None`` if the model does not say); ``data`` and
    ``data_options``: the dataset it was trained on (the run config, or the model's
    ``dataset`` attribute); ``sample``: the run's ``sample`` config section when there is one.
    """

    model: Model
    sde: SDE
    name: str
    shape: tuple[int, ...] | None = None
    data: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    step: int | None = None
    sample: Any = None


def _is_student(path: str) -> bool:
    from scoregen.training.distill import is_student

    return is_student(path)


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="MODULE:FUNCTION", help=MODEL_HELP)


def load_source(path: str | None, spec: str | None, *, ema: bool = True,
                device: torch.device | str = "cpu", sde: str | None = None) -> ModelSource:
    """The model of a run folder ``path`` or of ``--model spec`` (exactly one), re-targeted to
    the SDE ``sde`` (``NAME[:KEY=VALUE,...]``, :func:`scoregen.sde.spec.from_spec`) when
    given."""
    from scoregen.sde.spec import from_spec

    if (path is None) == (spec is None):
        raise ValueError("give a run or checkpoint folder, or --model module:function "
                         "(exactly one of them)")
    if spec is not None:
        from scoregen.adapters import load_model_spec

        model = load_model_spec(spec)
        if isinstance(model, torch.nn.Module):
            model = model.to(device).eval()
        shape = getattr(model, "shape", None)
        src = ModelSource(model, model.sde, spec, None if shape is None else tuple(shape),
                          getattr(model, "dataset", None))
    elif _is_student(path):
        from scoregen.training.distill import load_student

        student = load_student(path, device=device)
        if sde is not None:
            raise ValueError(f"--sde: the student {path} samples under its own process "
                             f"({student.sde.name}); drop --sde")
        data = student.record["teacher"].get("preset")
        return ModelSource(student, student.sde, str(path), student.shape,
                           "mixture" if data else None, {"preset": data} if data else {},
                           Path(path))
    else:
        from scoregen.training.checkpoint import load_model, read_checkpoint
        from scoregen.training.config import parse_config

        ckpt = read_checkpoint(path)
        model = load_model(ckpt.path, ema=ema, device=device)
        run_cfg = ckpt.meta.get("run_config")
        cfg = parse_config(run_cfg) if run_cfg else None
        src = ModelSource(model, model.sde, str(path), tuple(model.network.spec["shape"]),
                          cfg.data.name if cfg else None,
                          dict(cfg.data.options) if cfg else {}, ckpt.path.parent.parent,
                          ckpt.step, cfg.sample if cfg else None)
    if sde is not None:
        from scoregen.models.prediction import retarget

        target = from_spec(sde)
        src.model, src.sde = retarget(src.model, target), target
    return src
