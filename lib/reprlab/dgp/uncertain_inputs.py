"""The quantitative argument of §3.2 (Fig. 3): how input noise changes a layer's output variance.

With ``f_{ℓ-1} = f̄ + ε``, eq. (11) gives ``Var[f_ℓ] ≈ σ̄² + σ²_noise [(μ̄')² + (σ̄²)'']``: input
noise can only *reduce* the output variance where the second derivative ``(σ̄²)''`` of the
predictive variance is negative. With ``M`` inducing points linearly spaced in
``Δ = [f̄ - 3γ, f̄ + 3γ]`` (γ the SE length scale) the most negative ``(σ̄²)''`` tends to zero as
``M`` grows (Fig. 3B), so a factorised DGP can only fit noiseless data by collapsing.

Here the inducing values are noiseless (``S = 0``), the predictive variance is
``σ²(x) = k(x, x) - k_xᵀ K_zz⁻¹ k_x`` and its derivatives are in closed form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from reprlab.dgp.conditionals import stable_cholesky

__all__ = ["min_second_derivative", "predictive_variance_curve"]


def predictive_variance_curve(n_inducing: int, lengthscale: float = 1.0, variance: float = 1.0,
                              centre: float = 0.0, n_grid: int = 401, jitter: float = 1e-10) -> dict[str, np.ndarray]:
    """``σ²(x)``, ``(σ²)'(x)`` and ``(σ²)''(x)`` on a grid over Δ for ``M`` inducing points (Fig. 3A).

    SE kernel ``k = v exp(-(x - z)²/(2γ²))``; ``k' = -(x - z)/γ² k``, ``k'' = ((x - z)²/γ⁴ - 1/γ²) k``,
    ``(σ²)' = -2 k'ᵀ A k``, ``(σ²)'' = -2 (k''ᵀ A k + k'ᵀ A k')`` with ``A = K_zz⁻¹``.
    """
    if int(n_inducing) != n_inducing or n_inducing < 1:
        raise ValueError(f"n_inducing must be an integer >= 1, got {n_inducing!r}")
    if not (lengthscale > 0 and variance > 0 and math.isfinite(centre)):
        raise ValueError("lengthscale and variance must be positive and centre finite")
    if int(n_grid) < 3:
        raise ValueError(f"n_grid must be >= 3, got {n_grid!r}")
    g = float(lengthscale)
    lo, hi = centre - 3 * g, centre + 3 * g
    z = torch.linspace(lo, hi, int(n_inducing), dtype=torch.float64) if n_inducing > 1 else torch.tensor([centre], dtype=torch.float64)
    x = torch.linspace(lo, hi, int(n_grid), dtype=torch.float64)
    kzz = variance * torch.exp(-0.5 * (z[:, None] - z[None, :]) ** 2 / g**2)
    lzz = stable_cholesky(kzz, jitter, where="Fig. 3 K(z, z)")
    d = x[:, None] - z[None, :]
    k = variance * torch.exp(-0.5 * d**2 / g**2)  # (G, M)
    k1 = -d / g**2 * k
    k2 = (d**2 / g**4 - 1.0 / g**2) * k
    a_k = torch.cholesky_solve(k.T, lzz).T
    a_k1 = torch.cholesky_solve(k1.T, lzz).T
    var = variance - (k * a_k).sum(-1)
    dvar = -2.0 * (k1 * a_k).sum(-1)
    d2var = -2.0 * ((k2 * a_k).sum(-1) + (k1 * a_k1).sum(-1))
    return {"x": x.numpy(), "z": z.numpy(), "var": var.numpy(), "dvar": dvar.numpy(), "d2var": d2var.numpy()}


def min_second_derivative(n_inducing: Sequence[int] = tuple(range(1, 21)), lengthscale: float = 1.0,
                          variance: float = 1.0, n_grid: int = 401) -> dict[str, np.ndarray]:
    """Minimum of ``(σ²)''`` over Δ as a function of the number of inducing points (Fig. 3B)."""
    ms = [int(m) for m in n_inducing]
    if not ms:
        raise ValueError("n_inducing must list at least one M")
    mins = [float(predictive_variance_curve(m, lengthscale, variance, n_grid=n_grid)["d2var"].min()) for m in ms]
    return {"M": np.asarray(ms), "min_d2var": np.asarray(mins)}
