"""MNIST from local IDX files (LeCun et al. 1998); nothing is downloaded.

Looks in ``root`` for ``train-images-idx3-ubyte`` / ``t10k-images-idx3-ubyte`` (optionally
``.gz``), directly or in the torchvision layout ``root/MNIST/raw/``. The IDX format: two zero
bytes, a type code (``0x08`` = unsigned byte), the number of dimensions ``n``, then ``n``
big-endian uint32 sizes and the data. Pixels ``0..255`` map to ``2 v / 255 - 1``; samples
have shape ``(1, 28, 28)``. The split is MNIST's own (60000 train / 10000 test).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scoregen.data.registry import DataError, register

FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
LABEL_FILES = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}


def read_idx(path: str | Path) -> np.ndarray:
    """An unsigned-byte IDX file (plain or gzip) as a uint8 array; clear errors if malformed."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from None
    if len(raw) < 4 or raw[0:2] != b"\x00\x00":
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX type code {raw[2]:#x} is not unsigned byte (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (header needs {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise DataError(f"{path} is truncated or padded: header says {dims} = {size} bytes of "
                        f"data, file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzip when the name ends in ``.gz``), atomically;
    the inverse of :func:`read_idx` (tests, subsets of a dataset)."""
    import os

    array = np.asarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX files here hold unsigned bytes in 1..255 dimensions, got "
                         f"{array.dtype} of shape {array.shape}")
    path = Path(path)
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += np.ascontiguousarray(array).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with (gzip.open if path.suffix == ".gz" else open)(tmp, "wb") as fh:
        fh.write(raw)
    os.replace(tmp, path)
    return path


def find_file(root: Path, name: str, dataset: str = "MNIST", folder: str = "MNIST") -> Path:
    """The first of ``root/name[.gz]`` and ``root/<folder>/raw/name[.gz]`` (torchvision's
    layout) that exists."""
    candidates = [d / (name + ext) for d in (root, root / folder / "raw") for ext in ("", ".gz")]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{dataset} file {name}[.gz] not found; looked in {root} and {root / folder / 'raw'}. "
        f"Put train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz (from the {dataset} "
        f"distribution) in {root}, or set data.root to the folder that holds them."
    )


def idx_image_set(root: str | Path, split: str, labels: bool, dataset: str = "MNIST",
                  folder: str = "MNIST") -> Tensor | tuple[Tensor, Tensor]:
    """An image set in MNIST's four IDX files under ``root`` (``FILES``, ``LABEL_FILES``):
    ``(N, 1, H, W)`` images ``2 v / 255 - 1`` and, with ``labels``, int64 labels ``(N,)``."""
    root = Path(root).expanduser()
    path = find_file(root, FILES[split], dataset, folder)
    images = read_idx(path)
    if images.ndim != 3:
        raise DataError(f"{path}: expected (N, H, W) images, got dimensions {images.shape}")
    x = torch.from_numpy(images.astype(np.float32)) / 255.0 * 2 - 1
    if not labels:
        return x[:, None]
    label_path = find_file(root, LABEL_FILES[split], dataset, folder)
    y = read_idx(label_path)
    if y.shape != (len(x),):
        raise DataError(f"{label_path}: {y.shape} labels for {len(x)} images")
    return x[:, None], torch.from_numpy(y.astype(np.int64))


@register("mnist", kind="image", labeled=True)
def mnist(split: str = "train", root: str = "data/mnist", labels: bool = False
          ) -> Tensor | tuple[Tensor, Tensor]:
    """MNIST digits from local IDX files in ``root`` as (1, 28, 28) images in [-1, 1]
    (labels from ``train-labels-idx1-ubyte`` / ``t10k-labels-idx1-ubyte``)."""
    return idx_image_set(root, split, labels)
