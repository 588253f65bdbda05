"""Doubly stochastic variational inference (Salimbeni & Deisenroth 2017), paper §2.

Factorised ``q(u_1)…q(u_L)``, ``q(u_ℓ) = N(m_ℓ, S_ℓ)`` (eq. (4)); ``u_ℓ`` is marginalised
analytically so ``q(f_ℓ | f_{ℓ-1}) = N(μ̃_ℓ, Σ̃_ℓ)`` (eqs. (6)-(8)) and the ELBO (eq. (5)) is
estimated by sampling the layers one after another, each point independently.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reprlab.dgp.conditionals import DEFAULT_JITTER, gaussian_kl
from reprlab.dgp.layers import DeepGP, GPLayer, randn, tril_param

__all__ = ["DSVI", "build_layers"]


def build_layers(kernels: Sequence[str] = ("se", "periodic"), n_inducing: int = 10, with_z: bool = True,
                 z_range: tuple[float, float] = (-1.0, 1.0), n_replicas: int = 1,
                 inner_mean: str = "identity") -> list[GPLayer]:
    """Layers as in the original work: identity mean inside, zero mean last, ``z`` = linspace.

    ``inner_mean='zero'`` gives every layer a zero mean (a prior symmetric under ``f → -f``).
    """
    if len(kernels) < 1:
        raise ValueError("need at least one kernel (one per layer)")
    if int(n_inducing) != n_inducing or int(n_inducing) < 1:
        raise ValueError(f"n_inducing must be an integer >= 1, got {n_inducing!r}")
    z0 = torch.linspace(float(z_range[0]), float(z_range[1]), int(n_inducing), dtype=torch.float64)
    out = []
    for i, k in enumerate(kernels):
        mean = "zero" if i == len(kernels) - 1 else inner_mean
        out.append(GPLayer(k, mean=mean, z_init=z0 if with_z else None, index=i, n_replicas=n_replicas))
    return out


class DSVI(DeepGP):
    """Mean-field DGP: independent Gaussian inducing points per layer (eqs. (4)-(8))."""

    scheme = "dsvi"

    def __init__(self, layers: Sequence[GPLayer], noise_std: float = 0.01, jitter: float = DEFAULT_JITTER,
                 init_scale: float = 1e-2) -> None:
        super().__init__(layers, noise_std, jitter)
        for layer in self.layers:
            if layer.z is None:
                raise ValueError(f"{layer.name} needs inducing locations z for DSVI")
        self.q_mean = nn.ParameterList(
            [nn.Parameter(layer.mean_fn(layer.z.detach()).clone()) for layer in self.layers]
        )
        self.q_scale = nn.ParameterList(
            [tril_param(self.n_replicas, layer.z.shape[-1], init_scale) for layer in self.layers]
        )

    def q_scale_tril(self, index: int) -> torch.Tensor:
        """Cholesky factor of ``S_ℓ``: (T, M, M)."""
        return torch.tril(self.q_scale[index])

    def draw_inducing(self, n_samples: int, generator=None):
        out = []
        for i, layer in enumerate(self.layers):
            m = self.q_mean[i]
            eps = randn((self.n_replicas, int(n_samples), m.shape[-1]), m, generator)
            out.append((layer.z.unsqueeze(1), m.unsqueeze(1) + eps @ self.q_scale_tril(i).transpose(-1, -2)))
        return out

    def sample_f(self, x: torch.Tensor, n_samples: int, generator=None, full_cov: bool = False) -> torch.Tensor:
        """Sequential sampling from ``q(f_ℓ | f_{ℓ-1})`` (eqs. (7)-(8)).

        ``full_cov`` draws the inner layers jointly over the points (same distribution of
        ``f_L`` marginals; used to compare with the analytic chain marginalisation).
        """
        f = self._expand(x, n_samples)
        last = self.n_layers - 1
        for i, layer in enumerate(self.layers):
            joint = full_cov and i < last
            moments = layer.conditional(f, layer.z.unsqueeze(1), self.q_mean[i].unsqueeze(1),
                                        self.q_scale_tril(i).unsqueeze(1), joint, self.jitter)
            f = self._draw(moments, generator, joint, layer)
        return f

    def kl(self, generator=None, n_samples: int = 1) -> torch.Tensor:
        """``Σ_ℓ KL[q(u_ℓ) || p(u_ℓ | z_{ℓ-1})]`` in closed form (eq. (5)), per replica (T,)."""
        total = self.q_mean[0].new_zeros(self.n_replicas)
        for i, layer in enumerate(self.layers):
            lp = layer.prior_scale_tril(layer.z, self.jitter)
            total = total + gaussian_kl(self.q_mean[i], self.q_scale_tril(i), layer.mean_fn(layer.z), lp)
        return total

    @torch.no_grad()
    def layer_moments(self, index: int, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and marginal variance (T, N) of layer ``index``'s function at ``x`` (eqs. (7)-(8))."""
        layer = self.layers[index]
        xs = self._expand(self._inputs(x), 1)
        mean, var = layer.conditional(xs, layer.z.unsqueeze(1), self.q_mean[index].unsqueeze(1),
                                      self.q_scale_tril(index).unsqueeze(1), False, self.jitter)
        return mean[:, 0], var[:, 0]
