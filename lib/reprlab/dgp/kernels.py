"""Covariance functions for one-dimensional DGP layers (paper §2, the ``k_ℓ`` of eqs. (1)-(3)).

Inputs are 1-D scalars laid out as ``(T, S, n)``: ``T`` independent replicas of the model
(e.g. the 10 trials of Table 1, trained side by side), ``S`` Monte-Carlo samples (or 1 to
broadcast) and ``n`` points. Each replica has its own hyperparameters, stored as logarithms
with shape ``(T,)``. The periodic kernel is MacKay's; GPyTorch's ``PeriodicKernel`` divides
by its lengthscale rather than its square, so ``ℓ_gpytorch = ℓ²`` (see ``reprlab.dgp.peer``).

Parameterisation. Adam is not invariant to rescaling a parameter (its step is ~``lr`` in the
parameter's own units), so the raw parameters follow the original code: ``log σ²``, the log of
the precision ``γ = 1/ℓ²`` (not of ``ℓ``: a step of ``lr`` in ``log γ`` is ``lr/2`` in ``log ℓ``)
and the log of the period (the original's log-frequency ``log(π/p)`` differs only in sign and
offset, which Adam's steps do not see). Set a lengthscale with :meth:`set_lengthscale`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Kernel", "Periodic", "SquaredExponential", "make_kernel"]


def _positive(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"kernel {name} must be a positive finite number, got {value!r}")
    return value


def _log_param(value: float, name: str, n_replicas: int) -> nn.Parameter:
    return nn.Parameter(torch.full((int(n_replicas),), math.log(_positive(value, name)), dtype=torch.float64))


def _per_replica(p: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a ``(T,)`` parameter to broadcast against a ``(T, ...)`` tensor of ``ndim`` dims."""
    return p.view(p.shape[0], *([1] * (ndim - 1)))


class Kernel(nn.Module):
    """Base class: ``k(x1, x2)`` with x1 ``(T, S, n1)``, x2 ``(T, S|1, n2)`` -> ``(T, S, n1, n2)``."""

    def __init__(self, variance: float = 1.0, n_replicas: int = 1) -> None:
        super().__init__()
        if int(n_replicas) < 1:
            raise ValueError(f"n_replicas must be >= 1, got {n_replicas!r}")
        self.log_variance = _log_param(variance, "variance", n_replicas)

    @property
    def variance(self) -> torch.Tensor:
        return self.log_variance.exp()

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    @property
    def lengthscale(self) -> torch.Tensor:
        """``ℓ = γ^{-1/2}`` (both kernels store ``log γ``, see the module docstring)."""
        return torch.exp(-0.5 * self.log_gamma)

    @torch.no_grad()
    def set_lengthscale(self, value: float) -> None:
        """Set ``ℓ`` (every replica) to a positive finite ``value``."""
        self.log_gamma.fill_(-2.0 * math.log(_positive(value, "lengthscale")))

    def diag(self, x: torch.Tensor) -> torch.Tensor:
        """``k(x_i, x_i)`` for each input, shape of ``x`` (both kernels are stationary)."""
        return _per_replica(self.variance, x.dim()).expand_as(x)

    @staticmethod
    def _diff(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if x1.dim() < 2 or x2.dim() < 2:
            raise ValueError(f"kernel inputs must be (T, ..., n), got shapes {tuple(x1.shape)} and {tuple(x2.shape)}")
        return x1.unsqueeze(-1) - x2.unsqueeze(-2)


class SquaredExponential(Kernel):
    """``k(x, x') = σ² exp(-(x - x')² / (2ℓ²))``."""

    def __init__(self, variance: float = 1.0, lengthscale: float = 1.0, n_replicas: int = 1) -> None:
        super().__init__(variance, n_replicas)
        self.log_gamma = _log_param(_positive(lengthscale, "lengthscale") ** -2, "lengthscale", n_replicas)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        d = self._diff(x1, x2)
        scale = _per_replica(-0.5 * torch.exp(self.log_gamma), d.dim())
        return torch.exp(scale * d * d + _per_replica(self.log_variance, d.dim()))


class Periodic(Kernel):
    """``k(x, x') = σ² exp(-2 sin²(π |x - x'| / p) / ℓ²)`` (MacKay's periodic kernel)."""

    def __init__(self, variance: float = 1.0, lengthscale: float = 1.0, period: float = math.pi,
                 n_replicas: int = 1) -> None:
        super().__init__(variance, n_replicas)
        self.log_gamma = _log_param(_positive(lengthscale, "lengthscale") ** -2, "lengthscale", n_replicas)
        self.log_period = _log_param(period, "period", n_replicas)

    @property
    def period(self) -> torch.Tensor:
        return self.log_period.exp()

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        d = self._diff(x1, x2)
        freq = _per_replica(math.pi * torch.exp(-self.log_period), d.dim())
        s = torch.sin(freq * d)
        scale = _per_replica(-2.0 * torch.exp(self.log_gamma), d.dim())
        return torch.exp(scale * s * s + _per_replica(self.log_variance, d.dim()))


def make_kernel(name: str | Kernel, n_replicas: int = 1, **params: float) -> Kernel:
    """Build a kernel from a name: ``'se'`` (squared exponential) or ``'periodic'``."""
    if isinstance(name, Kernel):
        return name
    key = str(name).lower()
    if key in ("se", "rbf", "squared_exponential"):
        return SquaredExponential(n_replicas=n_replicas, **params)
    if key in ("periodic", "per"):
        return Periodic(n_replicas=n_replicas, **params)
    raise ValueError(f"kernel must be 'se' or 'periodic' (or a Kernel), got {name!r}")
