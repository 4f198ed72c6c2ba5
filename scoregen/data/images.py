"""Your own images: a folder of image files or an ``.npz`` array.

- Folder: every ``.png``, ``.jpg``, ``.jpeg``, ``.bmp`` file (sorted by name), read with
  Pillow (installed with matplotlib). All must share one size and channel count. A folder
  of sub-folders (``root/<class>/*.png``) is read class by class: the label of an image is
  the index of its sub-folder's name in sorted order.
- ``.npz``: the array under key ``x`` (or ``images``, or the only array), laid out
  ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with ``C`` in 1, 3, 4; uint8 values
  are ``0..255``, float values ``[0, 1]`` (or already ``[-1, 1]``). Class labels come from
  an integer array ``labels`` (or ``y``) of length ``N``.

Values map to ``[-1, 1]``; samples have shape ``(C, H, W)``. ``size`` (``[H, W]``) and
``channels`` are checked when given, with an error naming the offending file. The split is
fixed: a permutation with seed 0 holds out ``test_fraction`` of the images for ``test``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scoregen.data.registry import DataError, register
from scoregen.infra.npz import check_finite, open_npz, pick_key, read_array

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "RGB", "RGBA"):
                img = img.convert("RGBA" if "A" in img.mode else "RGB")
            arr = np.asarray(img)
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr  # (H, W, C) uint8


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)


def _read_classes(folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Images of ``folder`` and, for a folder of class sub-folders, their labels."""
    if _image_files(folder):
        return _read_folder(folder), None
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and _image_files(p))
    if not classes:
        raise DataError(f"no image files ({', '.join(EXTENSIONS)}) in {folder} or in "
                        "sub-folders of it")
    parts = [_read_folder(c) for c in classes]
    if len({p.shape[1:] for p in parts}) > 1:
        raise DataError(f"{folder}: the class folders hold images of different sizes "
                        f"or channel counts ({', '.join(c.name for c in classes)})")
    labels = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])
    return np.concatenate(parts), labels


def _read_folder(folder: Path) -> np.ndarray:
    files = _image_files(folder)
    if not files:
        raise DataError(f"no image files ({', '.join(EXTENSIONS)}) in {folder}")
    first = _read_image(files[0])
    out = np.empty((len(files), *first.shape), dtype=np.uint8)
    for i, path in enumerate(files):
        img = first if i == 0 else _read_image(path)
        if img.shape != first.shape:
            raise DataError(f"image {path} has size {img.shape[1]}x{img.shape[0]} with "
                            f"{img.shape[2]} channel(s) but {files[0].name} has "
                            f"{first.shape[1]}x{first.shape[0]} with {first.shape[2]}; "
                            "all images must share one size and channel count")
        out[i] = img
    return out.transpose(0, 3, 1, 2)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if path.suffix.lower() != ".npz":
        raise DataError(f"data.path {path} is a file but not an .npz; give a folder of images "
                        "or an .npz file")
    what = "data.path"
    with open_npz(path, what) as data:
        keys = list(data.keys())
        label_key = next((k for k in ("labels", "y") if k in keys), None)
        key = pick_key(data, ("x", "images"), what, ignore=(label_key,) if label_key else ())
        arr = read_array(data, key, what)
        labels = None if label_key is None else read_array(data, label_key, what)
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
        arr = arr.transpose(0, 3, 1, 2)
    elif not (arr.ndim == 4 and arr.shape[1] in (1, 3, 4)):
        raise DataError(f"{path}: array {key!r} has shape {arr.shape}; expected (N, H, W), "
                        "(N, H, W, C) or (N, C, H, W) with C in 1, 3, 4")
    if len(arr) == 0:
        raise DataError(f"{path}: array {key!r} holds no images (shape {arr.shape})")
    return arr, labels


def _to_unit_range(arr: np.ndarray, source: Path) -> Tensor:
    if arr.dtype == np.uint8:
        return torch.from_numpy(arr.astype(np.float32)) / 255.0 * 2 - 1
    check_finite(arr, f"{source}")
    x = torch.from_numpy(np.asarray(arr, dtype=np.float32))
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0 and hi <= 1:
        return x * 2 - 1
    if lo >= -1 and hi <= 1:
        return x
    raise DataError(f"{source}: float values span [{lo:.3g}, {hi:.3g}]; expected [0, 1] or "
                    "[-1, 1] (or store uint8 0..255)")


@register("images", kind="image", labeled=True)
def images(
    split: str = "train",
    path: str = "",
    size: list[int] | None = None,
    channels: int | None = None,
    test_fraction: float = 0.1,
    labels: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """A folder of images or an .npz array as (C, H, W) images in [-1, 1] (data.path)."""
    if not path:
        raise DataError("dataset 'images' needs data.path: a folder of images or an .npz file")
    source = Path(path).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"image data {source} does not exist")
    arr, y = _read_classes(source) if source.is_dir() else _read_npz(source)
    check_image_shape(source, arr.shape[1:], channels, size)
    x = _to_unit_range(arr, source)
    idx = split_indices(len(x), split, test_fraction, source)
    if not labels:
        return x[idx]
    if y is None:
        raise DataError(f"{source} has no class labels: store an integer array 'labels' in "
                        "the .npz, or put the images in one sub-folder per class")
    if np.shape(y) != (len(x),):
        raise DataError(f"{source}: {len(x)} images but labels of shape {np.shape(y)}")
    return x[idx], torch.as_tensor(np.asarray(y), dtype=torch.int64)[idx]


def check_image_shape(source: Path, shape: tuple[int, ...], channels: int | None,
                      size: list[int] | None) -> None:
    """Refuse images of shape ``(C, H, W)`` other than ``data.channels`` / ``data.size``."""
    C, H, W = shape
    if channels is not None and channels != C:
        raise DataError(f"{source}: images have {C} channel(s), expected {channels} "
                        f"(data.channels); convert them or set data.channels: {C}")
    if size is not None and [int(s) for s in size] != [H, W]:
        raise DataError(f"{source}: images are {H}x{W}, expected {size[0]}x{size[1]} "
                        f"(data.size); resize them or set data.size: [{H}, {W}]")


def split_indices(n: int, split: str, test_fraction: float, source: Path) -> Tensor:
    """Indices of ``split`` among ``n`` images: a permutation with seed 0, the first
    ``round(test_fraction * n)`` for ``test``, the rest for ``train``."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"data.test_fraction must lie in [0, 1), got {test_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_test = round(test_fraction * n)
    idx = perm[:n_test] if split == "test" else perm[n_test:]
    if len(idx) == 0:
        raise DataError(f"{source}: the {split} split is empty ({n} images, "
                        f"test_fraction={test_fraction})")
    return idx
