"""Sample plots: a scatter for 2-D data, a grid for images (matplotlib, Agg backend).

Values are expected in ``[-1, 1]`` (the data convention of :mod:`scoregen.data`); images
are clipped to it and shown as ``(x + 1) / 2``. Figures are written atomically, as scoregen's
outputs (:func:`save_figure`, :mod:`scoregen.infra.outputs`); :data:`FORMATS` are the file
suffixes a figure can be written as.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from scoregen.infra import outputs

FORMATS = tuple(f".{s}" for s in sorted(Figure().canvas.get_supported_filetypes()))


def clip_to_range(x: Tensor, lo: float = -1.0, hi: float = 1.0) -> tuple[Tensor, float]:
    """``x`` clipped to the data range ``[lo, hi]`` and the fraction of values outside it."""
    outside = float(((x < lo) | (x > hi)).float().mean()) if x.numel() else 0.0
    return x.clamp(lo, hi), outside


def image_grid(x: Tensor, ncol: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images ``(B, C, H, W)`` in ``[-1, 1]`` into one ``(rows*(H+pad), ...)`` array in
    ``[0, 1]`` (``(..., 3)`` for RGB, 2-D for grey)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    B, C, H, W = x.shape
    ncol = ncol or math.ceil(math.sqrt(B))
    nrow = math.ceil(B / ncol)
    grid = np.ones((C, nrow * (H + pad) + pad, ncol * (W + pad) + pad), dtype=np.float32)
    for i in range(B):
        r, c = divmod(i, ncol)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        grid[:, top:top + H, left:left + W] = x[i]
    return grid[0] if C == 1 else grid[:3].transpose(1, 2, 0)


def samples_figure(x: Tensor, title: str | None = None, reference: Tensor | None = None,
                   ncol: int | None = None) -> Figure:
    """A figure of samples ``x``: scatter for ``(B, D)`` points, grid for ``(B, C, H, W)``.

    Points of more than two coordinates (``D > 2``, e.g. mix64) are drawn as their first two
    coordinates, and the axes say so. ``reference`` (points only): real data drawn faintly
    behind the samples. ``ncol``: images per grid row (default: a square grid).
    """
    if x.ndim == 2 and x.shape[1] >= 2:
        fig, ax = plt.subplots(figsize=(5, 5))
        if reference is not None:
            r = reference.detach().float().cpu().numpy()
            ax.scatter(r[:, 0], r[:, 1], s=2, c="0.8", label="data")
        pts = x.detach().float().cpu().numpy()[:, :2]
        ax.scatter(pts[:, 0], pts[:, 1], s=2, c="C0", label="samples")
        lim = max(1.1, float(np.abs(pts).max()) * 1.05) if len(pts) else 1.1
        lim = min(lim, 3.0)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        if x.shape[1] > 2:
            ax.set_xlabel(f"coordinate 0 of {x.shape[1]}")
            ax.set_ylabel(f"coordinate 1 of {x.shape[1]}")
        if reference is not None:
            ax.legend(loc="upper right", markerscale=4)
    elif x.ndim == 4:
        grid = image_grid(x, ncol)
        fig, ax = plt.subplots(figsize=(6, 6 * grid.shape[0] / grid.shape[1]))
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1,
                  interpolation="nearest")
        ax.axis("off")
    else:
        raise ValueError(f"can plot (B, D) points with D >= 2 or (B, C, H, W) images, "
                         f"got {tuple(x.shape)}")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def render(fig: Figure, path: str | Path, dpi: int = 100) -> None:
    """Write ``fig`` to ``path`` as is (a temporary file of an atomic write) and close it;
    the format follows the suffix."""
    try:
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` atomically, as scoregen's output, and close it."""
    try:
        with outputs.replacing(path) as (tmp,):
            render(fig, tmp, dpi)
    finally:
        plt.close(fig)
    return Path(path)


def save_samples(x: Tensor, path: str | Path, title: str | None = None,
                 reference: Tensor | None = None, ncol: int | None = None) -> Path:
    """Write a PNG (or another of :data:`FORMATS`) of samples ``x`` atomically; see
    :func:`samples_figure`."""
    outputs.check_target(path, FORMATS)
    return save_figure(samples_figure(x, title, reference, ncol), path)
