"""Checkpoints: safetensors weights + a JSON description, written atomically, loaded safely.

A run folder looks like::

    RUN/config.yaml                      the validated run config
    RUN/log.csv                          step, loss, lr, examples_per_s, seconds
    RUN/samples/step_000500.png          sample plots during and after training
    RUN/checkpoints/LATEST               name of the newest checkpoint
    RUN/checkpoints/step_000500/weights.safetensors
    RUN/checkpoints/step_000500/checkpoint.json

``weights.safetensors`` holds every tensor: ``model.*`` (raw weights), ``ema.*`` (EMA
weights), ``optim.<param>.<name>`` (optimizer state), ``rng.<name>`` (random generator
states as uint8 tensors) and, when the run tracks post-hoc EMA widths, ``phema.<i>.*`` (the
power-function averages, :mod:`scoregen.training.posthoc_ema`). ``checkpoint.json`` holds
the rest: model config (network, SDE, prediction), the run config, the training step, the
optimizer's param groups and scalar state, versions of scoregen and torch, and the size and
SHA-256 of the weights file.

A checkpoint is written in a temporary folder and moved into place with ``os.replace``, so a
crash never leaves a half-written checkpoint under its final name; ``LATEST`` is replaced the
same way (:mod:`scoregen.infra.outputs`, which also records these files as part of a run, so
no command output ever replaces them). Loading never unpickles: safetensors and JSON only.

Integrity: ``checkpoint.json`` records the size and SHA-256 of the weights, and the weights'
header records the SHA-256 of ``checkpoint.json``'s other contents. A checkpoint whose
metadata lacks the weights' hashes is refused (the check cannot be switched off by deleting
its record), and so are truncated or altered weights and a ``checkpoint.json`` edited after
it was written; each :class:`CheckpointError` names the file and the cause.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from scoregen.infra import outputs
from scoregen.infra.version import __version__

WEIGHTS = "weights.safetensors"
META = "checkpoint.json"
LATEST = "LATEST"
FORMAT = 1
META_DIGEST = "scoregen.meta_sha256"  # key in the weights' header
HOLDS = ("run", "grids")  # a checkpoint folder holds the checkpoint and grids tuned to it


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated or corrupt; the message names the file."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: its folder, the JSON metadata and all tensors (on the CPU)."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, Tensor]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    def group(self, prefix: str) -> dict[str, Tensor]:
        """Tensors under ``prefix.`` with the prefix removed."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}


# -- writing -------------------------------------------------------------------------------------
def _meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``meta`` without its ``files`` entry."""
    body = {k: v for k, v in meta.items() if k != "files"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer state as tensors ``optim.<param>.<name>`` plus JSON for everything else."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(
    root: str | Path,
    step: int,
    model: nn.Module,
    *,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    rng: dict[str, Tensor] | None = None,
    run_config: dict[str, Any] | None = None,
    keep: int | None = None,
    objective: nn.Module | None = None,
    extra: dict[str, Tensor] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``root/step_XXXXXX`` atomically, point ``root/LATEST`` at it, keep the newest
    ``keep`` checkpoints. ``model`` (and ``ema``) must have a ``config()`` method
    (:class:`~scoregen.models.ScoreModel`); the training objective's own state (e.g. a target
    network), when it has one, is saved as the group ``objective``; ``extra`` adds tensors
    under their own group prefix (e.g. ``phema.*``, the post-hoc EMA averages) and
    ``extra_meta`` keys to ``checkpoint.json``. Returns the checkpoint folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous()
                        for k, v in ema.state_dict().items()})
    objective_state = {} if objective is None else objective.state_dict()
    tensors.update({f"objective.{k}": v.detach().cpu().contiguous()
                    for k, v in objective_state.items()})
    optim_meta = None
    if optimizer is not None:
        opt_tensors, optim_meta = _flatten_optimizer(optimizer)
        tensors.update(opt_tensors)
    tensors.update({f"rng.{k}": v.detach().cpu().contiguous() for k, v in (rng or {}).items()})
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()})

    meta = json.loads(json.dumps({
        "format": FORMAT,
        "step": int(step),
        "model": model.config(),
        "has_ema": ema is not None,
        "has_objective_state": bool(objective_state),
        "optimizer": optim_meta,
        "run_config": run_config,
        **(extra_meta or {}),
        "versions": {"scoregen": __version__, "torch": torch.__version__},
    }))  # exactly what reading checkpoint.json gives back, so its digest is reproducible
    outputs.mark_folder(root, "checkpoints", only=("run",))
    with outputs.replacing_folder(root / name, kind="run") as tmp:
        outputs.mark_folder(tmp, "checkpoint", only=HOLDS)
        with outputs.replacing(tmp / WEIGHTS, kind="run") as (weights,):
            save_file(tensors, str(weights), metadata={META_DIGEST: _meta_digest(meta)})
        meta["files"] = {WEIGHTS: {"bytes": (tmp / WEIGHTS).stat().st_size,
                                   "sha256": outputs.sha256(tmp / WEIGHTS)}}
        outputs.write_text(tmp / META, json.dumps(meta, indent=1), kind="run")
    outputs.write_text(root / LATEST, name + "\n", kind="run", by_name=True)  # users may set it
    if keep is not None:
        # prune by step number, and only older steps of this run: a checkpoint at a later
        # step than the one just written is never deleted
        older = sorted(s for s, _ in _steps(root) if s < step)
        for s in older[:max(len(older) - (keep - 1), 0)]:
            outputs.remove_owned(root / f"step_{s:06d}")
    return root / name


def _steps(root: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of the ``step_*`` checkpoint folders in ``root``, by step."""
    found = []
    for p in root.glob("step_*"):
        with contextlib.suppress(ValueError):
            if p.is_dir():
                found.append((int(p.name[5:]), p))
    return sorted(found)


# -- reading -------------------------------------------------------------------------------------
def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder for a run folder, a checkpoints folder, a checkpoint folder or
    one of its files; ``RUN/last`` (or ``RUN/latest``) names the newest checkpoint of RUN."""
    path = Path(path)
    if path.name.lower() in ("last", "latest") and not path.exists():
        path = path.parent
    if path.is_file() and path.name in (META, WEIGHTS):
        return path.parent
    for root in (path / "checkpoints", path):
        latest = root / LATEST
        if latest.is_file():
            return _latest_target(latest)
        if root.name == "checkpoints" and _steps(root):
            raise CheckpointError(
                f"{latest} is missing; {_candidates(root)}")
    if (path / META).is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"no such run or checkpoint: {path}")
    if (path / WEIGHTS).is_file():
        raise CheckpointError(f"checkpoint {path} has {WEIGHTS} but no {META} (a damaged "
                              "checkpoint); use another checkpoint of the run")
    raise CheckpointError(f"{path} holds no checkpoint (expected {META}, or "
                          f"checkpoints/{LATEST} in a run folder)")


def _candidates(root: Path) -> str:
    names = [p.name for _, p in _steps(root) if (p / META).is_file()]
    if not names:
        return f"{root} holds no complete checkpoint"
    return (f"complete checkpoints in {root}: {', '.join(names)}; pass one of them "
            f"(e.g. {root / names[-1]}) or write its name into {root / LATEST}")


def _latest_target(latest: Path) -> Path:
    """The checkpoint folder that ``LATEST`` names, with an error that says how to fix it."""
    root = latest.parent
    try:
        name = latest.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{latest} is unreadable ({err}); {_candidates(root)}") from None
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise CheckpointError(f"{latest} is damaged (holds {name[:40]!r}, not a checkpoint "
                              f"name); {_candidates(root)}")
    target = root / name
    if not (target / META).is_file():
        what = "does not exist" if not target.exists() else f"has no {META}"
        raise CheckpointError(f"{latest} names {name}, which {what}; {_candidates(root)}")
    return target


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load and verify a checkpoint (metadata, weights size and SHA-256, tensors)."""
    folder = find_checkpoint(path)
    meta_file, weights_file = folder / META, folder / WEIGHTS
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"corrupt checkpoint metadata {meta_file}: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(f"{meta_file} is not a scoregen checkpoint (format {FORMAT})")
    if not weights_file.is_file():
        raise CheckpointError(f"checkpoint weights {weights_file} are missing")
    expected = meta.get("files")
    expected = expected.get(WEIGHTS) if isinstance(expected, dict) else None
    if not (isinstance(expected, dict) and isinstance(expected.get("bytes"), int)
            and isinstance(expected.get("sha256"), str)):
        raise CheckpointError(
            f"{meta_file} records no size and SHA-256 of {WEIGHTS} (the entry 'files' is "
            "missing or damaged), so the weights cannot be verified; scoregen loads only "
            "verified weights: use another checkpoint of the run")
    size = weights_file.stat().st_size
    if size != expected["bytes"]:
        raise CheckpointError(f"checkpoint weights {weights_file} are truncated or altered: "
                              f"{size} bytes, expected {expected['bytes']}")
    if outputs.sha256(weights_file) != expected["sha256"]:
        raise CheckpointError(f"checkpoint weights {weights_file} are corrupt "
                              "(SHA-256 does not match checkpoint.json)")
    try:
        with safe_open(str(weights_file), framework="pt") as fh:
            header = fh.metadata() or {}
        tensors = load_file(str(weights_file), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint weights {weights_file}: {err}") from None
    digest = header.get(META_DIGEST)  # checkpoints of an older scoregen have none
    if digest is not None and digest != _meta_digest(meta):
        raise CheckpointError(
            f"{meta_file} was edited after the checkpoint was written (its contents no longer "
            f"match the digest stored in {WEIGHTS}); restore it, or use another checkpoint")
    return Checkpoint(folder, meta, tensors)


def load_model(path: str | Path, ema: bool = True, device: str | torch.device = "cpu"):
    """The :class:`~scoregen.models.ScoreModel` of a run or checkpoint, in eval mode.

    ``ema=True`` (default) loads the EMA weights when the checkpoint has them.
    """
    from scoregen.models import build_model

    ckpt = read_checkpoint(path)
    try:
        model = build_model(ckpt.meta["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{ckpt.path / META}: cannot rebuild the model: {err}") from None
    prefix = "ema" if ema and ckpt.meta.get("has_ema") else "model"
    load_state(model, ckpt.group(prefix), ckpt.path / WEIGHTS)
    return model.to(device).eval()


def load_classifier(path: str | Path, ema: bool = True, device: str | torch.device = "cpu"):
    """The :class:`~scoregen.models.classifier.NoisyClassifier` of a classifier run or
    checkpoint (``objective.name: classifier``), in eval mode, EMA weights by default."""
    from scoregen.models.classifier import build_classifier

    ckpt = read_checkpoint(path)
    if ckpt.meta["model"].get("kind") != "classifier":
        raise CheckpointError(f"{ckpt.path / META} holds a score model, not a noise-conditional "
                              "classifier; train one with objective.name: classifier "
                              "(configs/digits_classifier.yaml)")
    try:
        clf = build_classifier(ckpt.meta["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{ckpt.path / META}: cannot rebuild the classifier: {err}"
                              ) from None
    prefix = "ema" if ema and ckpt.meta.get("has_ema") else "model"
    load_state(clf, ckpt.group(prefix), ckpt.path / WEIGHTS)
    return clf.to(device).eval()


def load_state(module: nn.Module, state: dict[str, Tensor], source: Path) -> None:
    """``module.load_state_dict(state)`` with a :class:`CheckpointError` naming ``source``."""
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as err:  # ValueError: a module's own check on load
        raise CheckpointError(f"{source} does not match the model: {err}") from None


def restore_optimizer(optimizer: torch.optim.Optimizer, ckpt: Checkpoint) -> None:
    """Inverse of the optimizer flattening in :func:`save_checkpoint`."""
    meta = ckpt.meta.get("optimizer")
    if meta is None:
        raise CheckpointError(f"{ckpt.path / META} has no optimizer state to resume from")
    state: dict[int, dict[str, Any]] = {}
    for key, value in ckpt.group("optim").items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{ckpt.path}: optimizer state does not match: {err}") from None


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "find_checkpoint",
    "load_classifier",
    "load_model",
    "load_state",
    "read_checkpoint",
    "restore_optimizer",
    "save_checkpoint",
]
