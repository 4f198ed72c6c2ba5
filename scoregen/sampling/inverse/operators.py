"""Linear measurement operators ``y = A x + sigma_y n``: one registry, ``A``, ``A^T`` and the SVD.

Each operator gives ``A``, its adjoint ``A^T`` (a test checks ``<A x, y> = <x, A^T y>``) and,
where known in closed form, the SVD in the spectral layout of
:mod:`~scoregen.sampling.inverse.base` (``c = V^T x``, one singular value per coordinate, 0
where unobserved). Operators without one (:class:`LinearOperator`) have ``svd = None``.

Registered operators (:data:`OPERATORS`, spec ``NAME[:ARG]``, :func:`operator`):

- ``inpaint:REGION``: keep every value outside ``REGION`` (a region of :data:`MASKS`:
  ``right-half`` (default), ``left-half``, ``top-half``, ``bottom-half``, ``center``).
  ``A x = m * x`` with the boolean mask ``m`` (``y`` has the event shape; values outside the
  mask are ignored); ``U = V = I``, ``s = m``.
- ``downsample:K``: average pooling over blocks of ``K x K`` pixels (images) or ``K``
  consecutive values (vectors). Each block's row is ``1/q`` times its indicator (``q`` values
  per block), so ``s = 1/sqrt(q)``; ``V`` is, per block, an orthonormal basis whose first vector
  is the normalised indicator (``U = I``).
- ``blur:STD``: separable Gaussian blur of standard deviation ``STD`` pixels with zero padding
  (kernel radius ``ceil(3 STD)``), ``A = B_H (x) B_W`` on each channel; the SVD is the
  Kronecker product of the two 1-D SVDs. Singular values below ``1e-6`` of the largest are
  treated as 0 (the blur removes those directions to numerical precision).
- ``project:M``: ``M`` random Gaussian projections, entries ``N(0, 1/D)`` (seed 0), SVD by
  ``torch.linalg.svd``.

Any boolean mask (:class:`Mask`), dense matrix (:class:`MatrixOperator`) or pair of functions
(:class:`LinearOperator`) is an operator too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from scoregen.infra.registry import Registry
from scoregen.sampling.inverse.base import SVD, Measurement, Operator, measurement
from scoregen.sampling.inverse.regions import MASKS, region_mask


class Mask(Operator):
    """``A x = m * x``: keep the values where ``mask`` is True (the *known* values).

    ``mask``: boolean (or 0/1) of the event shape ``shape`` (default: the mask's own shape),
    or ``(B, *shape)`` for one mask per sample.
    """

    def __init__(self, mask: Tensor, shape: tuple[int, ...] | None = None, name: str = "mask"
                 ) -> None:
        mask = torch.as_tensor(mask)
        if mask.is_floating_point():
            if not torch.isfinite(mask).all():
                raise ValueError("mask contains NaN or infinite values")
            if not ((mask == 0) | (mask == 1)).all():
                raise ValueError("mask must be boolean (True or 1 = known value)")
        self.mask = mask.to(torch.bool)
        self.shape = self.out_shape = tuple(mask.shape) if shape is None else tuple(shape)
        self.per_sample = self.mask.ndim == len(self.shape) + 1
        if tuple(self.mask.shape[int(self.per_sample):]) != self.shape:
            raise ValueError(f"mask of shape {tuple(self.mask.shape)} does not match events of "
                             f"shape {self.shape}: give one mask of the event shape or one per "
                             "sample")
        if not self.mask.any():
            raise ValueError("mask marks no value as known: that is plain sampling")
        self.name = name

    def A(self, x: Tensor) -> Tensor:  # noqa: N802 (the paper symbol)
        return torch.where(self.mask.to(x.device), x, torch.zeros((), dtype=x.dtype,
                                                                  device=x.device))

    AT = A

    def observed_part(self, y: Tensor) -> Tensor:
        return self.A(y)  # values outside the mask are ignored

    def rows(self) -> Tensor:
        if self.per_sample:
            raise ValueError("a dense matrix needs one mask shared by every sample")
        return self.mask.reshape(-1)

    @property
    def svd(self) -> SVD:
        s = self.mask.reshape(self.mask.shape[0], -1) if self.per_sample else self.mask.reshape(-1)
        shape = self.shape

        def flat(x: Tensor) -> Tensor:
            return x.reshape(x.shape[0], -1)

        def unflat(c: Tensor) -> Tensor:
            return c.reshape(c.shape[0], *shape)

        return SVD(s.to(torch.float64), flat, unflat, lambda y: flat(self.A(y)),
                   lambda c: self.A(unflat(c)))


def _orthonormal_with_mean(q: int) -> Tensor:
    """A ``(q, q)`` orthogonal matrix whose first row is ``1 / sqrt(q)`` (rows: basis)."""
    basis = torch.eye(q, dtype=torch.float64)
    basis[:, 0] = 1.0
    Q, _ = torch.linalg.qr(basis)
    Q = Q * torch.sign(Q[0, 0])
    return Q.T.contiguous()


class Downsample(Operator):
    """Average pooling by ``factor`` (module docstring)."""

    def __init__(self, shape: tuple[int, ...], factor: int) -> None:
        self.shape, self.k = tuple(shape), int(factor)
        if self.k < 1:
            raise ValueError(f"downsample factor must be an integer >= 1, got {factor}")
        spatial = self.shape[-2:] if len(self.shape) >= 3 else self.shape[-1:]
        if any(n % self.k for n in spatial):
            raise ValueError(f"downsample:{self.k} needs sizes divisible by {self.k}, got "
                             f"{self.shape}")
        self.images = len(self.shape) >= 3
        self.q = self.k ** len(spatial)
        self.out_shape = self.shape[:-len(spatial)] + tuple(n // self.k for n in spatial)
        self.name = f"downsample:{self.k}"
        self._H = _orthonormal_with_mean(self.q)

    def _blocks(self, x: Tensor) -> Tensor:
        """``(B, *shape) -> (B, *out_shape, q)``."""
        k, B = self.k, x.shape[0]
        if not self.images:
            return x.reshape(B, *self.out_shape, k)
        *lead, H, W = x.shape[1:]
        x = x.reshape(B, *lead, H // k, k, W // k, k)
        n = x.ndim
        x = x.permute(*range(n - 4), n - 4, n - 2, n - 3, n - 1)
        return x.reshape(B, *lead, H // k, W // k, self.q)

    def _unblocks(self, b: Tensor) -> Tensor:
        k, B = self.k, b.shape[0]
        if not self.images:
            return b.reshape(B, *self.shape)
        *lead, h, w = self.out_shape
        b = b.reshape(B, *lead, h, w, k, k)
        n = b.ndim
        b = b.permute(*range(n - 4), n - 4, n - 2, n - 3, n - 1)
        return b.reshape(B, *self.shape)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802 (the paper symbol)
        return self._blocks(x).mean(-1)

    def AT(self, y: Tensor) -> Tensor:  # noqa: N802 (the paper symbol)
        return self._unblocks(y[..., None].expand(*y.shape, self.q) / self.q)

    @property
    def svd(self) -> SVD:
        H, q = self._H, self.q
        s = torch.zeros(self.dim // q, q, dtype=torch.float64)
        s[:, 0] = 1 / math.sqrt(q)

        def vt(x: Tensor) -> Tensor:
            return (self._blocks(x) @ H.T.to(x)).reshape(x.shape[0], -1)

        def v(c: Tensor) -> Tensor:
            return self._unblocks(c.reshape(c.shape[0], -1, q) @ H.to(c))

        def ut(y: Tensor) -> Tensor:
            c = torch.zeros(*y.shape, q, dtype=y.dtype, device=y.device)
            c[..., 0] = y
            return c.reshape(y.shape[0], -1)

        def u(c: Tensor) -> Tensor:
            return c.reshape(c.shape[0], *self.out_shape, q)[..., 0]

        return SVD(s.reshape(-1), vt, v, ut, u)


def gaussian_blur_matrix(n: int, std: float) -> Tensor:
    """The ``(n, n)`` matrix of a 1-D Gaussian blur with zero padding (radius ``ceil(3 std)``,
    kernel normalised to sum 1)."""
    radius = max(1, math.ceil(3 * std))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / std) ** 2)
    kernel = kernel / kernel.sum()
    idx = torch.arange(n)
    d = idx[None, :] - idx[:, None]
    inside = d.abs() <= radius
    return torch.where(inside, kernel[(d + radius).clamp(0, 2 * radius)], torch.zeros(()))


class Blur(Operator):
    """Separable Gaussian blur (module docstring): ``X -> B_H X B_W^T`` per channel, or
    ``x -> B x`` for vectors."""

    RCOND = 1e-6

    def __init__(self, shape: tuple[int, ...], std: float) -> None:
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"blur standard deviation must be > 0, got {std}")
        self.shape = self.out_shape = tuple(shape)
        self.std = float(std)
        self.name = f"blur:{std:g}"
        self.images = len(self.shape) >= 3
        sizes = self.shape[-2:] if self.images else self.shape[-1:]
        self._B = [gaussian_blur_matrix(n, self.std) for n in sizes]

    def _apply(self, x: Tensor, mats: list[Tensor]) -> Tensor:
        if not self.images:
            return x @ mats[0].T.to(x)
        return mats[0].to(x) @ x @ mats[1].T.to(x)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802 (the paper symbol)
        return self._apply(x, self._B)

    def AT(self, y: Tensor) -> Tensor:  # noqa: N802 (the paper symbol)
        return self._apply(y, [b.T for b in self._B])

    @property
    def svd(self) -> SVD:
        parts = [torch.linalg.svd(b) for b in self._B]  # (U, s, Vh) each
        s = parts[0][1] if not self.images else torch.outer(parts[0][1], parts[1][1])
        s = s.expand(*self.shape[: len(self.shape) - s.ndim], *s.shape).reshape(-1)
        s = torch.where(s > self.RCOND * s.max(), s, torch.zeros_like(s))
        Us = [p[0] for p in parts]
        Vs = [p[2].T for p in parts]

        def flat(x: Tensor) -> Tensor:
            return x.reshape(x.shape[0], -1)

        def vt(x: Tensor) -> Tensor:
            return flat(self._apply(x, [V.T for V in Vs]))

        def v(c: Tensor) -> Tensor:
            return self._apply(c.reshape(c.shape[0], *self.shape), Vs)

        def ut(y: Tensor) -> Tensor:
            return flat(self._apply(y, [U.T for U in Us]))

        def u(c: Tensor) -> Tensor:
            return self._apply(c.reshape(c.shape[0], *self.shape), Us)

        return SVD(s, vt, v, ut, u)


class MatrixOperator(Operator):
    """``y = M x_flat`` for a dense ``M: (m, D)`` of full row rank; SVD by ``torch.linalg.svd``."""

    def __init__(self, M: Tensor, shape: tuple[int, ...] | None = None, name: str = "matrix"
                 ) -> None:
        M = torch.as_tensor(M, dtype=torch.float64)
        if M.ndim != 2 or not torch.isfinite(M).all():
            raise ValueError(f"a matrix operator needs a finite (m, D) matrix, got shape "
                             f"{tuple(M.shape)}")
        self.M = M
        self.shape = (M.shape[1],) if shape is None else tuple(shape)
        if math.prod(self.shape) != M.shape[1]:
            raise ValueError(f"matrix with {M.shape[1]} columns for events of shape {self.shape}")
        self.out_shape = (M.shape[0],)
        self.name = name
        self._svd: tuple[Tensor, Tensor, Tensor] | None = None

    def A(self, x: Tensor) -> Tensor:  # noqa: N802 (the paper symbol)
        return x.reshape(x.shape[0], -1) @ self.M.T.to(x)

    def AT(self, y: Tensor) -> Tensor:  # noqa: N802 (the paper symbol)
        return (y @ self.M.to(y)).reshape(y.shape[0], *self.shape)

    @property
    def svd(self) -> SVD:
        if self._svd is None:
            U, s, Vh = torch.linalg.svd(self.M, full_matrices=True)
            if s.numel() < self.M.shape[0] or s.min() <= 1e-12 * s.max():
                raise ValueError(f"operator {self.name} does not have full row rank")
            self._svd = U, s, Vh
        U, s_m, Vh = self._svd
        m, D = self.M.shape
        s = torch.cat([s_m, torch.zeros(D - m, dtype=torch.float64)])

        def ut(y: Tensor) -> Tensor:
            c = y @ U.to(y)
            return torch.cat([c, c.new_zeros(c.shape[0], D - m)], 1)

        return SVD(s, lambda x: x.reshape(x.shape[0], -1) @ Vh.T.to(x),
                   lambda c: (c @ Vh.to(c)).reshape(c.shape[0], *self.shape), ut,
                   lambda c: c[:, :m] @ U.T.to(c))


class LinearOperator(Operator):
    """Any linear map given as two functions ``A`` and ``A^T`` (no SVD)."""

    def __init__(self, A: Callable[[Tensor], Tensor], AT: Callable[[Tensor], Tensor],
                 shape: tuple[int, ...], out_shape: tuple[int, ...], name: str = "linear"
                 ) -> None:
        self._A, self._AT = A, AT
        self.shape, self.out_shape, self.name = tuple(shape), tuple(out_shape), name

    def A(self, x: Tensor) -> Tensor:  # noqa: N802 (the paper symbol)
        return self._A(x)

    def AT(self, y: Tensor) -> Tensor:  # noqa: N802 (the paper symbol)
        return self._AT(y)


# -- the registry -----------------------------------------------------------------------------
OperatorFactory = Callable[[tuple[int, ...], str | None], Operator]
OPERATORS: Registry[OperatorFactory] = Registry("operator")


@OPERATORS.register("inpaint", arg="REGION (right-half)")
def _inpaint(shape: tuple[int, ...], arg: str | None) -> Operator:
    """Keep the values outside a region of ``MASKS`` (default right-half): inpainting."""
    region = arg or "right-half"
    return Mask(~region_mask(region, shape), name=f"inpaint:{region}")


@OPERATORS.register("downsample", arg="K (2)")
def _downsample(shape: tuple[int, ...], arg: str | None) -> Operator:
    """Average pooling by a factor K (default 2): super-resolution."""
    return Downsample(shape, _number(arg, 2, int, "downsample"))


@OPERATORS.register("blur", arg="STD (1)")
def _blur(shape: tuple[int, ...], arg: str | None) -> Operator:
    """Separable Gaussian blur of standard deviation STD pixels (default 1): deblurring."""
    return Blur(shape, _number(arg, 1.0, float, "blur"))


@OPERATORS.register("project", arg="M (D/4)")
def _project(shape: tuple[int, ...], arg: str | None) -> Operator:
    """M random Gaussian projections (entries N(0, 1/D), seed 0): compressed sensing."""
    D = math.prod(shape)
    m = _number(arg, max(1, D // 4), int, "project")
    if not 1 <= m <= D:
        raise ValueError(f"project:{m} needs 1 <= M <= {D} (the values per event)")
    g = torch.Generator().manual_seed(0)
    M = torch.randn(m, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    return MatrixOperator(M, shape, f"project:{m}")


def _number(arg: str | None, default: float, kind: type, name: str) -> float:
    if arg is None or arg == "":
        return default
    try:
        return kind(arg)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"operator {name}:{arg}: {arg!r} is not {what}") from None


def operator(spec: str | Operator, shape: tuple[int, ...]) -> Operator:
    """The operator ``spec`` (``NAME[:ARG]``, e.g. ``inpaint:right-half``, ``downsample:2``,
    ``project:16``; or an :class:`Operator`, checked against ``shape``) for events of ``shape``."""
    shape = tuple(int(n) for n in shape)
    if isinstance(spec, Operator):
        if spec.shape != shape:
            raise ValueError(f"operator {spec.name} acts on events of shape {spec.shape}, but "
                             f"the data has shape {shape}")
        return spec
    name, _, arg = str(spec).partition(":")
    return OPERATORS.get(name.strip())(shape, arg.strip() or None)


__all__ = ["MASKS", "OPERATORS", "SVD", "Blur", "Downsample", "LinearOperator", "Mask",
           "MatrixOperator", "Measurement", "Operator", "gaussian_blur_matrix", "measurement",
           "operator", "region_mask"]
