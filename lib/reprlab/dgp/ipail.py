"""Inducing points as inducing locations, paper §4.2 (eqs. (18)-(23)).

Only the first layer has inducing inputs ``z`` (learnable). Each layer's outputs at the
propagated inducing inputs, ``f_ℓ^z = (f_ℓ ∘ … ∘ f_1)(z)``, get a factorised Gaussian
``q(f_ℓ^z) = N(m_ℓ, S_ℓ)`` (eq. (19)); the pair ``(f_{ℓ-1}^z, f_ℓ^z)`` acts as inducing
locations and points of layer ``ℓ``, which couples the layers although ``q`` factorises.

ELBO (eqs. (20)-(21)): ``E_q[log p(y | f_L)]`` by sampling ``f^z`` then each layer given its
inducing pair (eq. (22)), minus ``Σ_ℓ E_{q(f_{ℓ-1}^z)} KL[q(f_ℓ^z) || p(f_ℓ^z | f_{ℓ-1}^z)]``,
each KL analytic for a given draw and averaged over the same draws (eq. (23)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reprlab.dgp.conditionals import DEFAULT_JITTER, gaussian_kl, stable_cholesky
from reprlab.dgp.layers import DeepGP, GPLayer, as_tensor_1d, check_data, randn, tril_param

__all__ = ["InducingLocationsDGP"]


class InducingLocationsDGP(DeepGP):
    """DGP whose inducing points of layer ``ℓ`` are the inducing locations of layer ``ℓ+1``."""

    scheme = "ipail"

    def __init__(self, layers: Sequence[GPLayer], z_init, noise_std: float = 0.01,
                 jitter: float = DEFAULT_JITTER, init_scale: float = 1e-3, init_noise: float = 1e-2,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(layers, noise_std, jitter)
        for layer in self.layers:
            if layer.z is not None:
                raise ValueError(f"{layer.name} must not own inducing locations: only the first layer's z exist (§4.2)")
        t = self.n_replicas
        z0 = as_tensor_1d(z_init, "z_init")
        self.z = nn.Parameter(z0.clone().repeat(t, 1))
        m = z0.shape[0]
        means = []
        prev = z0
        for layer in self.layers:
            base = layer.mean_fn(prev)
            noise = init_noise * torch.randn(t, m, generator=generator, dtype=torch.float64)
            means.append(nn.Parameter(base + noise))
            prev = base
        self.q_mean = nn.ParameterList(means)
        self.q_scale = nn.ParameterList([tril_param(t, m, init_scale) for _ in self.layers])

    def q_scale_tril(self, index: int) -> torch.Tensor:
        return torch.tril(self.q_scale[index])

    def draw_inducing(self, n_samples: int, generator=None):
        """Step 1 of §4.2: ``f^z_ℓ ~ q(f^z_ℓ)`` independently; layer ℓ's pair is (f^z_{ℓ-1}, f^z_ℓ)."""
        prev = self.z.unsqueeze(1)
        out = []
        for i in range(self.n_layers):
            m = self.q_mean[i]
            eps = randn((self.n_replicas, int(n_samples), m.shape[-1]), m, generator)
            fz = m.unsqueeze(1) + eps @ self.q_scale_tril(i).transpose(-1, -2)
            out.append((prev, fz))
            prev = fz
        return out

    def kl_given(self, inducing) -> torch.Tensor:
        """Eq. (23): ``Σ_ℓ mean_s KL[q(f_ℓ^z) || N(μ_ℓ(f^{z,s}_{ℓ-1}), k_ℓ(f^{z,s}_{ℓ-1}, ·))]``."""
        total = self.z.new_zeros(self.n_replicas)
        for i, layer in enumerate(self.layers):
            prev = inducing[i][0]  # (T, 1|S, M)
            lp = stable_cholesky(layer.kernel(prev, prev), self.jitter, where=f"{layer.name} prior K(f^z, f^z)")
            kls = gaussian_kl(self.q_mean[i].unsqueeze(1), self.q_scale_tril(i).unsqueeze(1), layer.mean_fn(prev), lp)
            total = total + kls.mean(-1)
        return total

    def kl(self, generator=None, n_samples: int = 1) -> torch.Tensor:
        """Monte-Carlo estimate of the KL sum (21) from ``n_samples`` fresh draws of ``f^z``."""
        return self.kl_given(self.draw_inducing(n_samples, generator))

    def elbo(self, x, y, n_samples: int = 10, generator=None) -> tuple[torch.Tensor, dict]:
        """Eqs. (20)-(21); the KL reuses the draws of ``f^z`` made for the expectation (§4.2)."""
        xt, yt = check_data(x, y, device=self.ref.device)
        n_samples = int(n_samples)
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        inducing = self.draw_inducing(n_samples, generator)
        # steps 2-3 of §4.2: each layer given its inducing pair (eq. (22)), DeepGP._propagate
        ell = self.expected_log_lik(self._propagate(xt, inducing, generator, self.draws == "joint"), yt)
        kl = self.kl_given(inducing)
        return ell - kl, {"ell": ell.detach(), "kl": kl.detach()}
