"""Every file scoregen writes: atomically, never over a file it did not write, checked first.

The rules (docs/outputs.md) and the one mechanism behind each:

- **Atomic.** A file is written under a temporary name in its own folder
  (``.tmp-<pid>-<token>-<name>``, so the suffix and hence the format stay), flushed to disk
  (``fsync``) and renamed over the target (``os.replace``); the folder is synced after. A kill
  at any moment leaves the old file or the new one, never a torn one; a killed writer may
  leave a hidden temporary file, which the next write of the same target deletes
  (:func:`clean_temporaries`: only those of writers that are no longer running). A folder
  (a checkpoint) is written the same way: filled under a temporary name, then renamed.
- **Together.** Files that belong together (a sample plot and its ``.npz``, a report's JSON
  and markdown) are all written first, then renamed one after the other; the folder's record
  (below) notes the write (``pending``, with the new and the old SHA-256) before the renames
  and clears the note after, so a group that a kill left half replaced is reported
  (:func:`interrupted`) instead of passing silently.
- **Owned.** Each folder scoregen writes into keeps a record, :data:`RECORD`: for every file
  scoregen wrote there, the SHA-256 and size of what it wrote and its kind: ``"output"`` (a
  result a later command may replace) or another kind such as ``"run"`` (part of a training
  run: only a writer of that kind replaces it, a command output never). An existing file is
  written over only if the record lists it, with that kind and with the content it has now:
  a file the user wrote, or edited after scoregen wrote it, is never replaced, and
  :func:`remove_owned` deletes only recorded files whose content is unchanged. Append logs
  (which grow) are recorded by name. Deleting a record makes scoregen refuse more, never
  less. A folder can carry a tag (:func:`mark_folder`; a training run's folder is tagged
  ``"run"``): that, not the names of the files in it, is how scoregen recognises it.
- **Checked first.** :func:`check_target` is the pre-flight a command runs before its work:
  a supported suffix, not a folder, a parent that is (or can be made) a writable folder, not
  a reserved name, and the ownership rule. Write errors (a full disk, a read-only folder)
  become an :class:`OutputError` that names the target and says it is unchanged.

This module knows no domain: callers say which suffixes and kinds they write.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

RECORD = ".scoregen-outputs.json"
TMP = ".tmp-"
OLD = ".old-"
FORMAT = 1


class OutputError(ValueError):
    """An output cannot be written where asked; the message names the file and the fix."""


class InterruptedWriteWarning(UserWarning):
    """Files written together were left half replaced by a killed write."""


# -- the record ----------------------------------------------------------------------------------
def sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_record(folder: Path) -> dict[str, Any]:
    """The folder's record; an empty one when missing or unreadable (scoregen then owns
    nothing in the folder: refusing more, never less)."""
    try:
        raw = json.loads((folder / RECORD).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        raw = None
    if not (isinstance(raw, dict) and raw.get("format") == FORMAT
            and isinstance(raw.get("files"), dict)):
        return {"format": FORMAT, "files": {}}
    return raw


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    _replace_with(folder / RECORD, json.dumps(record, indent=1, sort_keys=True).encode())


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system syncs folders
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _tmp_name(name: str) -> str:
    return f"{TMP}{os.getpid()}-{secrets.token_hex(4)}-{name}"


def _replace_with(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, outside the record (the record itself)."""
    tmp = path.with_name(_tmp_name(path.name))
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[dict[str, Any]]:
    """The folder's record under an exclusive ``flock`` of the folder (one writer at a time
    updates it); the caller's changes to the yielded dict are written back."""
    fd = None
    with contextlib.suppress(ImportError, OSError):  # no flock here: one writer is the norm
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        record = _read_record(folder)
        before = json.dumps(record, sort_keys=True)
        yield record
        if json.dumps(record, sort_keys=True) != before:
            _write_record(folder, record)
    finally:
        if fd is not None:
            os.close(fd)  # releases the flock


def _state(path: Path, record: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(kind, problem)`` of an existing ``path``: the kind scoregen wrote it as and ``None``
    when it owns the file as it is now, else a reason why not."""
    entry = record["files"].get(path.name)
    where = path.parent / RECORD
    if not isinstance(entry, dict):
        return None, f"was not written by scoregen (there is no entry for it in {where})"
    kind = entry.get("kind")
    if entry.get("by_name"):
        return kind, None
    size = path.stat().st_size
    known = {entry.get("sha256"), entry.get("previous")} - {None}
    if (size == entry.get("bytes") or entry.get("pending")) and sha256(path) in known:
        return kind, None
    return kind, (f"was changed after scoregen wrote it (its content differs from the one "
                  f"recorded in {where})")


def owner(path: str | os.PathLike[str]) -> str | None:
    """The kind under which scoregen wrote ``path`` as it is now (``None``: not scoregen's:
    missing, never recorded, or changed since)."""
    path = Path(path)
    if not path.is_file():
        return None
    kind, problem = _state(path, _read_record(path.parent))
    return None if problem else kind


def mark_folder(folder: str | os.PathLike[str], tag: str,
                only: Sequence[str] | None = None) -> None:
    """Tag ``folder`` (created if needed) in its record, e.g. ``"run"``; ``only``: the kinds of
    file that may be written in it and below (a checkpoint folder takes no command output)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder) as record:
        record["folder"] = tag
        if only is not None:
            record["only"] = sorted(only)


def folder_tag(folder: str | os.PathLike[str]) -> str | None:
    """The tag :func:`mark_folder` gave ``folder`` (``None``: none, or no record)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    return _read_record(folder).get("folder")


def interrupted(folder: str | os.PathLike[str]) -> list[list[str]]:
    """Groups of files in ``folder`` that an interrupted write left mixed: some members
    replaced by the new write, others still the old files (each group by name)."""
    folder = Path(folder)
    files = _read_record(folder)["files"]
    mixed, seen = [], set()
    for name, entry in sorted(files.items()):
        group = entry.get("group") if isinstance(entry, dict) else None
        if not group or name in seen or not any(files.get(g, {}).get("pending") for g in group):
            continue
        seen.update(group)
        new = []
        for g in group:
            path, e = folder / g, files.get(g, {})
            new.append(path.is_file() and sha256(path) == e.get("sha256"))
        if any(new) and not all(new):
            mixed.append(sorted(group))
    return mixed


# -- the pre-flight ------------------------------------------------------------------------------
def _refuse_reserved(path: Path, what: str) -> None:
    if path.name == RECORD or path.name.startswith((TMP, OLD)):
        raise OutputError(f"{what} {path}: the name is reserved for scoregen's own bookkeeping "
                          "(records and temporary files); choose another name")


def _restricted(path: Path, kind: str, what: str) -> None:
    """Refuse ``kind`` below the nearest folder whose record restricts what it holds."""
    for folder in Path(os.path.abspath(path)).parents:
        if not (folder / RECORD).is_file():
            continue
        record = _read_record(folder)
        if "only" in record:
            if kind not in record["only"]:
                raise OutputError(
                    f"{what} {path} is inside {folder}, a scoregen {record.get('folder')} "
                    f"folder that holds only {' and '.join(record['only'])} files; choose a "
                    "location outside it")
            return


def _existing_ancestor(path: Path, what: str) -> Path:
    """The nearest existing ancestor of ``path``; an error when it is not a folder."""
    parent = path.parent
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{what} {path}: cannot create it, {parent} is a file, not a folder; "
                          "choose another location")
    return parent


def _check_writable(folder: Path, what: str, target: Path) -> None:
    """Create and delete a temporary file in ``folder``: the one test every file system and
    permission scheme answers truthfully."""
    probe = folder / _tmp_name("probe")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as err:
        raise OutputError(f"{what} {target}: cannot write in {folder} ({err.strerror}); "
                          "choose a folder you can write to") from None
    os.close(fd)
    probe.unlink(missing_ok=True)


def check_target(path: str | os.PathLike[str], suffixes: Sequence[str] | None = None, *,
                 what: str = "output", kind: str = "output") -> Path:
    """The pre-flight of an output file: raise :class:`OutputError` (naming ``what``, e.g.
    ``"--out"``, and the fix) unless ``path`` can be written as ``kind`` now.

    Checks: the suffix is one of ``suffixes`` (lower case, with the dot; ``None``: any), the
    name is not reserved, ``path`` is not a folder, its parent is a folder (or can be made one)
    that this process can write in, no folder above it takes only other kinds of file
    (:func:`mark_folder`), and an existing ``path`` is scoregen's, of ``kind``, with the
    content scoregen wrote. Creates nothing. Returns ``path`` as a :class:`Path`.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name inside it "
                          f"(e.g. {path / ('out' + (suffixes[0] if suffixes else ''))})")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        got = f"{path.suffix!r}" if path.suffix else "no suffix"
        raise OutputError(f"{what} {path}: scoregen writes {', '.join(suffixes)} files here, "
                          f"not {got}; give a name ending in one of them")
    _refuse_reserved(path, what)
    _restricted(path, kind, what)
    _check_writable(_existing_ancestor(path, what), what, path)
    if path.exists() or path.is_symlink():
        _check_owned(path, _read_record(path.parent), kind, what)
    return path


def check_folder(folder: str | os.PathLike[str], *, what: str = "output folder") -> Path:
    """The pre-flight of an output folder: not a file, and writable (or creatable)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file, not a folder; choose another location")
    _check_writable(folder if folder.is_dir() else _existing_ancestor(folder / "x", what),
                    what, folder)
    return folder


def _check_owned(path: Path, record: dict[str, Any], kind: str, what: str) -> None:
    if path.is_symlink() or not path.is_file():
        raise OutputError(f"{what} {path} exists and is not a regular file (a link or a "
                          "device); scoregen writes only over files it wrote; choose another "
                          "name")
    found, problem = _state(path, record)
    if problem is not None:
        raise OutputError(f"{what} {path} exists and {problem}; scoregen never writes over a "
                          "file it did not write: move it away, delete it, or choose another "
                          "name")
    if found != kind:
        raise OutputError(f"{what} {path} is a scoregen file of kind {found!r}, not {kind!r}: "
                          f"only a writer of {found!r} files replaces it; choose another name")


# -- writing -------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def clean_temporaries(folder: str | os.PathLike[str],
                      names: Sequence[str] | None = None) -> list[Path]:
    """Delete the temporary files and folders (``.tmp-<pid>-*``, ``.old-<pid>-*``) that
    writers which are no longer running left in ``folder``; ``names``: only those for these
    targets. A live writer's temporaries are never touched. Returns what was deleted."""
    found = []
    with contextlib.suppress(OSError):
        for p in Path(folder).iterdir():
            prefix = next((x for x in (TMP, OLD) if p.name.startswith(x)), None)
            if prefix is None:
                continue
            pid, _, rest = p.name[len(prefix):].partition("-")
            token, _, name = rest.partition("-")
            if (pid.isdigit() and len(token) == 8 and not _pid_alive(int(pid))
                    and (names is None or name in names)):
                found.append(p)
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
    return found


def _write_failed(targets: Sequence[Path], err: OSError) -> OutputError:
    names = " and ".join(str(t) for t in targets)
    cause = err.strerror or str(err)
    hint = {errno.ENOSPC: "free some space or write elsewhere",
            errno.EDQUOT: "free some space or write elsewhere",
            errno.EFBIG: "the file is larger than this system allows; write less or elsewhere",
            errno.EROFS: "choose a writable location",
            errno.EACCES: "choose a folder you can write to"}.get(err.errno or 0,
                                                                 "see the cause above")
    unchanged = "is unchanged" if len(targets) == 1 else "are unchanged"
    return OutputError(f"cannot write {names}: {cause}; {names} {unchanged} ({hint})")


@contextlib.contextmanager
def replacing(*paths: str | os.PathLike[str], kind: str = "output", by_name: bool = False,
              what: str | None = None) -> Iterator[list[Path]]:
    """Write files that belong together: yields one temporary path per target (same folder,
    same suffix); when the block ends normally they are synced, recorded and renamed over
    the targets, together (see the module docstring). If the block raises, the temporaries
    are deleted and the targets are untouched; an ``OSError`` (full disk, read-only folder)
    becomes an :class:`OutputError` naming the targets. The targets must share one folder
    (created if needed); existing ones must be scoregen's, of ``kind``. ``by_name``: record
    the files by name, not content (they change by design: see the module docstring).
    """
    targets = [Path(p) for p in paths]
    what = what or ("output" if kind == "output" else f"{kind} file")
    folder = targets[0].parent
    if any(t.parent != folder for t in targets) or len({t.name for t in targets}) < len(targets):
        raise ValueError("replacing(): the files of one group share one folder and differ")
    for t in targets:
        check_target(t, what=what, kind=kind)
    names = {t.name for t in targets}
    for group in interrupted(folder) if folder.is_dir() else ():
        if not set(group) <= names:  # rewriting the whole group resolves it: no warning then
            warn_interrupted(folder, [group])
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _write_failed(targets, err) from None
    clean_temporaries(folder, [t.name for t in targets] + [RECORD, "probe"])
    tmps = [folder / _tmp_name(t.name) for t in targets]
    try:
        yield tmps
        for tmp, target in zip(tmps, targets, strict=True):
            if not tmp.is_file():
                raise OutputError(f"the writer of {target} wrote nothing")
            _fsync_file(tmp)
        _commit(folder, tmps, targets, kind, by_name, what)
    except OSError as err:
        raise _write_failed(targets, err) from None
    finally:
        for tmp in tmps:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def _commit(folder: Path, tmps: list[Path], targets: list[Path], kind: str, by_name: bool,
            what: str) -> None:
    """Record, rename, clear the note: the second half of :func:`replacing`."""
    new = [{"kind": kind, "bytes": tmp.stat().st_size,
            **({"by_name": True} if by_name else {"sha256": sha256(tmp)})} for tmp in tmps]
    group = [t.name for t in targets] if len(targets) > 1 else None
    with _locked(folder) as record:
        for target, entry in zip(targets, new, strict=True):
            if target.exists() or target.is_symlink():
                _check_owned(target, record, kind, what)  # again, under the lock
                if not by_name:
                    entry["previous"] = sha256(target)
            if group:
                entry["group"] = group
            record["files"][target.name] = {**entry, "pending": True}
        _write_record(folder, record)  # the note: a replacement in progress
        for tmp, target in zip(tmps, targets, strict=True):
            os.replace(tmp, target)
        _fsync_folder(folder)
        for target in targets:
            record["files"][target.name].pop("pending")
            record["files"][target.name].pop("previous", None)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, kind: str = "output",
                by_name: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically, as scoregen's (see :func:`replacing`)."""
    with replacing(path, kind=kind, by_name=by_name) as (tmp,):
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, *, kind: str = "output",
               by_name: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, as scoregen's."""
    return write_bytes(path, text.encode(), kind=kind, by_name=by_name)


def open_log(path: str | os.PathLike[str], header: str, *, kind: str = "run") -> int:
    """A file descriptor that appends to the log ``path``: created atomically with ``header``
    (one line) if missing, else it must be scoregen's log of ``kind``.

    What atomic means for a log: the header appears whole with the file; each row is then one
    ``os.write`` of a whole line to a file opened with ``O_APPEND``, so a kill leaves complete
    rows and at most a torn last row (which the log's reader drops). Close with ``os.close``.
    """
    path = Path(path)
    if not path.exists():
        with replacing(path, kind=kind, by_name=True) as (tmp,):
            tmp.write_text(header.rstrip("\n") + "\n")
    else:
        _check_owned(path, _read_record(path.parent), kind, "log")
    return os.open(path, os.O_WRONLY | os.O_APPEND)


@contextlib.contextmanager
def replacing_folder(path: str | os.PathLike[str], *, kind: str = "run") -> Iterator[Path]:
    """Write a folder atomically: yields an empty temporary folder beside ``path`` to fill
    (with :func:`replacing` writes, so its files are recorded); when the block ends it is
    renamed to ``path``. An existing ``path`` must hold only files scoregen wrote as ``kind``;
    it is moved aside first and its files removed after (:func:`remove_owned`)."""
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / _tmp_name(path.name)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if path.exists():
            kept = [p for p in path.rglob("*") if p.is_file() and p.name != RECORD
                    and owner(p) is None]
            if kept:
                raise OutputError(f"cannot replace {path}: it holds files scoregen did not "
                                  f"write ({', '.join(str(p) for p in kept[:3])}); move them "
                                  "away")
            old = parent / f"{OLD}{os.getpid()}-{secrets.token_hex(4)}-{path.name}"
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_folder(parent)
        if old is not None:
            remove_owned(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# -- removing ------------------------------------------------------------------------------------
def remove_owned(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete what scoregen wrote in ``folder`` and below: recorded files whose content is
    unchanged (those recorded by name whatever they hold), then each folder left holding
    nothing but its record. Returns the files left in place because scoregen did not write
    them (or they changed since)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    kept: list[Path] = []
    record = _read_record(folder)
    for p in sorted(folder.iterdir()):
        if p.is_dir() and not p.is_symlink():
            kept += remove_owned(p)
        elif p.name == RECORD:
            continue
        elif (p.is_file() and not p.is_symlink() and p.name in record["files"]
              and _state(p, record)[1] is None):
            p.unlink()
            record["files"].pop(p.name, None)
        else:
            kept.append(p)
    if not (folder / RECORD).exists():
        return kept
    if not [p for p in folder.iterdir() if p.name != RECORD]:
        (folder / RECORD).unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()
    else:
        with _locked(folder) as current:
            current["files"] = {k: v for k, v in current["files"].items()
                                if (folder / k).exists()}
    return kept


def warn_interrupted(folder: str | os.PathLike[str],
                     groups: list[list[str]] | None = None) -> None:
    """Warn (:class:`InterruptedWriteWarning`) about half-replaced groups in ``folder``
    (``groups``: those of :func:`interrupted`, found again when ``None``)."""
    for group in interrupted(folder) if groups is None else groups:
        warnings.warn(f"{' and '.join(str(Path(folder) / g) for g in group)} come from "
                      "different writes: a write that replaces them together was killed "
                      "half-way; write them again", InterruptedWriteWarning, stacklevel=2)


__all__ = [
    "OLD",
    "RECORD",
    "TMP",
    "InterruptedWriteWarning",
    "OutputError",
    "check_folder",
    "check_target",
    "clean_temporaries",
    "folder_tag",
    "interrupted",
    "mark_folder",
    "open_log",
    "owner",
    "remove_owned",
    "replacing",
    "replacing_folder",
    "sha256",
    "warn_interrupted",
    "write_bytes",
    "write_text",
]
