"""Jointly Gaussian inducing points across layers, paper §4.1.

``q(u_1, …, u_L) = N(m, S)`` with ``m ∈ R^{LM}``, ``S ∈ R^{LM×LM}`` (eq. (12)); the prior is
block-diagonal ``p(u_1)…p(u_L)`` so the KL is between two Gaussians. Two estimators of
``E_q[log p(y | f_L)]``:

* ``marginalise='sample'`` — nested sampling: draw ``u ~ q`` jointly, then each layer from the
  GP posterior given its ``u_ℓ`` (eq. (13), steps 1-3 of §4.1).
* ``marginalise='analytic'`` — analytic marginalisation of ``u`` under the chain factorisation
  ``q(u_L | u_{L-1})…q(u_1)`` (eq. (14), block-tridiagonal precision, Fig. 4): the layers are
  drawn from ``N(μ̃_ℓ, Σ̃_ℓ)`` of eqs. (15)-(17), jointly over the data points.

Covariance structure: ``'full'`` (a free Cholesky factor of ``S``) or ``'chain'``
(``u_ℓ = m_ℓ + W_ℓ (u_{ℓ-1} - m_{ℓ-1}) + L_ℓ ε_ℓ``, which is exactly eq. (14) and grows
linearly with the number of layers). ``W = 0`` recovers DSVI.

The recursion used for ``'analytic'`` carries the posterior ``q(u_ℓ | f_1..f_ℓ) = N(a_ℓ, B_ℓ)``
forward (a Kalman-filter style update), which holds for any ``L``; for ``L = 2`` it reduces to
eqs. (16)-(17): ``q(u_2 | f_1) = N(m_2 + S_21 α_1 Σ̃_1⁻¹ (f_1 - μ̃_1), S_22 - S_21 α_1 Σ̃_1⁻¹ α_1ᵀ S_12)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reprlab.dgp.conditionals import DEFAULT_JITTER, gaussian_kl, stable_cholesky
from reprlab.dgp.layers import DeepGP, GPLayer, randn, tril_param

__all__ = ["JointlyGaussianDGP"]


class JointlyGaussianDGP(DeepGP):
    """DGP with inducing points jointly Gaussian across layers (§4.1)."""

    scheme = "joint"

    def __init__(self, layers: Sequence[GPLayer], noise_std: float = 0.01, jitter: float = DEFAULT_JITTER,
                 structure: str = "full", marginalise: str = "sample", init_scale: float = 1e-2) -> None:
        super().__init__(layers, noise_std, jitter)
        if structure not in ("full", "chain"):
            raise ValueError(f"structure must be 'full' or 'chain', got {structure!r}")
        if marginalise not in ("sample", "analytic"):
            raise ValueError(f"marginalise must be 'sample' or 'analytic', got {marginalise!r}")
        if marginalise == "analytic" and structure != "chain":
            raise ValueError("analytic marginalisation needs the chain factorisation (structure='chain'), eq. (14)")
        for layer in self.layers:
            if layer.z is None:
                raise ValueError(f"{layer.name} needs inducing locations z")
        self.structure = structure
        self.marginalise = marginalise
        self.sizes = [int(layer.z.shape[-1]) for layer in self.layers]
        t = self.n_replicas
        self.q_mean = nn.ParameterList(
            [nn.Parameter(layer.mean_fn(layer.z.detach()).clone()) for layer in self.layers]
        )
        if structure == "full":
            self.q_scale = tril_param(t, sum(self.sizes), init_scale)
        else:
            self.q_scale_blocks = nn.ParameterList([tril_param(t, m, init_scale) for m in self.sizes])
            self.q_coupling = nn.ParameterList(
                [nn.Parameter(torch.zeros(t, self.sizes[i], self.sizes[i - 1], dtype=torch.float64))
                 for i in range(1, self.n_layers)]
            )

    # --- the variational distribution -------------------------------------------------
    def mean_vector(self) -> torch.Tensor:
        """``m`` (T, LM)."""
        return torch.cat(list(self.q_mean), dim=-1)

    def _assemble(self, rows: list[list[torch.Tensor]]) -> torch.Tensor:
        """Lower block-triangular matrix from rows of blocks (missing upper blocks are zero)."""
        ref = rows[0][0]
        full = []
        for i, blocks in enumerate(rows):
            pad = [ref.new_zeros(ref.shape[0], self.sizes[i], self.sizes[j]) for j in range(len(blocks), len(self.sizes))]
            full.append(torch.cat(list(blocks) + pad, dim=-1))
        return torch.cat(full, dim=-2)

    def scale_tril(self) -> torch.Tensor:
        """Lower Cholesky factor ``B`` of the joint ``S = BBᵀ``: (T, LM, LM)."""
        if self.structure == "full":
            return torch.tril(self.q_scale)
        rows: list[list[torch.Tensor]] = []
        for i in range(self.n_layers):
            li = torch.tril(self.q_scale_blocks[i])
            if i == 0:
                rows.append([li])
            else:
                w = self.q_coupling[i - 1]
                rows.append([w @ b for b in rows[i - 1]] + [li])
        return self._assemble(rows)

    def covariance(self) -> torch.Tensor:
        """``S`` (T, LM, LM)."""
        b = self.scale_tril()
        return b @ b.transpose(-1, -2)

    def precision(self) -> torch.Tensor:
        """``Λ = S⁻¹`` (block-tridiagonal for the chain structure, Fig. 4)."""
        return torch.cholesky_inverse(self.scale_tril())

    def draw_inducing(self, n_samples: int, generator=None):
        m = self.mean_vector()
        eps = randn((self.n_replicas, int(n_samples), m.shape[-1]), m, generator)
        u = m.unsqueeze(1) + eps @ self.scale_tril().transpose(-1, -2)
        parts = torch.split(u, self.sizes, dim=-1)
        return [(layer.z.unsqueeze(1), ul) for layer, ul in zip(self.layers, parts)]

    def kl(self, generator=None, n_samples: int = 1) -> torch.Tensor:
        """``KL[q(u_1..u_L) || p(u_1)…p(u_L)]`` between two Gaussians (§4.1), per replica."""
        blocks = [layer.prior_scale_tril(layer.z, self.jitter) for layer in self.layers]
        lp = self._assemble([self._zeros_before(i, b) + [b] for i, b in enumerate(blocks)])
        mp = torch.cat([layer.mean_fn(layer.z) for layer in self.layers], dim=-1)
        return gaussian_kl(self.mean_vector(), self.scale_tril(), mp, lp)

    def _zeros_before(self, i: int, ref: torch.Tensor) -> list[torch.Tensor]:
        return [ref.new_zeros(ref.shape[0], self.sizes[i], self.sizes[j]) for j in range(i)]

    # --- estimators ---------------------------------------------------------------------
    def sample_f(self, x: torch.Tensor, n_samples: int, generator=None, full_cov: bool = False) -> torch.Tensor:
        if self.marginalise == "sample":
            return super().sample_f(x, n_samples, generator, full_cov)
        return self._sample_f_analytic(x, n_samples, generator)

    def _sample_f_analytic(self, x: torch.Tensor, n_samples: int, generator=None) -> torch.Tensor:
        """Eqs. (15)-(17): draw ``f_ℓ | f_{ℓ-1}, …, f_1`` with all ``u`` integrated out."""
        f = self._expand(x, n_samples)
        c = self.q_mean[0].unsqueeze(1)  # mean of q(u_ℓ | f_1..f_{ℓ-1}), (T, 1|S, M)
        l0 = torch.tril(self.q_scale_blocks[0])
        d = (l0 @ l0.transpose(-1, -2)).unsqueeze(1)  # its covariance, (T, 1|S, M, M)
        last = self.n_layers - 1
        for i, layer in enumerate(self.layers):
            z = layer.z.unsqueeze(1)
            kzz = layer.kernel(z, z)
            lzz = stable_cholesky(kzz, self.jitter, where=f"{layer.name} K(z, z)")
            # α_ℓ(f_{ℓ-1}) = K̃⁻¹K_zf by triangular solves (see conditionals.conditional), (T, S, M, N)
            a_l = torch.linalg.solve_triangular(lzz, layer.kernel(z, f), upper=False)  # L⁻¹K_zf
            alpha = torch.linalg.solve_triangular(lzz.transpose(-1, -2), a_l, upper=True)
            mean = layer.mean_fn(f) + ((c - layer.mean_fn(z)).unsqueeze(-2) @ alpha).squeeze(-2)
            # αᵀ(K̃_zz - D)α, eqs. (16)-(17), with K̃_zz = LLᵀ = K_zz + jitter·I as inside α
            d_alpha = d @ alpha
            eps = randn(mean.shape, mean, generator)
            if i == last:  # only the marginals of f_L enter the likelihood
                var = layer.kernel.diag(f) - (a_l * a_l).sum(-2) + (alpha * d_alpha).sum(-2)
                return mean + (var.clamp_min(0.0) + self.jitter).sqrt() * eps  # as DeepGP._draw
            cov = layer.kernel(f, f) - a_l.transpose(-1, -2) @ a_l + alpha.transpose(-1, -2) @ d_alpha
            lf = stable_cholesky(cov, self.jitter, where=f"{layer.name} Σ̃ (analytic marginalisation)")
            f_next = mean + (lf @ eps.unsqueeze(-1)).squeeze(-1)
            # q(u_ℓ | f_1..f_ℓ): a = c + D α Σ̃⁻¹ (f_ℓ - μ̃_ℓ),  B = D - D α Σ̃⁻¹ αᵀ D
            g = torch.linalg.solve_triangular(lf, d_alpha.transpose(-1, -2), upper=False)  # (T, S, N, M)
            a = c + (g * eps.unsqueeze(-1)).sum(-2)
            b_post = d - g.transpose(-1, -2) @ g
            # chain step (eq. 14): q(u_{ℓ+1} | f_1..f_ℓ) = N(m' + W(a - m), LLᵀ + W B Wᵀ)
            w = self.q_coupling[i]
            ln = torch.tril(self.q_scale_blocks[i + 1])
            c = self.q_mean[i + 1].unsqueeze(1) + (a - self.q_mean[i].unsqueeze(1)) @ w.transpose(-1, -2)
            w1 = w.unsqueeze(1)
            d = (ln @ ln.transpose(-1, -2)).unsqueeze(1) + w1 @ b_post @ w1.transpose(-1, -2)
            f = f_next
        raise AssertionError("unreachable")  # pragma: no cover
