"""Run folders that never lose work: the lock, fresh/resume/overwrite, resume checks.

A run folder (``train.out``) belongs to one run at a time, and its files to that run:

- **Lock.** ``RUN/.lock`` is created with ``O_CREAT | O_EXCL`` (atomic on POSIX file
  systems) and holds the owner's pid, host and start time as JSON; it is removed when the
  owner finishes (normally, by an exception or Ctrl-C). A second process is refused with a
  message naming the owner. A lock whose owner is no longer running on this host (a run
  killed with SIGKILL, an out-of-memory kill) is recognised as stale and reported with the
  fix (``--break-lock``, or deleting the file); a lock from another host cannot be checked
  and is reported as such.
- **Whose folder** (:func:`claim`). A run folder is recognised by the tag ``run`` in its
  record of outputs (:mod:`scoregen.infra.outputs`), which scoregen writes when a run starts
  in the folder; the names of the files in it prove nothing. A folder without the tag that
  holds entries named like a run's (``checkpoints``, ``log.csv``, ``config.yaml``,
  ``samples``, post-hoc EMA ``ema_snapshots`` or reconstructions ``ema``) is not scoregen's
  and is refused in every mode: nothing in it is used, replaced or deleted.
- **Fresh, resume, overwrite** (:func:`prepare`). A fresh run refuses a run folder that
  already holds a run; ``resume`` continues from its newest checkpoint (and starts fresh in a
  folder without one); ``overwrite`` deletes the files scoregen wrote in it (with the content
  it wrote: :func:`scoregen.infra.outputs.remove_owned`) and nothing else.
- **Leftovers.** Temporary ``.tmp-*`` / ``.old-*`` entries that a killed writer left in
  ``checkpoints/`` and the run folder are deleted when the lock is taken (only the lock
  holder writes there).
- **Resume checks** (:func:`compare_model_configs`, :func:`config_changes`). The model
  config stored in the checkpoint (network and its options, data shape, prediction,
  ``sigma_data``, SDE and its parameters) must equal the one the new config builds, or the
  resume is refused naming the field: the weights would be relabelled. Other keys (steps,
  lr, ckpt_every, batch size, loss, ...) may change; the changes are reported.
- **log.csv** (:func:`truncate_log`) keeps only the rows up to the step a run starts from,
  so a resumed run never has duplicate or stale rows (rewritten atomically, as every file).
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from scoregen.infra import outputs

LOCK = ".lock"
RUN_FILES = ("checkpoints", "log.csv", "config.yaml", "samples", "ema_snapshots", "ema")
MODES = ("fresh", "resume", "overwrite")


class RunFolderError(ValueError):
    """A run folder cannot be used as asked; the message says why and what to do."""


# -- the lock ------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder (``RUN/.lock``); see the module docstring.

    ``acquire()`` raises :class:`RunFolderError` when another process holds the lock;
    ``break_stale=True`` takes over a lock whose owner is no longer running on this host.
    Usable as a context manager; ``release()`` is idempotent.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK
        self.held = False

    def acquire(self, break_stale: bool = False) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_break(break_stale)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh)
            self.held = True
            atexit.register(self.release)  # also when the owner forgets to release it
            return self
        raise RunFolderError(f"could not take the lock {self.path}; try again")

    def owner(self) -> dict[str, Any]:
        """The lock file's contents (``{}`` if unreadable)."""
        try:
            info = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def _refuse_or_break(self, break_stale: bool) -> None:
        info = self.owner()
        pid, host = info.get("pid"), info.get("host")
        run = self.path.parent
        if not isinstance(pid, int) or host is None:
            state = "unreadable"
            stale = True
        elif host != socket.gethostname():
            raise RunFolderError(
                f"run folder {run} is locked by pid {pid} on host {host} (since "
                f"{info.get('started', '?')}), which cannot be checked from here; if no "
                f"scoregen process runs there, delete {self.path}")
        elif _pid_alive(pid):
            if pid == os.getpid():
                raise RunFolderError(f"run folder {run} is already locked by this process")
            raise RunFolderError(
                f"run folder {run} is in use by another scoregen process (pid {pid} on {host}, "
                f"since {info.get('started', '?')}); wait for it to finish, or use another "
                "--out folder")
        else:
            state = f"left by pid {pid} on {host}, which is no longer running"
            stale = True
        if stale and not break_stale:
            raise RunFolderError(
                f"run folder {run} has a stale lock ({state}; a killed run); if no other "
                f"training uses it, pass --break-lock (or delete {self.path}) and try again")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def release(self) -> None:
        if self.held:
            self.held = False
            if self.owner().get("pid") == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()

    def __enter__(self) -> RunLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- fresh / resume / overwrite -----------------------------------------------------------------
def run_files(run_dir: Path) -> list[Path]:
    """The entries of ``run_dir`` named like those a training run writes (:data:`RUN_FILES`)."""
    return [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]


def is_run(run_dir: Path) -> bool:
    """Whether scoregen tagged ``run_dir`` as a run folder (see the module docstring)."""
    return outputs.folder_tag(run_dir) == "run"


def clean_leftovers(run_dir: Path) -> list[Path]:
    """Delete temporary ``.tmp-*`` / ``.old-*`` entries that killed writers left in the run
    folder and its ``checkpoints/`` (:func:`scoregen.infra.outputs.clean_temporaries`: only
    those of processes no longer running); returns them."""
    return [p for folder in (run_dir / "checkpoints", run_dir / "ema_snapshots", run_dir)
            for p in outputs.clean_temporaries(folder)]


def claim(run_dir: Path) -> None:
    """Make ``run_dir`` a run folder unless it is one: refused when it holds entries named like
    a run's that scoregen did not tag as a run (see the module docstring)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} is a file; choose another --out folder")
    if is_run(run_dir):
        return
    found = run_files(run_dir)
    if found:
        names = ", ".join(p.name for p in found)
        raise RunFolderError(
            f"{run_dir} holds {names} but is not a scoregen run folder (scoregen tags the "
            f"folders of its runs in {run_dir / outputs.RECORD}); scoregen never uses, replaces "
            "or deletes files it did not write: choose another --out folder, or move those "
            "entries away")
    outputs.mark_folder(run_dir, "run")


def prepare(run_dir: Path, mode: str) -> list[Path]:
    """Apply the ``fresh`` / ``resume`` / ``overwrite`` rule to ``run_dir`` (lock held);
    returns the files that ``overwrite`` left in place because scoregen did not write them."""
    if mode not in MODES:
        raise ValueError(f"run folder mode must be one of {', '.join(MODES)}, got {mode!r}")
    was_run = is_run(run_dir)
    claim(run_dir)
    existing = run_files(run_dir) if was_run else []
    if mode == "fresh" and existing:
        names = ", ".join(p.name for p in existing)
        raise RunFolderError(
            f"run folder {run_dir} already holds a run ({names}); continue it with --resume, "
            "replace it with --overwrite, or choose another --out folder")
    if mode == "overwrite" and existing:
        kept = [p for p in outputs.remove_owned(run_dir) if p.name != LOCK]
        outputs.mark_folder(run_dir, "run")
        return kept
    return []


def _checkpoint_folders(run_dir: Path) -> list[Path]:
    """The ``step_*`` folders of ``run_dir/checkpoints`` that hold a checkpoint, by name."""
    return sorted(p for p in (run_dir / "checkpoints").glob("step_*")
                  if (p / "checkpoint.json").is_file())


def has_checkpoints(run_dir: Path) -> bool:
    """Whether ``run_dir/checkpoints`` holds a ``LATEST`` file or a checkpoint folder."""
    return (run_dir / "checkpoints" / "LATEST").exists() or bool(_checkpoint_folders(run_dir))


def check_writer(run_dir: Path, own: Path | None) -> None:
    """Refuse to write into a run folder whose newest checkpoint belongs to another run.

    ``own``: the checkpoint this trainer resumed from or wrote last (``None``: none). Saving
    next to another run's checkpoints would prune or overwrite them.
    """
    if not has_checkpoints(run_dir):
        return
    steps = _checkpoint_folders(run_dir)
    if own is not None and own.resolve().parent == (run_dir / "checkpoints").resolve():
        return
    what = steps[-1].name if steps else "a LATEST file"
    raise RunFolderError(
        f"run folder {run_dir} holds checkpoints of another run (newest {what}); resume from "
        "it, delete them (--overwrite in `scoregen train`), or choose another folder")


# -- resume checks -------------------------------------------------------------------------------
def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _config_key(model_key: str) -> str:
    """Name of the config field behind a key of :meth:`ScoreModel.config`."""
    head, _, rest = model_key.partition(".")
    if head == "network":
        return {"name": "model.network", "shape": "data shape"}.get(rest, f"model.{rest}")
    if head == "sde":
        return "sde.name" if rest == "name" else f"sde.{rest}"
    return f"model.{head}"


def compare_model_configs(saved: dict[str, Any], new: dict[str, Any], source: Path) -> None:
    """Raise :class:`RunFolderError` unless the model configs agree; names each field."""
    a, b = _flat(saved), _flat(new)
    diffs = [f"{_config_key(k)}: checkpoint has {a.get(k, '(unset)')!r}, "
             f"config gives {b.get(k, '(unset)')!r}"
             for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diffs:
        raise RunFolderError(
            f"cannot resume from {source}: the config changes what the weights mean ("
            + "; ".join(diffs) + "); keep these fields as they were, or train into another "
            "folder (or --overwrite)")


def config_changes(saved: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every run-config key that differs (allowed on resume)."""
    if not saved:
        return []
    a, b = _flat(saved), _flat(new)
    return [f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# -- log.csv -------------------------------------------------------------------------------------
def truncate_log(path: Path, step: int) -> int:
    """Drop the rows of ``log.csv`` past ``step`` (atomically); returns how many."""
    if not path.is_file():
        return 0
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return 0
    keep = [rows[0]]
    for row in rows[1:]:
        with contextlib.suppress(ValueError):  # a torn last line of a killed run is dropped
            if len(row) == len(rows[0]) and int(row[0]) <= step:
                keep.append(row)
    dropped = len(rows) - len(keep)
    if dropped:
        with outputs.replacing(path, kind="run", by_name=True) as (tmp,), \
                open(tmp, "w", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerows(keep)
    return dropped


__all__ = [
    "LOCK",
    "MODES",
    "RUN_FILES",
    "RunFolderError",
    "RunLock",
    "check_writer",
    "claim",
    "clean_leftovers",
    "compare_model_configs",
    "config_changes",
    "has_checkpoints",
    "is_run",
    "prepare",
    "run_files",
    "truncate_log",
]
