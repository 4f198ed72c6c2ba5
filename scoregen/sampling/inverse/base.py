"""The measurement layer shared by every operator: ``Operator``, its SVD layout, ``Measurement``.

An :class:`Operator` acts on a batch ``x: (B, *shape)`` and gives ``y: (B, *out_shape)``;
:meth:`Operator.AT` is its adjoint (``<A x, y> = <x, A^T y>``). Where the SVD ``A = U diag(s)
V^T`` is known in closed form, :attr:`Operator.svd` gives it in one layout shared by every
operator (:class:`SVD`): the *spectral coordinates* of an event are ``c = V^T x``, a ``(B, D)``
tensor (``D`` = values per event); coordinate ``i`` is observed with singular value ``s_i > 0``
or unobserved (``s_i = 0``). The measurement then reads, per observed coordinate,

    (U^T y)_i / s_i = c_i + (sigma_y / s_i) n_i,       n ~ N(0, I),

so every method that needs the SVD (DDNM, replacement on a non-mask operator, the particle
method) is elementwise in this layout (Kawar et al. 2022, "DDRM", sec. 3; Wang et al. 2023,
"DDNM", sec. 3). Operators without a closed-form SVD have ``svd = None``; methods that need it
refuse them with an error. :func:`measurement` checks ``y`` and ``sigma_y`` against an
operator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SVD:
    """``A = U diag(s) V^T`` in the spectral layout of the module docstring.

    ``s``: ``(D,)`` or ``(B, D)`` float64 singular values, 0 at unobserved coordinates;
    ``vt(x) -> (B, D)``, ``v(c) -> (B, *shape)``, ``ut(y) -> (B, D)`` (``U^T y`` placed at the
    observed coordinates, 0 elsewhere) and ``u(c) -> (B, *out_shape)`` (reads the observed
    coordinates).
    """

    s: Tensor
    vt: Callable[[Tensor], Tensor]
    v: Callable[[Tensor], Tensor]
    ut: Callable[[Tensor], Tensor]
    u: Callable[[Tensor], Tensor]

    def observed(self, like: Tensor) -> Tensor:
        """Boolean ``(B or 1, D)``: the coordinates the measurement sees."""
        return (self.s > 0).to(like.device).expand_as(like)

    def pinv_coords(self, y: Tensor) -> Tensor:
        """``(U^T y)_i / s_i`` on observed coordinates, 0 elsewhere: ``(B, D)``."""
        c = self.ut(y)
        s = self.s.to(c)
        safe = torch.where(s > 0, s, torch.ones_like(s))
        return torch.where(s > 0, c / safe, torch.zeros_like(c))


class Operator:
    """A linear measurement ``A`` from events of shape ``shape`` to ``out_shape``.

    Subclasses give :meth:`A`, :meth:`AT` and, where known, :attr:`svd`. ``name`` is the
    registry spec it was built from (or a description).
    """

    name: str = "operator"
    shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()

    def A(self, x: Tensor) -> Tensor:  # noqa: N802 (the paper symbol)
        raise NotImplementedError

    def AT(self, y: Tensor) -> Tensor:  # noqa: N802 (the paper symbol)
        raise NotImplementedError

    @property
    def svd(self) -> SVD | None:
        """The closed-form SVD, or ``None``."""
        return None

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def rows(self) -> Tensor:
        """Boolean ``(prod(out_shape),)``: the rows of ``A`` that carry information (a mask's
        zero rows do not)."""
        return torch.ones(math.prod(self.out_shape), dtype=torch.bool)

    def matrix(self) -> Tensor:
        """``A`` as a dense float64 ``(m, D)`` matrix of its informative rows (:meth:`rows`)."""
        eye = torch.eye(self.dim, dtype=torch.float64).reshape(self.dim, *self.shape)
        return self.A(eye).reshape(self.dim, -1).T[self.rows()]

    def flat(self, y: Tensor) -> Tensor:
        """``y: (*out_shape)`` or ``(B, *out_shape)`` as the ``(m,)``/``(B, m)`` values of the rows
        of :meth:`matrix`."""
        y = torch.as_tensor(y)
        lead = y.shape[: y.ndim - len(self.out_shape)]
        return y.reshape(*lead, -1)[..., self.rows()]

    def observed_part(self, y: Tensor) -> Tensor:
        """``y`` with the values the operator cannot produce cleared (a mask's unknown
        values); the identity for most operators."""
        return y

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, shape={self.shape})"


@dataclass(frozen=True)
class Measurement:
    """``y = A x + sigma_y n`` for a batch: ``operator``, ``y: (B, *out_shape)``,
    ``sigma_y >= 0``."""

    operator: Operator
    y: Tensor
    sigma_y: float

    @property
    def batch(self) -> int:
        return self.y.shape[0]

    def spectral(self) -> tuple[SVD, Tensor, Tensor]:
        """``(svd, y_bar, c)``: the SVD, ``y_bar = (U^T y) / s`` and the noise ``c = sigma_y / s``
        of every spectral coordinate (``(B, D)``; 0 at unobserved coordinates). A clear error
        when the operator has no closed-form SVD."""
        svd = self.operator.svd
        if svd is None:
            raise ValueError(f"operator {self.operator.name} has no closed-form SVD")
        y_bar = svd.pinv_coords(self.y)
        s = svd.s.to(y_bar).expand_as(y_bar)
        c = torch.where(s > 0, self.sigma_y / torch.where(s > 0, s, torch.ones_like(s)),
                        torch.zeros_like(s))
        return svd, y_bar, c


def measurement(op: Operator, y: Tensor, sigma_y: float = 0.0, batch: int | None = None,
                dtype: torch.dtype | None = None) -> Measurement:
    """Check a measurement: ``y`` of shape ``out_shape`` (shared by the batch) or ``(B,
    *out_shape)``, finite; ``sigma_y`` a finite number ``>= 0``."""
    if not isinstance(sigma_y, int | float) or not math.isfinite(sigma_y) or sigma_y < 0:
        raise ValueError(f"sigma_y (the measurement noise) must be a finite number >= 0, got "
                         f"{sigma_y!r}")
    y = torch.as_tensor(y)
    if dtype is not None:
        y = y.to(dtype)
    if tuple(y.shape) == op.out_shape:
        y = y[None].expand(batch or 1, *op.out_shape)
    if y.ndim < 1 or tuple(y.shape[1:]) != op.out_shape or (batch is not None
                                                             and y.shape[0] != batch):
        want = f"({batch}, {', '.join(map(str, op.out_shape))})" if batch else (
            f"(B, {', '.join(map(str, op.out_shape))})")
        raise ValueError(f"y has shape {tuple(y.shape)}, but operator {op.name} measures "
                         f"{op.out_shape}: give y of shape {op.out_shape} or {want}")
    if not torch.isfinite(y).all():
        raise ValueError("y contains NaN or infinite values")
    return Measurement(op, op.observed_part(y), float(sigma_y))


__all__ = ["SVD", "Measurement", "Operator", "measurement"]
