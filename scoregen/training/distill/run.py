"""``distill``: a student from a teacher, stage by stage, in a run folder that never loses work.

The student's folder follows the rules of a training run (:mod:`scoregen.training.run_folder`):
an exclusive lock for the whole distillation; a fresh student refuses a folder that already
holds a student or a run (``resume`` continues it, ``overwrite`` deletes the student's own
entries first, never other files); ``student.json`` is rewritten atomically after every stage,
so a kill at any moment leaves a record of the stages done. ``resume`` skips them, resumes the
interrupted training stage from its newest checkpoint (bit-identical to an uninterrupted run)
and redoes an interrupted generation or tuning (deterministic); it refuses another method,
other method options or another teacher (content hash or preset, :mod:`.teacher`).

``time_limit`` (seconds) bounds the whole call: each training stage gets the time left in
proportion to its steps among the training stages left, stops at its share with a checkpoint
and counts as done, so the student is complete (and samples) when the limit is reached;
pairs and tuning are not cut short but count against the time left. ``cpu_limit`` is the same
budget in CPU time of the process, for machines shared with other work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from scoregen.infra import outputs
from scoregen.infra.version import __version__
from scoregen.models.prediction import Model
from scoregen.sde.base import SDE
from scoregen.training.distill.methods import Context, build_method, method_options
from scoregen.training.distill.student import (
    FORMAT,
    Student,
    StudentError,
    is_student,
    load_student,
    read_record,
    write_record,
)
from scoregen.training.distill.teacher import (
    STUDENT_FILE,
    check_same_teacher,
    resolve_teacher,
)

STUDENT_TAG = "student"  # the folder tag of a student in its record of outputs


def distill(teacher: str | Path | Model, method: str = "consistency",
            out: str | Path = "runs/student", *, sde: str | SDE | None = None,
            options: dict[str, Any] | None = None, overrides: Sequence[str] = (),
            steps: int | None = None, time_limit: float | None = None,
            cpu_limit: float | None = None, resume: bool = False,
            overwrite: bool = False, break_lock: bool = False, progress: bool = True,
            device: str = "cpu", say: Callable[[str], Any] | None = print) -> Student:
    """Distil ``teacher`` into a few-step student in the folder ``out``; returns the student.

    Args:
        teacher: a run or checkpoint folder, an exact preset (``ring8``, ``mix64``, ...), a
            ``module:function`` spec, or a model (:mod:`scoregen.training.distill.teacher`).
        method: ``progressive``, ``consistency``, ``consistency-training`` or ``reflow``
            (:mod:`scoregen.training.distill.methods`).
        sde: the process of a preset teacher (default ``vp``); re-targets another teacher.
        options: the method's options (e.g. ``{"start_steps": 32}``), checked against it.
        overrides: ``section.key=value`` settings of every training stage's config (e.g.
            ``train.lr=1e-4``, ``model.width=128``, ``objective.target_ema=0``).
        steps: optimizer steps of each training stage (``train.steps``).
        time_limit: wall-clock seconds for the whole call (module docstring).
        cpu_limit: the same in CPU seconds of this process (``time.process_time``, all
            threads): a budget that does not depend on what else the machine runs.
        resume, overwrite, break_lock: the run-folder rules (module docstring).
        say: where progress lines go (``None``: nowhere).

    Example::

        student = scoregen.distill("ring8", "consistency", "runs/ring8_cd", sde="vp")
        x = scoregen.sample(student, student.sde, (1000, 2), nfe=2).x
    """
    from scoregen.training.run_folder import RUN_FILES, RunFolderError, RunLock

    say = say or (lambda _: None)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("distillation runs in one process: run it without torchrun (its "
                         "stages are small; the comparison of its students shards under "
                         "torchrun)")
    out = Path(out)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the student, or "
                         "replace it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"student folder {out} is a file; choose another --out folder")
    for name, limit in (("time_limit", time_limit), ("cpu_limit", cpu_limit)):
        if limit is not None and not limit > 0:
            raise ValueError(f"{name} must be > 0 seconds, got {limit!r}")
    if time_limit is not None and cpu_limit is not None:
        raise ValueError("give a wall-clock time_limit or a cpu_limit, not both")
    found = resolve_teacher(teacher, sde=sde, device=device)
    chosen = build_method(method, **(options or {}))
    full_options = {**method_options(method), **(options or {})}
    overrides = [*overrides, *([f"train.steps={steps}"] if steps is not None else [])]
    lock = RunLock(out).acquire(break_stale=break_lock)
    try:
        old = read_record(out) if is_student(out) else None
        if old is not None and not (resume or overwrite):
            raise RunFolderError(f"{out} already holds a student ({old['method']}); continue it "
                                 "with --resume, replace it with --overwrite, or choose another "
                                 "--out folder")
        if old is None and any((out / name).exists() for name in RUN_FILES):
            raise RunFolderError(f"{out} holds a training run, not a student; choose another "
                                 "--out folder")
        if old is not None and outputs.folder_tag(out) != STUDENT_TAG:
            raise RunFolderError(f"{out} holds a {STUDENT_FILE} that scoregen did not write as a "
                                 "student (its folder record has no student tag); scoregen never "
                                 "uses or replaces files it did not write: choose another --out")
        if old is not None and overwrite:
            _delete_student(out)
            old = None
        student_sde = chosen.student_sde(found)
        shape = found.shape
        ctx = Context(found, out, student_sde, tuple(shape) if shape else (), overrides,
                      progress, device)
        if not shape:
            ctx.shape = tuple(ctx.data().shape[1:])
        stages = chosen.stages(ctx)  # every stage's config is built (and checked) here
        if old is not None:
            _check_resume(old, method, full_options, found, out)
            record = old
            say(f"resuming student {out}: "
                + ", ".join(f"{s['name']} {s['status']}" for s in record["stages"]))
        else:
            record = {"format": FORMAT, "method": method, "options": full_options,
                      "overrides": overrides, "teacher": found.identity,
                      "teacher_name": found.name, "sde": student_sde.config(),
                      "shape": list(ctx.shape), "versions": {"scoregen": __version__,
                                                            "torch": torch.__version__},
                      "stages": [{"name": s.name, "kind": s.kind, "depends": s.depends,
                                  "status": "pending"} for s in stages],
                      "sampling": {"entries": [], "rule": None}}
            outputs.mark_folder(out, STUDENT_TAG)
            write_record(out, record)
        status = {s["name"]: s for s in record["stages"]}
        if time_limit is not None:
            ctx.deadline = ctx.clock() + time_limit
        elif cpu_limit is not None:
            ctx.clock = time.process_time
            ctx.deadline = ctx.clock() + cpu_limit
        ctx.remaining_steps = lambda: sum(s.steps for s in stages if s.kind == "train"
                                          and status[s.name]["status"] != "done")
        for stage in stages:
            info = status[stage.name]
            if info["status"] == "done":
                continue
            say(f"{method}: stage {stage.name} ({stage.kind}) of {out}")
            info["status"] = "running"
            write_record(out, record)
            cpu = time.process_time()
            info.update(stage.run())
            info["cpu_seconds"] = info.get("cpu_seconds", 0.0) + time.process_time() - cpu
            info["status"] = "done"
            write_record(out, record)
            if info.get("stopped"):
                say(f"  {stage.name} stopped at step {info['steps']} ({info['stopped']})")
        record["sampling"] = chosen.sampling(ctx, record)
        write_record(out, record)
    finally:
        lock.release()
    student = load_student(out, device)
    say(f"student {out}: samples at {', '.join(map(str, student.nfes()))} NFE"
        + (" (and any NFE by its rule)" if record["sampling"].get("rule") else ""))
    return student


def _check_resume(old: dict[str, Any], method: str, options: dict[str, Any], teacher: Any,
                  out: Path) -> None:
    if old["method"] != method:
        raise StudentError(f"{out} is a {old['method']} student; resume it with --method "
                           f"{old['method']} (or --overwrite to make a {method} student)")
    diffs = [f"{k}: {old['options'].get(k)!r} -> {v!r}" for k, v in options.items()
             if old["options"].get(k) != v]
    if diffs:
        raise StudentError(f"{out} was made with other method options ({'; '.join(diffs)}); "
                           "resume with the same --opt values, or --overwrite")
    check_same_teacher(old["teacher"], teacher, out)


def _delete_student(out: Path) -> None:
    """Delete what scoregen wrote for the student (its record, stage folders and pairs, with
    the content scoregen wrote: :func:`scoregen.infra.outputs.remove_owned`), nothing else."""
    outputs.remove_owned(out)
    outputs.mark_folder(out, STUDENT_TAG)


__all__ = ["distill"]
