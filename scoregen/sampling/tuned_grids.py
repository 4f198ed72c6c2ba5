"""Time grids fitted to one model: stored, found again, and handed to ``scoregen.sample``.

:mod:`scoregen.sampling.grid_tuning` fits a grid for a model, a sampler (with its options), an SDE
and an NFE budget; this module only keeps them. A :class:`TunedGrids` is a list of
:class:`TunedGrid` entries saved as JSON (``tuned_grids.json``) next to the checkpoint it was
fitted for (the checkpoint folder), or in a folder of the user's choice for the exact
mixture presets. Entries are keyed by ``(sampler, options, SDE config, guidance, nfe)``;
saving an entry with the same key replaces the old one. ``guidance`` is ``None`` for
unconditional sampling and ``{"scale": w}`` (with ``interval`` / ``threshold`` when they were
set) for a grid fitted to the guided model (:func:`guidance_key`): the guided probability-flow
ODE is another ODE, stiffer as ``w`` grows, and its best grid is another grid.

``scoregen.sample(model, sde, shape, sampler, spacing="tuned", grids=G, nfe=N)`` (or
``steps=``) takes the matching grid from ``G``: a :class:`TunedGrids`, a ``.json`` file, the
folder holding it, or a run folder, whose grids are those of its newest checkpoint (where
``scoregen tune-grid RUN`` writes them; :meth:`TunedGrids.file`). ``scoregen sample RUN
--spacing tuned`` and ``scoregen compare --spacing tuned`` read them the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scoregen.infra import outputs
from scoregen.sde.base import SDE

FILENAME = "tuned_grids.json"
FORMAT = 1
KIND = "grids"  # the kind of file in scoregen's records of outputs
# the run-folder layout of scoregen.training.checkpoint: RUN/checkpoints/LATEST names the
# newest checkpoint folder (tests/test_grid_tuning.py checks that both read it alike)
_CHECKPOINTS, _LATEST = "checkpoints", "LATEST"


def _canonical(options: dict[str, Any] | None) -> dict[str, Any]:
    return json.loads(json.dumps(dict(options or {}), sort_keys=True))


def guidance_key(cond: Any = None, guidance: Any = None,
                 interval: tuple[float, float] | None = None,
                 threshold: float | None = None) -> dict[str, Any] | None:
    """The guidance part of a grid's key, from :func:`scoregen.sample`'s arguments: ``None``
    without labels (and without thresholding), else ``{"scale": w}`` plus ``interval`` and
    ``threshold`` when given (``guidance`` may be a
    :class:`scoregen.sampling.guidance.Guidance`)."""
    scale = getattr(guidance, "scale", guidance)
    interval = getattr(guidance, "interval", None) if interval is None else interval
    threshold = getattr(guidance, "threshold", None) if threshold is None else threshold
    if cond is None and threshold is None:
        return None
    key: dict[str, Any] = {"scale": 1.0 if scale is None else float(scale)}
    if interval is not None:
        key["interval"] = [float(v) for v in interval]
    if threshold is not None:
        key["threshold"] = float(threshold)
    return key


def _describe(guidance: dict[str, Any] | None) -> str:
    return "unguided" if guidance is None else "guidance " + ", ".join(
        f"{k} {v}" for k, v in guidance.items())


@dataclass
class TunedGrid:
    """One fitted grid: ``ts`` (descending, ending in ``0`` for the denoising step) for
    ``sampler`` with ``options`` under the SDE ``sde`` (its config), costing ``nfe`` counted
    evaluations, for the guided model ``guidance`` (:func:`guidance_key`; ``None``:
    unguided). ``info``: how it was fitted (objective before/after, held-out errors,
    teacher, seconds)."""

    sampler: str
    options: dict[str, Any]
    sde: dict[str, Any]
    nfe: int
    ts: list[float]
    info: dict[str, Any] = field(default_factory=dict)
    guidance: dict[str, Any] | None = None

    @property
    def steps(self) -> int:
        """The ``steps`` of this grid in ``scoregen.sample``'s sense (intervals)."""
        return len(self.ts) - 1

    def key(self) -> tuple[str, str, str, str, int]:
        return (self.sampler, json.dumps(_canonical(self.options), sort_keys=True),
                json.dumps(self.sde, sort_keys=True),
                json.dumps(_canonical(self.guidance) if self.guidance else None, sort_keys=True),
                int(self.nfe))

    def tensor(self) -> Tensor:
        return torch.tensor(self.ts, dtype=torch.float64)


class TunedGrids:
    """A collection of :class:`TunedGrid`; :meth:`load`/:meth:`save` read and write
    ``tuned_grids.json``."""

    def __init__(self, grids: list[TunedGrid] | None = None, path: Path | None = None) -> None:
        self.grids: list[TunedGrid] = list(grids or [])
        self.path = path

    @staticmethod
    def file(path: str | os.PathLike[str]) -> Path:
        """The ``tuned_grids.json`` of ``path``: ``path`` itself if it is a ``.json`` file;
        ``path/tuned_grids.json`` if it exists; for a run folder (``RUN/checkpoints/LATEST``),
        the file in its newest checkpoint folder, where ``scoregen tune-grid RUN`` saves;
        else ``path/tuned_grids.json`` (where a new collection would be saved)."""
        path = Path(path)
        if path.suffix == ".json":
            return path
        if not (path / FILENAME).is_file():
            for root in (path / _CHECKPOINTS, path):
                latest = root / _LATEST
                if latest.is_file():
                    return root / latest.read_text().strip() / FILENAME
        return path / FILENAME

    @classmethod
    def load(cls, path: str | os.PathLike[str], missing_ok: bool = False) -> TunedGrids:
        """The grids in ``path`` (a folder or a ``.json`` file); an empty collection when
        the file does not exist and ``missing_ok``."""
        file = cls.file(path)
        if not file.is_file():
            if missing_ok:
                return cls([], file)
            raise FileNotFoundError(f"no tuned grids at {file}; fit some with `scoregen "
                                    "tune-grid RUN_OR_PRESET --sampler S --nfe N`")
        try:
            raw = json.loads(file.read_text())
            grids = [TunedGrid(**g) for g in raw["grids"]]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{file} is not a tuned-grid file ({err}); delete it and run "
                             "`scoregen tune-grid` again") from None
        return cls(grids, file)

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write every grid to ``path`` (default: where they were loaded from), atomically and
        only over a grid file scoregen wrote (:mod:`scoregen.infra.outputs`, kind ``grids``)."""
        target = self.path if path is None else self.file(path)
        if target is None:
            raise ValueError("give a folder or .json path to save the tuned grids to")
        outputs.write_text(target, json.dumps(
            {"format": FORMAT, "grids": [asdict(g) for g in self.grids]}, indent=1), kind=KIND)
        self.path = target
        return target

    def add(self, grid: TunedGrid) -> None:
        """Add ``grid``, replacing an entry with the same key."""
        self.grids = [g for g in self.grids if g.key() != grid.key()] + [grid]

    def matching(self, sampler: str, sde: SDE, options: dict[str, Any] | None = None,
                 guidance: dict[str, Any] | None = None) -> list[TunedGrid]:
        """Entries for ``sampler`` with exactly ``options`` under ``sde`` and ``guidance``
        (:func:`guidance_key`), by NFE."""
        want = _canonical(guidance) if guidance else None
        found = [g for g in self.matching_any_guidance(sampler, sde, options)
                 if (_canonical(g.guidance) if g.guidance else None) == want]
        return sorted(found, key=lambda g: g.nfe)

    def select(self, sampler: str, sde: SDE, options: dict[str, Any] | None = None, *,
               steps: int | None = None, nfe: int | None = None,
               guidance: dict[str, Any] | None = None) -> Tensor:
        """The grid for ``nfe`` (the tuned grid of the largest NFE ``<= nfe``) or, without
        ``nfe``, the one with ``steps`` intervals, fitted for ``guidance``
        (:func:`guidance_key`). A clear error lists what exists."""
        found = self.matching(sampler, sde, options, guidance)
        if nfe is not None:
            fits = [g for g in found if g.nfe <= nfe]
            chosen = fits[-1] if fits else None
        else:
            chosen = next((g for g in found if g.steps == steps), None)
        if chosen is None:
            have = ", ".join(f"{g.nfe} NFE ({g.steps} steps)" for g in found) or "none"
            others = sorted({_describe(g.guidance) for g in self.matching_any_guidance(
                sampler, sde, options)} - {_describe(guidance)})
            where = self.path or "this collection"
            want = f"nfe <= {nfe}" if nfe is not None else f"steps={steps}"
            hint = "" if guidance is None else (
                f" --class all --guidance {guidance['scale']:g}")
            raise ValueError(
                f"no tuned grid for {sampler} {_canonical(options) or ''} under {sde.name}, "
                f"{_describe(guidance)}, with {want} in {where} (tuned: {have}"
                + (f"; grids exist for {'; '.join(others)}" if others else "") + "); fit one "
                f"with `scoregen tune-grid ... --sampler {sampler} --nfe N{hint}`")
        return chosen.tensor()

    def matching_any_guidance(self, sampler: str, sde: SDE,
                              options: dict[str, Any] | None = None) -> list[TunedGrid]:
        """Entries for ``sampler`` with ``options`` under ``sde``, whatever their guidance."""
        opts, cfg = _canonical(options), sde.config()
        return [g for g in self.grids
                if g.sampler == sampler and _canonical(g.options) == opts and g.sde == cfg]


def as_grids(grids: TunedGrids | str | os.PathLike[str]) -> TunedGrids:
    """A :class:`TunedGrids` from itself or from a path (folder or ``.json``)."""
    return grids if isinstance(grids, TunedGrids) else TunedGrids.load(grids)


__all__ = ["FILENAME", "TunedGrid", "TunedGrids", "as_grids", "guidance_key"]
