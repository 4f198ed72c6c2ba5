"""A student: a run folder whose ``student.json`` says what it was distilled from, how, what
it cost, and how it samples at each NFE.

::

    STUDENT/student.json                 the record (below), written atomically
    STUDENT/.lock                        held while `scoregen distill` works on it
    STUDENT/<stage>/                     one training run folder per training stage
                                         (config.yaml, log.csv, checkpoints/, samples/)
    STUDENT/pairs_<stage>.safetensors    coupled pairs of a reflow stage

``student.json`` holds ``method`` and ``options``; ``teacher`` (its identity:
:mod:`.teacher`); ``sde`` and ``shape``; ``stages`` in order, each with its ``kind``
(``train``, ``pairs``, ``tune``), ``status`` (``pending``, ``running``, ``done``), the stages
it builds on (``depends``) and its cost (``teacher_rows``: teacher network evaluations summed
over examples; ``steps``: optimizer steps; ``seconds``: wall time of the training or
generation; ``cpu_seconds``: CPU time of the process over the whole stage, all threads, of the
call that finished it); and ``sampling``: the
student's own way to sample, a list of ``entries`` (``nfe``, the ``stage`` whose model
samples, the registered ``sampler``, the grid ``ts``, the stages whose cost it counts,
``uses``) and optionally a ``rule`` that serves any
NFE from ``from_nfe`` on (a reflowed flow with ``k`` Euler steps). Every entry costs one
network evaluation per step, so its NFE is its step count.

:class:`Student` is what ``scoregen.sample`` and ``scoregen compare`` take:
:meth:`Student.sampling_plan` turns an NFE budget (the largest NFE that fits, as for samplers)
or an exact step count into a model, a sampler and a grid, and refuses what it cannot honour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scoregen.models.prediction import Model
from scoregen.sde.base import SDE
from scoregen.training.distill.teacher import STUDENT_FILE

FORMAT = 1


class StudentError(ValueError):
    """A student folder that cannot be read or used as asked; the message says why."""


@dataclass
class SamplingPlan:
    """How a student samples at one NFE: ``model`` with the registered ``sampler`` on ``ts``."""

    model: Model
    sampler: str
    ts: Tensor
    nfe: int
    stage: str
    deterministic: bool
    options: dict[str, Any] = field(default_factory=dict)
    uses: list[str] = field(default_factory=list)  # the stages its cost counts (with theirs)


def euler_ts(sde: SDE, k: int) -> list[float]:
    """``k`` uniform steps from ``T`` to ``0`` (the Euler grid of a rectified flow)."""
    return [sde.T * (k - i) / k for i in range(k + 1)]


class Student:
    """A distilled student (module docstring), loaded from its folder.

    ``sde`` and ``shape`` are the student's process and event shape; ``sampling_plan(steps=,
    nfe=)`` is what :func:`scoregen.sample` calls; ``nfes()`` lists the NFEs it samples at
    exactly; ``cost(stage)`` sums the cost of a stage and of every stage it builds on.
    """

    def __init__(self, path: str | Path, record: dict[str, Any],
                 device: str | torch.device = "cpu") -> None:
        from scoregen.sde import from_config

        self.path = Path(path)
        self.record = record
        self.device = device
        self.sde = from_config(record["sde"])
        self.shape = tuple(record["shape"])
        self.method = record["method"]
        self._models: dict[str, Model] = {}

    @property
    def name(self) -> str:
        return f"{self.method} ({self.path})"

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.record["stages"]}

    def nfes(self) -> list[int]:
        """The NFEs of the recorded entries (a ``rule`` serves more: :meth:`sampling_plan`)."""
        return sorted({int(e["nfe"]) for e in self.record["sampling"]["entries"]})

    def model_of(self, stage: str) -> Model:
        """The EMA model of a training stage (loaded once)."""
        if stage not in self._models:
            from scoregen.training.checkpoint import load_model

            info = self.stages.get(stage)
            if info is None or info["status"] != "done":
                raise StudentError(f"stage {stage!r} of {self.path} is not done; finish the "
                                   f"student with `scoregen distill ... --out {self.path} "
                                   "--resume`")
            self._models[stage] = load_model(self.path / stage, ema=True, device=self.device)
        return self._models[stage]

    def _entry(self, steps: int | None, nfe: int | None) -> tuple[dict[str, Any], int]:
        sampling = self.record["sampling"]
        entries = {int(e["nfe"]): e for e in sampling["entries"]}
        rule = sampling.get("rule")
        offered = ", ".join(map(str, sorted(entries))) + (
            f", and any NFE from {rule['from_nfe']} on" if rule else "")
        if (steps is None) == (nfe is None):
            raise StudentError(f"give the student an NFE budget (nfe=) or an exact step count "
                               f"(steps=), one of them; {self.name} samples at {offered} NFE")
        if nfe is not None:
            if not (isinstance(nfe, int) and nfe >= 1):
                raise StudentError(f"an NFE budget must be an integer >= 1, got {nfe!r}")
            fits = [k for k in entries if k <= nfe] + ([nfe] if rule and nfe >= rule["from_nfe"]
                                                      else [])
            if not fits:
                raise StudentError(f"{self.name} cannot sample within {nfe} NFE: it samples at "
                                   f"{offered} NFE")
            k = max(fits)
        else:
            k = steps
            if not (k in entries or (rule is not None and k >= rule["from_nfe"])):
                raise StudentError(f"{self.name} cannot sample with exactly {k} steps: it "
                                   f"samples at {offered} NFE (give nfe={k} for the largest "
                                   "that fits)")
        if k in entries:
            return entries[k], k
        return {"nfe": k, "stage": rule["stage"], "sampler": rule["sampler"],
                "ts": euler_ts(self.sde, k), "deterministic": True}, k

    def sampling_plan(self, steps: int | None = None, nfe: int | None = None) -> SamplingPlan:
        """The model, sampler and grid for an NFE budget ``nfe`` (the largest NFE the student
        offers within it) or exactly ``steps`` steps; a :class:`StudentError` naming what it
        offers otherwise."""
        entry, k = self._entry(steps, nfe)
        return SamplingPlan(self.model_of(entry["stage"]), entry["sampler"],
                            torch.tensor(entry["ts"], dtype=torch.float64), k, entry["stage"],
                            bool(entry["deterministic"]), dict(entry.get("options", {})),
                            list(entry.get("uses", [entry["stage"]])))

    def cost(self, *stage: str) -> dict[str, float]:
        """``teacher_rows``, ``steps``, ``seconds`` and ``cpu_seconds`` of the stages named and
        those they build on (transitively): what it took to make what samples (a plan's
        ``uses``)."""
        stages, seen, todo = self.stages, set(), list(stage)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += stages[name].get("depends", [])
        out = {"teacher_rows": 0.0, "steps": 0.0, "seconds": 0.0, "cpu_seconds": 0.0}
        for name in seen:
            for key in out:
                out[key] += float(stages[name].get(key, 0) or 0)
        return out


def is_student(path: str | Path) -> bool:
    """Whether ``path`` is a student folder (holds ``student.json``)."""
    return (Path(path) / STUDENT_FILE).is_file()


def read_record(path: str | Path) -> dict[str, Any]:
    """``student.json`` of a student folder, checked."""
    file = Path(path) / STUDENT_FILE
    if not file.is_file():
        raise StudentError(f"{path} is not a student (no {STUDENT_FILE}); make one with "
                           "`scoregen distill TEACHER --method ... --out FOLDER`")
    try:
        record = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StudentError(f"cannot read {file}: {err}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or "sampling" not in record:
        raise StudentError(f"{file} is not a scoregen student record (format {FORMAT})")
    return record


def write_record(path: str | Path, record: dict[str, Any]) -> None:
    """Write ``student.json`` atomically, as a file of the student folder
    (:func:`scoregen.infra.outputs.write_text`, kind ``student``)."""
    from scoregen.infra import outputs

    outputs.write_text(Path(path) / STUDENT_FILE, json.dumps(record, indent=1), kind="student")


def load_student(path: str | Path, device: str | torch.device = "cpu") -> Student:
    """The :class:`Student` in folder ``path``; it must be complete (every stage done)."""
    record = read_record(path)
    pending = [s["name"] for s in record["stages"] if s["status"] != "done"]
    if pending:
        raise StudentError(f"student {path} is not finished (stages {', '.join(pending)} are "
                           f"not done); continue it with `scoregen distill ... --out {path} "
                           "--resume`")
    return Student(path, record, device)


__all__ = ["FORMAT", "SamplingPlan", "Student", "StudentError", "euler_ts", "is_student",
           "load_student", "read_record", "write_record"]
