"""Datasets too large for memory: read on demand, delivered by a ``DataLoader``.

:func:`open_dataset` returns a map-style ``torch.utils.data.Dataset`` whose item ``i`` is
image ``i`` of the split as a float32 ``(C, H, W)`` tensor in ``[-1, 1]``, bit for bit the
row ``i`` of :func:`scoregen.data.load_dataset` (same split, same scaling):

- ``images`` from a folder: one file read per item (a list of paths in memory);
- ``mnist`` from a plain IDX file: a read-only ``numpy.memmap`` (the OS page cache, shared
  by every process and worker, holds what is read); a ``.gz`` file is inflated once into a
  uint8 array (``N * H * W`` bytes, a quarter of the float32 tensor);
- ``images`` from an ``.npz`` of uint8 and every other dataset: the uint8 array or the
  tensor itself in memory (small sets gain nothing from streaming).

:func:`stream_batches` is the trainer's loader: a ``DataLoader`` with ``workers`` worker
processes whose batch sampler (:class:`StepSampler`) yields, step after step, this rank's
micro-batches of the global batch, in the order of
:class:`scoregen.training.batches.EpochOrder` (the epoch permutations seeded by
``(seed, epoch)``) from a stream position restored on resume. Streamed and in-memory
training therefore see the same examples in the same order.

Memory of ``N`` images of shape ``S`` (``prod(S)`` values each), per process: in memory,
``4 N prod(S)`` bytes (float32; on the GPU when training there); streamed, about
``4 (workers + 1) prefetch b prod(S)`` bytes for the batches in flight (``b`` the local
micro-batch, ``prefetch = 2``) plus ``N`` paths (folders) or the page cache (memmap).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from scoregen.data import images as _images
from scoregen.data import mnist as _mnist
from scoregen.data.registry import DataError, dataset_options, load_dataset
from scoregen.infra.registry import Registry

LazyFn = Callable[..., "Dataset | None"]
LAZY: Registry[LazyFn] = Registry("streamed dataset")


def _unit(arr: np.ndarray) -> Tensor:
    """uint8 ``0..255`` -> float32 ``[-1, 1]``, the arithmetic of the in-memory loaders."""
    return torch.from_numpy(np.asarray(arr).astype(np.float32)) / 255.0 * 2 - 1


class TensorData(Dataset):
    """An in-memory tensor ``(N, *D)`` as a dataset."""

    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Tensor:
        return self.x[i]


class Uint8Array(Dataset):
    """Items ``index[i]`` of a uint8 array ``(N, C, H, W)`` (a memmap or in memory)."""

    def __init__(self, arr: np.ndarray, index: Tensor | None = None) -> None:
        self.arr = arr
        self.index = torch.arange(len(arr)) if index is None else index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Tensor:
        return _unit(self.arr[int(self.index[i])])


class ImageFiles(Dataset):
    """One image file per item, checked against the shape of the first."""

    def __init__(self, files: Sequence[Path], shape: tuple[int, ...]) -> None:
        self.files = list(files)
        self.shape = shape

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        img = _images._read_image(self.files[i]).transpose(2, 0, 1)
        if img.shape != self.shape:
            raise DataError(f"image {self.files[i]} has shape {img.shape}, expected "
                            f"{self.shape} like the first image; all images must share one "
                            "size and channel count")
        return _unit(img)


@LAZY.register("images")
def _lazy_images(split: str = "train", path: str = "", size: list[int] | None = None,
                 channels: int | None = None, test_fraction: float = 0.1) -> Dataset | None:
    source = Path(path).expanduser()
    if not path or not source.exists():
        return None  # the in-memory loader raises the error
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in _images.EXTENSIONS)
        if not files:
            raise DataError(f"no image files ({', '.join(_images.EXTENSIONS)}) in {source}")
        shape = _images._read_image(files[0]).transpose(2, 0, 1).shape
        items: Dataset = ImageFiles(files, shape)
    else:
        arr, _ = _images._read_npz(source)  # (images, labels or None)
        if arr.dtype != np.uint8:
            return None  # float arrays are scaled by their range: load them in memory
        shape, items = arr.shape[1:], Uint8Array(arr)
    _images.check_image_shape(source, shape, channels, size)
    return Subset(items, _images.split_indices(len(items), split, test_fraction, source))


@LAZY.register("mnist")
def _lazy_mnist(split: str = "train", root: str = "data/mnist") -> Dataset:
    path = _mnist.find_file(Path(root).expanduser(), _mnist.FILES[split])
    if path.suffix == ".gz":
        arr = _mnist.read_idx(path)
    else:
        with open(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4 or head[:3] != b"\x00\x00\x08":
                return Uint8Array(_mnist.read_idx(path)[:, None])  # read_idx names the error
            dims = np.frombuffer(fh.read(4 * head[3]), dtype=">u4").tolist()
        arr = np.memmap(path, dtype=np.uint8, mode="r", offset=4 + 4 * len(dims),
                        shape=tuple(dims))
    if arr.ndim != 3:
        raise DataError(f"{path}: expected (N, H, W) images, got dimensions {arr.shape}")
    return Uint8Array(arr[:, None])


class Subset(Dataset):
    """Items ``index`` of another dataset."""

    def __init__(self, items: Dataset, index: Tensor) -> None:
        self.items, self.index = items, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Tensor:
        return self.items[int(self.index[i])]


def open_dataset(name: str, split: str = "train", **options: Any) -> Dataset:
    """Dataset ``name`` read on demand where a streamed reader exists (``images``,
    ``mnist``), else the in-memory data as a :class:`TensorData`."""
    known = dataset_options(name)  # raises the registry's error for unknown names
    unknown = sorted(set(options) - set(known))
    if name in LAZY and not unknown:
        found = LAZY.get(name)(split=split, **options)
        if found is not None:
            return found
    return TensorData(load_dataset(name, split, **options))


def item_shape(data: Tensor | Dataset) -> tuple[int, ...]:
    """The shape of one example of a tensor or dataset."""
    return tuple(data.shape[1:]) if isinstance(data, Tensor) else tuple(data[0].shape)


class StepSampler(Sampler[list[int]]):
    """Data indices of this rank's micro-batches, step after step, without end.

    Step ``j`` (counting from ``position``) covers stream positions ``position + j B``
    onwards; micro-batch ``index`` (global example indices within the step) maps through
    ``order.indices``.
    """

    def __init__(self, order: Any, position: int, batch_size: int,
                 slices: Sequence[Tensor]) -> None:
        self.order, self.position = order, position
        self.batch_size, self.slices = batch_size, list(slices)

    def __iter__(self) -> Iterator[list[int]]:
        pos = self.position
        while True:
            for index in self.slices:
                yield self.order.indices(pos + int(index[0]), len(index)).tolist()
            pos += self.batch_size


def stream_batches(data: Dataset, order: Any, position: int, batch_size: int,
                   slices: Sequence[Tensor], workers: int = 2,
                   pin_memory: bool = False) -> Iterator[Tensor]:
    """An endless iterator over this rank's micro-batches ``(b, *D)`` from ``position``."""
    loader = DataLoader(data, batch_sampler=StepSampler(order, position, batch_size, slices),
                        num_workers=workers, pin_memory=pin_memory,
                        persistent_workers=workers > 0)
    return iter(loader)


__all__ = ["LAZY", "ImageFiles", "StepSampler", "Subset", "TensorData", "Uint8Array",
           "item_shape", "open_dataset", "stream_batches"]
