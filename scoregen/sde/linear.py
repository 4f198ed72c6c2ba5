"""The linear interpolant ``x_t = (1 - t) x_0 + t eps`` (rectified flow, Liu et al. 2022;
flow matching with the optimal-transport path, Lipman et al. 2023, eq. 20).

This SDE gives only ``alpha`` and ``sigma``: its drift ``f(t) = -1/(1-t)`` and diffusion
``g(t)^2 = 2t + 2t^2/(1-t)`` are derived by autograd in the base class. It is the worked
example of ``docs/adding-an-sde.md``. ``T < 1`` because ``alpha(1) = 0``.
"""

from __future__ import annotations

from torch import Tensor

from scoregen.sde.base import SDE
from scoregen.sde.registry import register


@register("linear")
class LinearSDE(SDE):
    """``alpha(t) = 1 - t``, ``sigma(t) = t`` on ``[0, T]``."""

    def __init__(self, T: float = 0.999, t_min: float = 1e-3) -> None:
        if T >= 1:
            raise ValueError(f"linear needs T < 1 (alpha(1) = 0), got T={T}")
        super().__init__(T=T, t_min=t_min)

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - t

    def sigma(self, t: Tensor) -> Tensor:
        return t
