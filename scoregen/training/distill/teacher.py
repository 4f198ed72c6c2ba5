"""The teacher of a student: any scoregen model, resolved from what the user names, with an
identity that a student records and checks on resume.

A teacher is one of

- a run or checkpoint folder (``runs/digits``): its EMA model; identity = the checkpoint folder,
  its step and the SHA-256 of its weights file (``checkpoint.json``);
- an exact mixture preset (``ring8``, ``mix64``, ...) under an SDE (``sde``, default ``vp``): the
  oracle of :mod:`scoregen.models.analytic`; identity = the preset and the SDE's config;
- ``module:function`` (:mod:`scoregen.adapters.user`: diffusers, EDM or any model); identity =
  the spec and the SHA-256 of the model's tensors (:func:`content_hash`);
- a model object (Python); identity = its class and content hash.

It also says where the training data come from (the run's dataset, exact samples of the
preset, the model's ``dataset`` attribute) and, for a :class:`~scoregen.models.ScoreModel`,
which network and weights a student may start from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scoregen.models.prediction import Model, check_model, retarget
from scoregen.sde.base import SDE

STUDENT_FILE = "student.json"


class TeacherError(ValueError):
    """A teacher that cannot be loaded or does not fit; the message says why and what to do."""


@dataclass
class Teacher:
    """A resolved teacher.

    Attributes:
        model: the teacher (eval mode, no gradients).
        sde: its process.
        shape: event shape of one sample (``None`` if the model does not say).
        identity: what the student records (module docstring).
        data: ``(dataset name, options)`` of its training data, or ``None``.
        name: how to show it.
        init: ``(model config, state dict)`` of a :class:`~scoregen.models.ScoreModel`
            teacher, which a student may start from; ``None`` otherwise.
        train: the teacher run's ``train`` config section, when it has one.
    """

    model: Model
    sde: SDE
    shape: tuple[int, ...] | None
    identity: dict[str, Any]
    data: tuple[str, dict[str, Any]] | None
    name: str
    init: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None
    train: dict[str, Any] = field(default_factory=dict)


def content_hash(model: Any) -> str | None:
    """SHA-256 of a model's tensors (an ``nn.Module``'s state dict, names and dtypes included,
    or a mixture oracle's parameters); ``None`` for a model without tensors."""
    h = hashlib.sha256()
    if isinstance(model, nn.Module):
        items = sorted(model.state_dict().items())
    elif hasattr(model, "mixture"):
        mix = model.mixture
        items = [("means", mix.means), ("evals", mix.evals), ("evecs", mix.evecs),
                 ("weights", mix.weights)]
    else:
        return None
    for name, tensor in items:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def resolve_teacher(source: str | Path | Model, *, sde: str | SDE | None = None,
                    device: str | torch.device = "cpu") -> Teacher:
    """The :class:`Teacher` named by ``source`` (module docstring); ``sde`` is the process of a
    preset (default ``vp``) and re-targets any other teacher (by log-SNR) when it differs."""
    from scoregen import sde as sde_lib
    from scoregen.models.analytic import PRESETS

    process = sde_lib.get(sde) if isinstance(sde, str) else sde
    if not isinstance(source, str | Path):
        teacher = _object_teacher(source)
    elif Path(source).exists():
        teacher = _checkpoint_teacher(Path(source), device)
    elif str(source) in PRESETS:
        process = process or sde_lib.get("vp")
        mix = PRESETS.get(str(source))()
        teacher = Teacher(mix.model(process), process, mix.shape,
                          {"kind": "preset", "preset": str(source), "sde": process.config()},
                          ("mixture", {"preset": str(source)}),
                          f"{source} (exact oracle, {process.name})")
        return teacher
    elif ":" in str(source):
        teacher = _module_teacher(str(source), device)
    else:
        raise TeacherError(
            f"teacher {source!r} is neither a run or checkpoint folder, nor an exact preset "
            f"({', '.join(PRESETS.list())}), nor a module:function spec; check the path")
    if process is not None and process != teacher.sde:
        teacher.model, teacher.sde = retarget(teacher.model, process), process
        teacher.identity["retargeted_to"] = process.config()
        teacher.init = None if teacher.init is None else _retargeted_init(teacher.init, process)
    return teacher


def _retargeted_init(init: tuple[dict[str, Any], dict[str, torch.Tensor]], process: SDE
                     ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A ScoreModel's weights serve any SDE (its input scaling and noise condition depend on
    the log-SNR only), so the student of a re-targeted teacher starts from them as they are."""
    config, state = init
    return {**config, "sde": process.config()}, state


def _checkpoint_teacher(path: Path, device: str | torch.device) -> Teacher:
    from scoregen.training.checkpoint import CheckpointError, load_model, read_checkpoint

    if (path / STUDENT_FILE).is_file():
        raise TeacherError(
            f"{path} is a student (it holds {STUDENT_FILE}), not a teacher: distil a trained "
            "model, a preset or a module:function; to go on from a student's own run, pass one "
            f"of its stage folders (e.g. {path}/<stage>)")
    try:
        ckpt = read_checkpoint(path)
        model = load_model(ckpt.path, ema=True, device=device)
    except (CheckpointError, FileNotFoundError) as err:
        raise TeacherError(f"cannot load the teacher {path}: {err}") from None
    model.requires_grad_(False)
    run = ckpt.meta.get("run_config") or {}
    data = run.get("data") or {}
    options = {k: v for k, v in data.items() if k not in ("name", "stream", "workers")}
    identity = {"kind": "checkpoint", "path": str(path), "checkpoint": str(ckpt.path),
                "step": ckpt.step,
                "sha256": ckpt.meta.get("files", {}).get("weights.safetensors", {}).get("sha256")}
    return Teacher(model, model.sde, model.data_shape, identity,
                   (data["name"], options) if "name" in data else None,
                   f"{path} (step {ckpt.step})",
                   (model.config(), {k: v.detach().cpu().clone()
                                     for k, v in model.state_dict().items()}),
                   dict(run.get("train") or {}))


def _module_teacher(spec: str, device: str | torch.device) -> Teacher:
    from scoregen.adapters import load_model_spec

    try:
        model = load_model_spec(spec)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise TeacherError(f"cannot load the teacher {spec}: {err}") from None
    if isinstance(model, nn.Module):
        model = model.to(device).eval().requires_grad_(False)
    teacher = _object_teacher(model)
    teacher.identity.update(kind="module", spec=spec)
    teacher.name = spec
    return teacher


def _object_teacher(model: Any) -> Teacher:
    if hasattr(model, "sampling_plan"):
        raise TeacherError("a student was passed where a teacher is expected: distil a "
                           "diffusion model (a run, a preset or a module:function)")
    try:
        check_model(model, model.sde)
    except (TypeError, ValueError, AttributeError) as err:
        raise TeacherError(f"the teacher is not a scoregen model: {err}") from None
    shape = getattr(model, "shape", None) or getattr(model, "data_shape", None)
    dataset = getattr(model, "dataset", None)
    init = None
    if hasattr(model, "config") and hasattr(model, "network") and isinstance(model, nn.Module):
        init = (model.config(), {k: v.detach().cpu().clone()
                                 for k, v in model.state_dict().items()})
    return Teacher(model, model.sde, None if shape is None else tuple(shape),
                   {"kind": "object", "type": type(model).__name__,
                    "sha256": content_hash(model)},
                   (dataset, {}) if dataset else None, type(model).__name__, init)


def check_same_teacher(saved: dict[str, Any], teacher: Teacher, where: Path) -> None:
    """Refuse to resume a student with another teacher than the one it recorded."""
    now = teacher.identity
    keys = ("kind", "preset", "sde", "spec", "sha256", "retargeted_to")
    diffs = [f"{k}: recorded {saved.get(k)!r}, given {now.get(k)!r}" for k in keys
             if saved.get(k) != now.get(k)]
    if diffs:
        raise TeacherError(
            f"{where} was distilled from another teacher ({'; '.join(diffs)}); resume with the "
            "teacher it recorded, or start a new student (--overwrite, or another --out)")


__all__ = ["STUDENT_FILE", "Teacher", "TeacherError", "check_same_teacher", "content_hash",
           "resolve_teacher"]
