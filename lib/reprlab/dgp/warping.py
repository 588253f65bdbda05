"""Temporal warping with a two-layer DGP, paper §6 (eq. (24), Fig. 6): ``y = f(g(x)) + ε``.

The first layer is a monotonic warp ``g(x) = x_0 + ∫_{x_0}^x exp(h(t)) dt`` with ``h`` a
zero-mean GP, so the prior prefers the identity warp (``h = 0``) but allows any smooth
monotonic one; the integral is a trapezoid rule on a fine grid. (The paper uses a monotonic
GP flow in this layer; the log-derivative GP is a simpler monotonic layer with the same role.)
The second layer ``f`` is a stationary SE GP with zero mean.

The inducing points ``u_h`` (of ``h``) and ``u_f`` (of ``f``) have a jointly Gaussian
``q`` in chain form, ``u_f = m_f + W (u_h - m_h) + L_f ε`` (eq. (14) for two layers):
``coupled=False`` fixes ``W = 0`` (the mean-field posterior of DSVI), ``coupled=True`` learns
the cross-layer correlations (§4.1). The ELBO samples ``u_h`` and the warp, and marginalises
``u_f`` analytically given ``u_h`` (eqs. (7)-(8) with ``q(u_f | u_h)``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reprlab.dgp.conditionals import DEFAULT_JITTER, gaussian_kl
from reprlab.dgp.layers import DeepGP, GPLayer, as_tensor_1d, randn, tril_param

__all__ = ["WarpedDGP"]


class WarpedDGP(DeepGP):
    """Monotonic warp ``g`` (from a log-derivative GP ``h``) followed by a stationary GP ``f``."""

    scheme = "warp"

    def __init__(self, x_range: tuple[float, float] = (-1.0, 1.0), n_inducing_warp: int = 8,
                 n_inducing_f: int = 40, coupled: bool = True, noise_std: float = 0.01,
                 warp_variance: float = 0.1, warp_lengthscale: float = 0.5, f_variance: float = 0.1,
                 f_lengthscale: float = 0.1, n_grid: int = 64, n_replicas: int = 1,
                 jitter: float = DEFAULT_JITTER, init_scale: float = 1e-2) -> None:
        lo, hi = float(x_range[0]), float(x_range[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"x_range must be a finite interval (lo < hi), got {x_range!r}")
        if int(n_grid) < 4:
            raise ValueError(f"n_grid must be >= 4, got {n_grid!r}")
        margin = 0.1 * (hi - lo)
        warp = GPLayer("se", mean="zero", z_init=torch.linspace(lo, hi, int(n_inducing_warp)), index=0,
                       n_replicas=n_replicas)
        f = GPLayer("se", mean="zero", z_init=torch.linspace(lo - margin, hi + margin, int(n_inducing_f)), index=1,
                    n_replicas=n_replicas)
        super().__init__([warp, f], noise_std, jitter)
        with torch.no_grad():
            warp.kernel.log_variance.fill_(math.log(warp_variance))
            warp.kernel.set_lengthscale(warp_lengthscale)
            f.kernel.log_variance.fill_(math.log(f_variance))
            f.kernel.set_lengthscale(f_lengthscale)
        self.coupled = bool(coupled)
        self.x_range = (lo, hi)
        self.register_buffer("grid", torch.linspace(lo, hi, int(n_grid), dtype=torch.float64))
        t, mh, mf = self.n_replicas, int(n_inducing_warp), int(n_inducing_f)
        self.q_mean_h = nn.Parameter(torch.zeros(t, mh, dtype=torch.float64))
        self.q_mean_f = nn.Parameter(torch.zeros(t, mf, dtype=torch.float64))
        self.q_scale_h = tril_param(t, mh, init_scale)
        self.q_scale_f = tril_param(t, mf, init_scale)
        coupling = torch.zeros(t, mf, mh, dtype=torch.float64)
        self.q_coupling = nn.Parameter(coupling) if self.coupled else None
        if not self.coupled:
            self.register_buffer("_zero_coupling", coupling)

    @property
    def coupling(self) -> torch.Tensor:
        """``W`` (T, M_f, M_h): zero for the mean-field posterior."""
        return self.q_coupling if self.coupled else self._zero_coupling

    def scale_tril(self) -> torch.Tensor:
        """Cholesky factor of the joint ``S`` of ``(u_h, u_f)``."""
        lh, lf = torch.tril(self.q_scale_h), torch.tril(self.q_scale_f)
        top = torch.cat([lh, lh.new_zeros(lh.shape[0], lh.shape[1], lf.shape[-1])], dim=-1)
        bottom = torch.cat([self.coupling @ lh, lf], dim=-1)
        return torch.cat([top, bottom], dim=-2)

    def kl(self, generator=None, n_samples: int = 1) -> torch.Tensor:
        """``KL[q(u_h, u_f) || p(u_h) p(u_f)]``, per replica."""
        hl, fl = self.layers
        lp_h, lp_f = hl.prior_scale_tril(hl.z, self.jitter), fl.prior_scale_tril(fl.z, self.jitter)
        lp = torch.cat([torch.cat([lp_h, lp_h.new_zeros(lp_h.shape[0], lp_h.shape[1], lp_f.shape[-1])], -1),
                        torch.cat([lp_f.new_zeros(lp_f.shape[0], lp_f.shape[1], lp_h.shape[-1]), lp_f], -1)], -2)
        m = torch.cat([self.q_mean_h, self.q_mean_f], dim=-1)
        return gaussian_kl(m, self.scale_tril(), torch.zeros_like(m), lp)

    # --- sampling -------------------------------------------------------------------------
    def _draw_u_h(self, n_samples: int, generator=None) -> torch.Tensor:
        eps = randn((self.n_replicas, int(n_samples), self.q_mean_h.shape[-1]), self.q_mean_h, generator)
        return self.q_mean_h.unsqueeze(1) + eps @ torch.tril(self.q_scale_h).transpose(-1, -2)

    def _q_u_f_given(self, u_h: torch.Tensor) -> torch.Tensor:
        """Mean of ``q(u_f | u_h)`` (its covariance is ``L_f L_fᵀ``)."""
        return self.q_mean_f.unsqueeze(1) + (u_h - self.q_mean_h.unsqueeze(1)) @ self.coupling.transpose(-1, -2)

    def warp(self, u_h: torch.Tensor, x: torch.Tensor, generator=None) -> torch.Tensor:
        """``g(x)`` for each draw of ``u_h`` (T, S, M_h): (T, S, N), monotonic in ``x``."""
        hl = self.layers[0]
        grid = self.grid.expand(u_h.shape[0], u_h.shape[1], -1)
        mean, cov = hl.conditional(grid, hl.z.unsqueeze(1), u_h, None, True, self.jitter)
        h = self._draw((mean, cov), generator, True, hl)
        rate = torch.exp(h)
        dx = self.grid[1:] - self.grid[:-1]
        g_grid = torch.cat([torch.zeros_like(rate[..., :1]), torch.cumsum(0.5 * (rate[..., 1:] + rate[..., :-1]) * dx, -1)], -1)
        g_grid = g_grid + self.x_range[0]
        return _interp(x, self.grid, g_grid)

    def draw_inducing(self, n_samples: int, generator=None):  # pragma: no cover - not used by this model
        raise NotImplementedError("WarpedDGP samples its warp directly; use sample_f / sample_functions")

    def sample_f(self, x: torch.Tensor, n_samples: int, generator=None, full_cov: bool = False) -> torch.Tensor:
        u_h = self._draw_u_h(n_samples, generator)
        g = self.warp(u_h, x, generator)
        fl = self.layers[1]
        moments = fl.conditional(g, fl.z.unsqueeze(1), self._q_u_f_given(u_h),
                                 torch.tril(self.q_scale_f).unsqueeze(1), False, self.jitter)
        return self._draw(moments, generator, False, fl)

    @torch.no_grad()
    def sample_functions(self, grid, n_samples: int = 25, generator=None) -> dict[str, list[torch.Tensor]]:
        """Whole-function draws: ``layers = [g(grid), f(grid)]``, ``hidden = [g(grid), f(g(grid))]``."""
        x = self._inputs(grid)
        n = x.shape[0]
        u_h = self._draw_u_h(n_samples, generator)
        g = self.warp(u_h, x, generator)
        fl = self.layers[1]
        lf = torch.tril(self.q_scale_f)
        eps = randn(u_h.shape[:2] + (lf.shape[-1],), lf, generator)
        u_f = self._q_u_f_given(u_h) + eps @ lf.transpose(-1, -2)
        inputs = torch.cat([x.expand_as(g), g], dim=-1)
        out = self._draw(fl.conditional(inputs, fl.z.unsqueeze(1), u_f, None, True, self.jitter), generator, True, fl)
        return {"layers": [g, out[..., :n]], "hidden": [g, out[..., n:]]}


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``fp`` (…, G) given on the sorted grid ``xp`` at points ``x`` (N,)."""
    x = as_tensor_1d(x, "x", device=xp.device)
    idx = torch.searchsorted(xp, x.clamp(xp[0], xp[-1])).clamp(1, xp.shape[0] - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    w = (x.clamp(xp[0], xp[-1]) - x0) / (x1 - x0)
    return fp[..., idx - 1] * (1 - w) + fp[..., idx] * w
