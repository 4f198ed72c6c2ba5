"""``.npz`` files: written with reproducible bytes, read with an error that names the cause.

Writing (:func:`save_npz`): ``numpy.savez`` with a fixed timestamp in the zip headers, so
equal arrays give equal bytes (the caller writes to a temporary file of
:func:`scoregen.infra.outputs.replacing`).

Reading a file a user gave (:func:`open_npz`, :func:`read_array`, :func:`check_finite`):
never unpickles (``allow_pickle=False``), and each failure is told apart and named with the
file: a missing file, a folder, a single ``.npy`` array, a file whose header is not a zip
archive's, a damaged archive, an array of Python objects, an array too large for memory
(with its size), NaN or infinite values (how many). Errors are :class:`NpzError`.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
NPY_MAGIC = b"\x93NUMPY"


class NpzError(ValueError):
    """An ``.npz`` file cannot be used; the message names the file and the cause."""


def save_npz(path: str | Path, **arrays: Any) -> None:
    """``numpy.savez`` with a fixed timestamp in the zip headers: equal arrays, equal bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                        buf.getvalue())


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"


def open_npz(path: str | Path, what: str) -> Any:
    """The opened archive (a ``numpy`` ``NpzFile``; use it in a ``with``) after checking that
    ``path`` is an ``.npz`` file. ``what`` names the input in errors (e.g. ``"--inpaint"``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    if path.is_dir():
        raise NpzError(f"{what}: {path} is a folder, not an .npz file")
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head.startswith(NPY_MAGIC):
        raise NpzError(f"{what}: {path} is a single .npy array, not an .npz archive; write it "
                       "with numpy.savez(path, x=array)")
    if not head.startswith(ZIP_MAGIC):
        got = "the file is empty" if not head else f"it starts with {head[:4]!r}"
        raise NpzError(f"{what}: {path} is not an .npz file (bad header: an .npz is a zip "
                       f"archive, but {got}); write it with numpy.savez")
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise NpzError(f"{what}: {path} is a damaged .npz archive (truncated or corrupt: "
                       f"{err}); write it again with numpy.savez") from None


def read_array(npz: Any, key: str, what: str) -> np.ndarray:
    """Array ``key`` of an archive from :func:`open_npz`, with errors naming the cause."""
    path = getattr(npz, "fid", None)
    name = getattr(path, "name", "the .npz file")
    try:
        return npz[key]
    except ValueError as err:
        if "pickle" in str(err):
            raise NpzError(f"{what}: array {key!r} in {name} holds Python objects (it would "
                           "need unpickling, which scoregen never does); store numbers") from None
        raise NpzError(f"{what}: array {key!r} in {name} is damaged ({err})") from None
    except MemoryError:
        info = npz.zip.getinfo(f"{key}.npy")
        raise NpzError(f"{what}: array {key!r} in {name} is too large for this machine's "
                       f"memory ({_size(info.file_size)}); use a smaller file") from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise NpzError(f"{what}: array {key!r} in {name} is damaged (truncated or corrupt: "
                       f"{err})") from None


def pick_key(npz: Any, keys: tuple[str, ...], what: str, ignore: tuple[str, ...] = ()) -> str:
    """The first of ``keys`` in the archive, else its only array (not counting ``ignore``)."""
    files = list(npz.files)
    found = next((k for k in keys if k in files), None)
    rest = [k for k in files if k not in ignore]
    if found is None and len(rest) == 1:
        found = rest[0]
    if found is None:
        name = getattr(getattr(npz, "fid", None), "name", "the .npz file")
        raise NpzError(f"{what}: cannot tell which array of {name} to use (it holds "
                       f"{files or 'no arrays'}); store it under {keys[0]!r}")
    return found


def check_finite(arr: np.ndarray, what: str) -> np.ndarray:
    """``arr`` if every value is finite, else an :class:`NpzError` counting NaN and infinite
    values (non-float arrays are always finite)."""
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype,
                                                                       np.complexfloating):
        return arr
    nan = int(np.isnan(arr).sum())
    inf = int(np.isinf(arr).sum())
    if nan or inf:
        parts = [f"{n} {label}" for n, label in ((nan, "NaN"), (inf, "infinite")) if n]
        raise NpzError(f"{what} holds {' and '.join(parts)} value(s) among {arr.size}; "
                       "data must be finite numbers")
    return arr


__all__ = ["NpzError", "check_finite", "open_npz", "pick_key", "read_array", "save_npz"]
