"""2-D toy sets and samples of the analytic mixture presets.

Every toy set is drawn from a ``torch.Generator``: the train split uses ``seed``, the test
split the independent stream ``seed + 1_000_003``. Sets are laid out inside ``[-1, 1]^2``;
those with Gaussian noise are clipped to it (a fraction below 1e-5 of points moves).
``mixture`` samples a preset of :mod:`scoregen.models.analytic` exactly and is *not* clipped, so
its samples match the oracle's density (ring8 reaches about 1.4 in norm).

Sets with natural classes give labels (``load_dataset(name, labels=True)``): ``8gaussians``
and ``mixture`` the component, ``moons`` the moon, ``checkerboard`` the cell (8), ``rings``
the ring (3). ``swissroll`` has none.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from scoregen.data.registry import register
from scoregen.models.analytic import PRESETS, ring8

# fn(n, generator) -> (points (n, 2), labels (n,) or None)
Sampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor | None]]
_TEST_OFFSET = 1_000_003


def _generator(split: str, seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed + (_TEST_OFFSET if split == "test" else 0))


def _toy(name: str, labeled: bool = False) -> Callable[[Sampler], Sampler]:
    """Register a 2-D sampler ``fn(n, generator) -> ((n, 2), labels)`` as dataset ``name``."""

    def deco(fn: Sampler) -> Sampler:
        def dataset(split: str = "train", n: int = 20_000, seed: int = 0, labels: bool = False
                    ) -> Tensor | tuple[Tensor, Tensor]:
            if not (isinstance(n, int) and n > 0):
                raise ValueError(f"data.n must be a positive integer, got {n!r}")
            x, y = fn(n, _generator(split, seed))
            x = x.clamp(-1, 1).to(torch.float32)
            return (x, y.to(torch.int64)) if labels else x

        dataset.__doc__ = fn.__doc__
        dataset.__name__ = name
        register(name, kind="toy", labeled=labeled)(dataset)
        return fn

    return deco


@_toy("8gaussians", labeled=True)
def eight_gaussians(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Eight Gaussians (std 0.04) on a circle of radius 0.8 (the ring8 mixture, rescaled)."""
    return ring8(radius=0.8, std=0.04).sample(n, g, return_labels=True)


@_toy("moons", labeled=True)
def two_moons(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two interleaved half circles with noise std 0.05 (scikit-learn's make_moons layout)."""
    theta = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, theta.cos(), 1 - theta.cos())
    y = torch.where(upper, theta.sin(), 0.5 - theta.sin())
    pts = torch.stack([x, y], 1) + 0.05 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return (pts - torch.tensor([0.5, 0.25], dtype=torch.float64)) / 1.7, (~upper).long()


@_toy("swissroll")
def swiss_roll(n: int, g: torch.Generator) -> tuple[Tensor, None]:
    """A 2-D swiss roll ``theta (cos theta, sin theta)``, theta in [1.5 pi, 4.5 pi], noise 0.3."""
    theta = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    pts = torch.stack([theta * theta.cos(), theta * theta.sin()], 1)
    pts = pts + 0.3 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return pts / 16.0, None


@_toy("checkerboard", labeled=True)
def checkerboard(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Uniform on the 8 dark cells of a 4x4 checkerboard covering [-1, 1]^2."""
    cell = torch.randint(0, 8, (n,), generator=g)
    row = cell // 2
    col = 2 * (cell % 2) + (row % 2)
    corner = torch.stack([col, row], 1).to(torch.float64) * 0.5 - 1
    return corner + 0.5 * torch.rand(n, 2, generator=g, dtype=torch.float64), cell


@_toy("rings", labeled=True)
def rings(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Three concentric circles (radii 0.3, 0.6, 0.9) with radial noise std 0.02."""
    ring = torch.randint(1, 4, (n,), generator=g)
    radius = 0.3 * ring.to(torch.float64)
    radius = radius + 0.02 * torch.randn(n, generator=g, dtype=torch.float64)
    theta = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    return torch.stack([radius * theta.cos(), radius * theta.sin()], 1), ring - 1


@register("mixture", kind="mixture", labeled=True)
def mixture(split: str = "train", preset: str = "ring8", n: int = 20_000, seed: int = 0,
            labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Exact samples of an analytic mixture preset (``preset``: ring8, mix16, mix64; unclipped)."""
    if not (isinstance(n, int) and n > 0):
        raise ValueError(f"data.n must be a positive integer, got {n!r}")
    mix = PRESETS.get(preset)()
    x, k = mix.sample(n, _generator(split, seed), return_labels=True)
    return (x.to(torch.float32), mix.labels[k]) if labels else x.to(torch.float32)
