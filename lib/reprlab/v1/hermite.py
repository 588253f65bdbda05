"""2-D Hermite (Gauss–Laguerre) steerable basis with exact rotation of coefficients.

The rotation-equivariant core of Ecker et al. (2019), used by the thesis (chapter 6 and
the rotation-invariant clustering paper, Sec. 3), expands every filter in a 2-D Hermite
basis so that rotated copies of a filter are *linear maps of its coefficients*. The same
basis parametrises the cluster MEIs of the digital-twin Methods, eqs. (4)-(5):
``rotate(x, phi) = (R(phi) beta)^T Psi``.

We use the polar form of the 2-D Hermite functions (the Gauss–Laguerre functions), which
span the same space as the Cartesian products ``H_a(x) H_b(y) exp(-(x^2+y^2)/2)`` with
``a + b = n``. For rank ``n`` and angular frequency ``m`` (``m = n, n-2, ..., >= 0``) with
``k = (n - m) / 2`` and ``rho = r / sigma``::

    psi_{n,m}^{cos}(r, theta) = rho^m L_k^m(rho^2) exp(-rho^2 / 2) cos(m theta)
    psi_{n,m}^{sin}(r, theta) = rho^m L_k^m(rho^2) exp(-rho^2 / 2) sin(m theta)

(``m = 0`` has only the cosine member). Ranks ``0 .. n_max-1`` give
``n_max (n_max + 1) / 2`` functions. Rotating a function by ``alpha``
(``f_rot(r, theta) = f(r, theta - alpha)``) maps each (cos, sin) coefficient pair by a
2-D rotation by ``m * alpha``: :func:`rotation_matrix` is block diagonal and exact for any
angle, because the functions are evaluated analytically at the pixel coordinates.

Coordinates follow the chapter's stimulus convention (:mod:`reprlab.v1.stimuli`): ``x`` is the
column (rightwards), ``y`` the row (*downwards*), angles run from +x towards +y. A rotation by
``alpha`` maps ``f`` to ``p -> f(c + R(-alpha)(p - c))``, the same sense in which a Gabor's
orientation ``phi`` grows; on a display with the origin top-left that is *clockwise*, so a
rotation by ``+pi/2`` equals ``torch.rot90(img, -1, dims=(-2, -1))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import eval_genlaguerre, gammaln

__all__ = [
    "HermiteBasis",
    "default_sigma",
    "hermite_basis",
    "hermite_functions",
    "hermite_orders",
    "n_basis",
    "rotate_coefficients",
    "rotation_matrix",
]


def _check_n_max(n_max: int) -> int:
    if not isinstance(n_max, (int, np.integer)) or isinstance(n_max, bool) or n_max < 1:
        raise ValueError(f"n_max must be a positive int (number of Hermite ranks), got {n_max!r}")
    return int(n_max)


def n_basis(n_max: int) -> int:
    """Number of basis functions for ranks ``0 .. n_max-1``: ``n_max (n_max + 1) / 2``."""
    n_max = _check_n_max(n_max)
    return n_max * (n_max + 1) // 2


def hermite_orders(n_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(n, m, kind)`` per basis function; ``kind`` 0 = cosine, 1 = sine member.

    Ordering: rank ``n`` ascending, then ``m`` descending, cosine before sine.
    """
    n_max = _check_n_max(n_max)
    ns, ms, kinds = [], [], []
    for n in range(n_max):
        for m in range(n, -1, -2):
            ns.append(n)
            ms.append(m)
            kinds.append(0)
            if m > 0:
                ns.append(n)
                ms.append(m)
                kinds.append(1)
    return np.asarray(ns), np.asarray(ms), np.asarray(kinds)


def default_sigma(kernel_size: int, n_max: int) -> float:
    """Gaussian width (pixels) so that the highest rank roughly fills a ``kernel_size`` patch.

    A rank-``n`` function extends to radius ~ ``sigma sqrt(2n + 1)``; we place the edge of
    the highest rank at ~ 0.9 of the half-width.
    """
    half = max((kernel_size - 1) / 2.0, 0.5)
    return 0.9 * half / math.sqrt(2 * (n_max - 1) + 1) if n_max > 1 else half / 2.0


def hermite_functions(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    n_max: int,
    sigma: float,
) -> np.ndarray:
    """Evaluate all basis functions at coordinates ``(x, y)`` (any equal shapes, pixels).

    Returns an array of shape ``(n_basis, *x.shape)`` (float64). Each function has unit L2
    norm over the continuous plane (in pixel units), so filters sampled on a grid have
    approximately unit sum of squares.
    """
    n_max = _check_n_max(n_max)
    if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a positive finite number of pixels, got {sigma!r}")
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    rho2 = (x**2 + y**2) / sigma**2
    rho = np.sqrt(rho2)
    theta = np.arctan2(y, x)
    gauss = np.exp(-rho2 / 2.0)
    ns, ms, kinds = hermite_orders(n_max)
    out = np.empty((len(ns),) + x.shape, dtype=np.float64)
    for i, (n, m, kind) in enumerate(zip(ns, ms, kinds)):
        k = (n - m) // 2
        radial = rho**m * eval_genlaguerre(k, m, rho2) * gauss
        angular = np.cos(m * theta) if kind == 0 else np.sin(m * theta)
        # analytic norm: sigma^2 * (pi or 2 pi) * Gamma(k+m+1) / k! / 2
        ang = 2 * math.pi if m == 0 else math.pi
        norm2 = sigma**2 * ang * 0.5 * math.exp(gammaln(k + m + 1) - gammaln(k + 1))
        out[i] = radial * angular / math.sqrt(norm2)
    return out


def _grid(shape: Sequence[int], center: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    h, w = int(shape[0]), int(shape[1])
    cj, ci = ((w - 1) / 2.0, (h - 1) / 2.0) if center is None else (float(center[0]), float(center[1]))
    ii, jj = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    return jj - cj, ii - ci


def hermite_basis(
    kernel_size: int | Sequence[int],
    n_max: int,
    sigma: float | None = None,
    center: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sample the basis on a pixel grid: tensor ``(n_basis(n_max), H, W)``.

    ``kernel_size`` is an int (square, odd for filters) or ``(H, W)`` (e.g. an image-sized
    grid for cluster MEIs); ``center`` is ``(x, y)`` = (column, row) of the origin (default: the grid
    centre); ``sigma`` defaults to :func:`default_sigma`.
    """
    n_max = _check_n_max(n_max)
    if isinstance(kernel_size, (int, np.integer)):
        shape = (int(kernel_size), int(kernel_size))
    else:
        shape = tuple(int(s) for s in kernel_size)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"kernel_size must be a positive int or (H, W), got {kernel_size!r}")
    if sigma is None:
        sigma = default_sigma(min(shape), n_max)
    x, y = _grid(shape, center)
    return torch.as_tensor(hermite_functions(x, y, n_max, sigma), dtype=dtype, device=device)


def rotation_matrix(
    angle: float | torch.Tensor,
    n_max: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Coefficient rotation ``R(alpha)`` with ``basis . (R(alpha) c) == rotate(basis . c, alpha)``.

    ``angle`` (radians, from +x towards +y, i.e. clockwise on screen; see module docstring) may be a float or a tensor of any shape; the result
    has shape ``(*angle.shape, n_b, n_b)`` and is differentiable in ``angle``.
    """
    n_max = _check_n_max(n_max)
    if dtype is None and isinstance(angle, torch.Tensor) and torch.is_floating_point(angle):
        dtype = angle.dtype
    a = torch.as_tensor(angle, dtype=dtype or torch.get_default_dtype(), device=device)
    if not torch.isfinite(a).all():
        raise ValueError("rotation angles must be finite")
    ns, ms, kinds = hermite_orders(n_max)
    nb = len(ns)
    R = torch.zeros(a.shape + (nb, nb), dtype=a.dtype, device=a.device)
    i = 0
    while i < nb:
        m = int(ms[i])
        if m == 0:
            R[..., i, i] = 1.0
            i += 1
            continue
        c, s = torch.cos(m * a), torch.sin(m * a)
        # (a, b) -> (a cos - b sin, a sin + b cos) for the (cos, sin) pair
        R[..., i, i] = c
        R[..., i, i + 1] = -s
        R[..., i + 1, i] = s
        R[..., i + 1, i + 1] = c
        i += 2
    return R


def rotate_coefficients(coeffs: torch.Tensor, angle: float | torch.Tensor, n_max: int) -> torch.Tensor:
    """Rotate coefficient vectors ``(..., n_b)`` by ``angle`` (broadcast over leading dims)."""
    nb = n_basis(n_max)
    if coeffs.shape[-1] != nb:
        raise ValueError(f"coeffs last dim must be n_basis({n_max}) = {nb}, got {tuple(coeffs.shape)}")
    R = rotation_matrix(angle, n_max, dtype=coeffs.dtype, device=coeffs.device)
    return torch.einsum("...ij,...j->...i", R, coeffs)


class HermiteBasis:
    """A sampled basis with its rotation matrices: ``basis (n_b, H, W)``, ``rotation_matrix(a)``.

    Convenience wrapper for callers (core, cluster MEIs) that keep one grid and rotate
    coefficients many times; ``synthesize(coeffs)`` maps ``(..., n_b)`` to images ``(..., H, W)``.
    """

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        n_max: int,
        sigma: float | None = None,
        center: Sequence[float] | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        self.n_max = _check_n_max(n_max)
        self.basis = hermite_basis(kernel_size, n_max, sigma, center, dtype, device)

    @property
    def n_basis(self) -> int:
        return self.basis.shape[0]

    def rotation_matrix(self, angle: float | torch.Tensor) -> torch.Tensor:
        return rotation_matrix(angle, self.n_max, dtype=self.basis.dtype, device=self.basis.device)

    def synthesize(self, coeffs: torch.Tensor) -> torch.Tensor:
        if coeffs.shape[-1] != self.n_basis:
            raise ValueError(f"coeffs last dim must be {self.n_basis}, got {tuple(coeffs.shape)}")
        return torch.einsum("...b,bhw->...hw", coeffs.to(self.basis.dtype), self.basis)

    def rotated_basis(self, angles: torch.Tensor | Sequence[float]) -> torch.Tensor:
        """Basis functions as seen by coefficients after rotation: ``(A, n_b, H, W)``.

        ``synthesize(R(a) c) == sum_b c_b rotated_basis(a)[b]``.
        """
        R = self.rotation_matrix(torch.as_tensor(angles, dtype=self.basis.dtype))
        return torch.einsum("aij,ihw->ajhw", R, self.basis)
