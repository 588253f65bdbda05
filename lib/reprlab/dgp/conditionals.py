"""GP conditionals, KL divergences and a Cholesky that retries with growing jitter.

``conditional`` implements the sparse-GP posterior of a layer at inputs ``f_{ℓ-1}`` given
inducing values at inducing locations ``z_{ℓ-1}`` (paper eq. (3)); when the inducing values
are Gaussian, ``N(m, S)``, it returns the marginalised form of eqs. (7)-(8)
(``μ + αᵀ(m - μ(z))`` and ``k - αᵀ(K_zz - S)α``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "DEFAULT_JITTER",
    "CholeskyError",
    "conditional",
    "gaussian_kl",
    "identity_mean",
    "stable_cholesky",
    "zero_mean",
]

DEFAULT_JITTER = 1e-6
MeanFn = Callable[[torch.Tensor], torch.Tensor]


class CholeskyError(ValueError):
    """A covariance matrix stayed non positive-definite after all jitter retries."""


def identity_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean function of inner DGP layers: ``μ(x) = x``."""
    return x


def zero_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean function of the last DGP layer: ``μ(x) = 0``."""
    return torch.zeros_like(x)


def stable_cholesky(
    a: torch.Tensor,
    jitter: float = DEFAULT_JITTER,
    max_tries: int = 6,
    where: str = "",
) -> torch.Tensor:
    """Lower Cholesky factor of ``a + jitter·I``; on failure retry with jitter ×10 each time.

    ``a`` may be batched ``(..., n, n)``. Non-finite entries or a failure after
    ``max_tries`` attempts raise :class:`CholeskyError` naming ``where`` (e.g. the layer).
    """
    label = f" in {where}" if where else ""
    if a.dim() < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"stable_cholesky expects square matrices (..., n, n){label}, got {tuple(a.shape)}")
    if not torch.isfinite(a).all():
        raise CholeskyError(f"covariance matrix{label} has non-finite entries (NaN or inf)")
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    # absolute jitter first (1e-6, as in the original code and GPyTorch's float64 default)
    current = float(jitter)
    for _ in range(max(1, int(max_tries))):
        chol, info = torch.linalg.cholesky_ex(a + current * eye)
        if not bool((info > 0).any()):
            return chol
        current *= 10.0
    raise CholeskyError(
        f"Cholesky failed{label}: matrix of shape {tuple(a.shape)} is not positive definite "
        f"even with jitter {current / 10.0:.1e} added to the diagonal"
    )


def conditional(
    kernel: torch.nn.Module,
    mean_fn: MeanFn,
    z: torch.Tensor,
    x: torch.Tensor,
    u_mean: torch.Tensor,
    u_scale_tril: torch.Tensor | None = None,
    full_cov: bool = False,
    jitter: float = DEFAULT_JITTER,
    where: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior of a GP layer at inputs ``x`` given inducing values at locations ``z``.

    Shapes: ``x`` (T, S, N), ``z`` (T, S|1, M), ``u_mean`` (T, S|1, M) (broadcast over the
    leading dims), ``u_scale_tril`` (T, 1, M, M) or ``None`` for fixed (sampled) inducing values.
    Returns ``(mean, var)`` with ``var`` of shape (..., N), or ``(mean, cov)`` with cov
    (..., N, N) when ``full_cov``. Eq. (3) when ``u_scale_tril`` is None, eqs. (7)-(8) otherwise.
    """
    kzz = kernel(z, z)
    lzz = stable_cholesky(kzz, jitter, where=f"{where} K(z, z)" if where else "K(z, z)")
    # Triangular solves with L = chol(K̃_zz), K̃_zz = K_zz + jitter·I, as in the original code:
    # a = L⁻¹K_zx is backward stable, its error grows like cond(L) = cond(K̃)^½. An explicit
    # K̃⁻¹ (used before) loses digits like cond(K̃), which reaches 1e8-1e10 when a periodic
    # layer's variance grows (its K_zz is nearly low-rank), and the ELBO gradients then drift.
    kzx = kernel(z, x)
    a = torch.linalg.solve_triangular(lzz, kzx, upper=False)  # L⁻¹K_zx, (..., M, N)
    resid = (u_mean - mean_fn(z)).unsqueeze(-1)  # (..., M, 1)
    mean = mean_fn(x) + (a * torch.linalg.solve_triangular(lzz, resid, upper=False)).sum(-2)
    # Covariance k_xx - αᵀ(K̃_zz - S)α with α = K̃⁻¹K_zx (eq. 8; S = 0 gives eq. 3):
    # αᵀK̃α = aᵀa and αᵀSα = ‖(L⁻¹S^½)ᵀa‖². Using K_zz instead of K̃_zz in the first term (as
    # an early version did) adds jitter·αᵀα, which is not the conditional of any Gaussian.
    b = None
    if u_scale_tril is not None:
        b = torch.linalg.solve_triangular(lzz, u_scale_tril, upper=False).transpose(-1, -2) @ a
    if full_cov:
        cov = kernel(x, x) - a.transpose(-1, -2) @ a
        return mean, cov if b is None else cov + b.transpose(-1, -2) @ b
    var = kernel.diag(x) - (a * a).sum(-2)
    if b is not None:
        var = var + (b * b).sum(-2)
    return mean, var.clamp_min(0.0)


def gaussian_kl(
    q_mean: torch.Tensor,
    q_scale_tril: torch.Tensor,
    p_mean: torch.Tensor,
    p_scale_tril: torch.Tensor,
) -> torch.Tensor:
    """``KL[N(q_mean, LqLqᵀ) || N(p_mean, LpLpᵀ)]`` in closed form (batched over leading dims)."""
    k = q_mean.shape[-1]
    diff = (p_mean - q_mean).unsqueeze(-1)
    lp_inv_lq = torch.linalg.solve_triangular(p_scale_tril, q_scale_tril, upper=False)
    lp_inv_diff = torch.linalg.solve_triangular(p_scale_tril, diff, upper=False)
    trace = (lp_inv_lq * lp_inv_lq).sum((-1, -2))
    maha = (lp_inv_diff * lp_inv_diff).sum((-1, -2))
    logdet_p = 2.0 * p_scale_tril.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)
    logdet_q = 2.0 * q_scale_tril.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)
    return 0.5 * (trace + maha - k + logdet_p - logdet_q)
