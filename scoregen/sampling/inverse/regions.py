"""Named regions of an event to fill: the masks of ``inpaint:REGION`` and ``--mask``.

A region function maps an event shape to a boolean tensor, True on the values to *fill*
(unknown); :data:`MASKS` registers them by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scoregen.infra.registry import Registry

MaskFn = Callable[[tuple[int, ...]], Tensor]
MASKS: Registry[MaskFn] = Registry("mask")


def _half(dim: int, upper: bool) -> MaskFn:
    def fn(shape: tuple[int, ...]) -> Tensor:
        m = torch.zeros(shape, dtype=torch.bool)
        idx = [slice(None)] * len(shape)
        idx[dim] = slice(shape[dim] // 2, None) if upper else slice(0, shape[dim] // 2)
        m[tuple(idx)] = True
        return m
    return fn


def _image_region(name: str, shape: tuple[int, ...]) -> None:
    if len(shape) < 2:
        raise ValueError(f"mask {name} needs images (C, H, W), got samples of shape {shape}")


@MASKS.register("right-half")
def right_half(shape: tuple[int, ...]) -> Tensor:
    """The right half of an image (last axis), or the second half of a vector."""
    return _half(len(shape) - 1, True)(shape)


@MASKS.register("left-half")
def left_half(shape: tuple[int, ...]) -> Tensor:
    """The left half of an image (last axis), or the first half of a vector."""
    return _half(len(shape) - 1, False)(shape)


@MASKS.register("bottom-half")
def bottom_half(shape: tuple[int, ...]) -> Tensor:
    """The bottom half of an image (second-to-last axis)."""
    _image_region("bottom-half", shape)
    return _half(len(shape) - 2, True)(shape)


@MASKS.register("top-half")
def top_half(shape: tuple[int, ...]) -> Tensor:
    """The top half of an image (second-to-last axis)."""
    _image_region("top-half", shape)
    return _half(len(shape) - 2, False)(shape)


@MASKS.register("center")
def center(shape: tuple[int, ...]) -> Tensor:
    """The central square of side H/2 of an image."""
    _image_region("center", shape)
    m = torch.zeros(shape, dtype=torch.bool)
    h, w = shape[-2], shape[-1]
    m[..., h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = True
    return m


def region_mask(name: str, shape: tuple[int, ...]) -> Tensor:
    """The named region (:data:`MASKS`) to *fill* for samples of event shape ``shape``."""
    return MASKS.get(name)(tuple(shape))


__all__ = ["MASKS", "region_mask"]
