"""Per-neuron readouts on top of the shared core: ``a_n(x) = f(r_n . s_n . Phi(x) + b_n)``.

Eq. (1) of the rotation-invariant clustering paper: each neuron's linear readout is
factorised into a spatial part ``s_n`` and a vector of feature weights ``r_n`` of length
``K = F x O`` (the "bar code"); ``f`` is a positive output nonlinearity. All neurons of one
animal are one module, so thousands of neurons cost one batched contraction.

Two spatial parts are provided:

* :class:`FactorizedReadout` (Klindt et al. 2017; Ecker et al. 2019): a dense spatial mask
  ``s_n`` over the feature map. Cost ``B * C * P * N`` multiply-adds (P = feature-map pixels),
  which dominates for many neurons.
* :class:`GaussianReadout` (Lurz et al. 2021): ``s_n`` is a point at a learned position
  ``mu_n`` read by bilinear interpolation (``grid_sample``); during training the position is
  jittered by ``N(0, sigma_n^2)`` so its gradient sees a neighbourhood. Cost ``B * C * N``.

Positions are exposed in input-image pixels ``(x, y)`` (column, row; see
:mod:`reprlab.v1.stimuli`). Internally they live in ``grid_sample`` coordinates in
``[-1, 1]`` with ``align_corners=True`` (``-1`` = first pixel centre, ``+1`` = last).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NONLINEARITIES",
    "FactorizedReadout",
    "GaussianReadout",
    "inverse_nonlinearity",
    "output_nonlinearity",
    "point_readout",
]

NONLINEARITIES: tuple[str, ...] = ("elu1", "softplus")


def output_nonlinearity(x: torch.Tensor, kind: str = "elu1") -> torch.Tensor:
    """Positive output nonlinearity: ``ELU(x) + 1`` or ``softplus(x)``."""
    if kind == "elu1":
        return F.elu(x) + 1.0
    if kind == "softplus":
        return F.softplus(x)
    raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {kind!r}")


def inverse_nonlinearity(y: torch.Tensor, kind: str = "elu1") -> torch.Tensor:
    """Inverse of :func:`output_nonlinearity` for positive ``y`` (used to initialise biases)."""
    y = y.clamp_min(1e-4)
    if kind == "elu1":
        return torch.where(y >= 1.0, y - 1.0, torch.log(y))
    if kind == "softplus":
        return y + torch.log(-torch.expm1(-y))
    raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {kind!r}")


def _corners(grid: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices ``(4, N)`` of the 4 neighbouring pixels and bilinear weights ``(4, N)``."""
    g = grid.clamp(-1.0, 1.0)
    xf = (g[:, 0] + 1.0) * 0.5 * (w - 1)
    yf = (g[:, 1] + 1.0) * 0.5 * (h - 1)
    x0 = xf.detach().floor().clamp(0, max(w - 2, 0))
    y0 = yf.detach().floor().clamp(0, max(h - 2, 0))
    dx, dy = xf - x0, yf - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    idx = torch.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1])
    wts = torch.stack([(1 - dx) * (1 - dy), dx * (1 - dy), (1 - dx) * dy, dx * dy])
    return idx, wts


def _row_table(features: torch.Tensor) -> torch.Tensor:
    """Position-major copy ``(h * w, B, C)`` of ``features (B, C, h, w)``: gathers of
    contiguous ``B * C`` rows, whose backward is a row-wise ``index_add``."""
    b, c, h, w = features.shape
    return features.permute(2, 3, 0, 1).contiguous().view(h * w, b, c)


def _bilinear_rows(features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples at ``grid (N, 2)`` as ``(N, B, C)``."""
    _, _, h, w = features.shape
    idx, wts = _corners(grid, h, w)
    rows = _row_table(features).index_select(0, idx.reshape(-1))  # (4N, B, C)
    return (rows.view(4, -1, *rows.shape[1:]) * wts[:, :, None, None]).sum(0)


def _readout_drive(features: torch.Tensor, grid: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_c r_nc Phi_c(b, mu_n)`` with bilinear interpolation, as ``(B, N)``.

    The feature weights are contracted with each of the 4 neighbouring pixels first (one
    gather, one batched matmul) and the bilinear weights are applied to the scalar drives,
    which keeps the elementwise work at ``B * N`` instead of ``B * C * N``.
    """
    _, _, h, w = features.shape
    idx, wts = _corners(grid, h, w)
    n = grid.shape[0]
    rows = _row_table(features).index_select(0, idx.reshape(-1))  # (4N, B, C)
    drives = torch.bmm(rows, weights.repeat(4, 1)[:, :, None])[:, :, 0].view(4, n, -1)  # (4, N, B)
    return (drives * wts[:, :, None]).sum(0).T


def point_readout(features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear feature vectors at points: ``features (B, C, h, w)``, ``grid (N, 2)`` or
    ``(B, N, 2)`` in ``[-1, 1]`` (x, y) -> ``(B, C, N)``.

    Same values as ``grid_sample(..., align_corners=True, padding_mode="border")``; for shared
    points ``(N, 2)`` it is computed by row gathers (the CPU backward of ``grid_sample``
    dominated the training step for thousands of neurons).
    """
    if grid.dim() == 3:  # per-sample points
        out = F.grid_sample(features, grid.unsqueeze(2), mode="bilinear", align_corners=True,
                            padding_mode="border")
        return out.squeeze(-1)
    return _bilinear_rows(features, grid).permute(1, 2, 0)


class _Readout(nn.Module):
    """Shared parts: feature weights ``(N, C)``, bias, positivity, L1, nonlinearity."""

    def __init__(self, n_neurons: int, channels: int, feature_shape: tuple[int, int],
                 positive: bool = False, nonlinearity: str = "elu1", init_std: float | None = None):
        super().__init__()
        if n_neurons < 1 or channels < 1:
            raise ValueError(f"need n_neurons >= 1 and channels >= 1, got {n_neurons}, {channels}")
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
        self.n_neurons, self.channels = int(n_neurons), int(channels)
        self.feature_shape = (int(feature_shape[0]), int(feature_shape[1]))
        self.positive, self.nonlinearity = bool(positive), nonlinearity
        std = init_std if init_std is not None else 1.0 / math.sqrt(channels)
        w = torch.randn(n_neurons, channels) * std
        self.features = nn.Parameter(w.abs() if positive else w)
        self.bias = nn.Parameter(torch.zeros(n_neurons))

    def init_bias(self, mean_response: torch.Tensor) -> None:
        """Set biases so that a zero drive predicts each neuron's mean response."""
        with torch.no_grad():
            self.bias.copy_(inverse_nonlinearity(mean_response.to(self.bias), self.nonlinearity))

    @torch.no_grad()
    def constrain(self) -> None:
        """Projection after each optimiser step (positivity of feature weights)."""
        if self.positive:
            self.features.clamp_(min=0.0)

    def feature_l1(self) -> torch.Tensor:
        return self.features.abs().sum() / self.n_neurons

    def activate(self, drive: torch.Tensor) -> torch.Tensor:
        return output_nonlinearity(drive + self.bias, self.nonlinearity)

    # grid <-> feature-map pixel coordinates (x, y)
    def _grid_to_pixels(self, grid: torch.Tensor) -> torch.Tensor:
        h, w = self.feature_shape
        scale = grid.new_tensor([max(w - 1, 1), max(h - 1, 1)])
        return (grid + 1.0) / 2.0 * scale

    def _pixels_to_grid(self, xy: torch.Tensor) -> torch.Tensor:
        h, w = self.feature_shape
        scale = xy.new_tensor([max(w - 1, 1), max(h - 1, 1)])
        return xy / scale * 2.0 - 1.0


class GaussianReadout(_Readout):
    """Point readout at a learned position with Gaussian jitter during training (Lurz et al. 2021)."""

    def __init__(self, n_neurons: int, channels: int, feature_shape: tuple[int, int],
                 positive: bool = False, nonlinearity: str = "elu1", init_sigma: float = 0.1,
                 init_range: float = 0.5, generator: torch.Generator | None = None):
        super().__init__(n_neurons, channels, feature_shape, positive, nonlinearity)
        mu = (torch.rand(n_neurons, 2, generator=generator) * 2 - 1) * init_range
        self.mu = nn.Parameter(mu)
        self.sigma = nn.Parameter(torch.full((n_neurons,), float(init_sigma)))

    def grid(self, noise: torch.Tensor | None = None) -> torch.Tensor:
        g = self.mu
        if noise is not None:
            g = g + noise * self.sigma.abs()[:, None]
        return g.clamp(-1.0, 1.0)

    def forward(self, features: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``features (B, C, h, w)`` -> rates ``(B, N)``; ``noise (N, 2)`` jitters positions."""
        return self.activate(_readout_drive(features, self.grid(noise), self.features))

    def positions(self) -> torch.Tensor:
        """Receptive-field positions in feature-map pixels ``(N, 2)`` as ``(x, y)``."""
        return self._grid_to_pixels(self.mu.detach().clamp(-1, 1))

    def set_positions(self, xy: torch.Tensor) -> None:
        with torch.no_grad():
            self.mu.copy_(self._pixels_to_grid(xy.to(self.mu)).clamp(-1, 1))

    @torch.no_grad()
    def constrain(self) -> None:
        super().constrain()
        self.mu.clamp_(-1.0, 1.0)

    def regularizer(self, features_l1: float = 0.0, mask_l1: float = 0.0) -> torch.Tensor:
        return features_l1 * self.feature_l1() if features_l1 else self.features.new_zeros(())


class FactorizedReadout(_Readout):
    """Dense spatial mask x feature weights (Klindt et al. 2017), ``w_n = s_n (x) r_n``."""

    def __init__(self, n_neurons: int, channels: int, feature_shape: tuple[int, int],
                 positive: bool = False, nonlinearity: str = "elu1", positive_mask: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__(n_neurons, channels, feature_shape, positive, nonlinearity)
        h, w = self.feature_shape
        self.positive_mask = bool(positive_mask)
        m = torch.rand(n_neurons, h, w, generator=generator) / (h * w)
        self.mask = nn.Parameter(m)

    def forward(self, features: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = features.shape
        if (h, w) != self.feature_shape:
            raise ValueError(f"readout expects feature maps {self.feature_shape}, got {(h, w)}")
        z = torch.einsum("bcp,np->bcn", features.reshape(b, c, h * w), self.mask.reshape(self.n_neurons, -1))
        drive = torch.einsum("bcn,nc->bn", z, self.features)
        return self.activate(drive)

    def positions(self) -> torch.Tensor:
        """Centre of mass of ``|mask|`` in feature-map pixels ``(N, 2)`` as ``(x, y)``."""
        h, w = self.feature_shape
        m = self.mask.detach().abs().reshape(self.n_neurons, h, w)
        tot = m.sum(dim=(1, 2)).clamp_min(1e-12)
        ys = torch.arange(h, dtype=m.dtype, device=m.device)
        xs = torch.arange(w, dtype=m.dtype, device=m.device)
        return torch.stack([(m.sum(1) * xs).sum(1) / tot, (m.sum(2) * ys).sum(1) / tot], dim=1)

    def set_positions(self, xy: torch.Tensor, width: float = 1.5) -> None:
        """Initialise masks as Gaussian blobs of ``width`` feature pixels around ``xy``."""
        h, w = self.feature_shape
        ys = torch.arange(h, dtype=self.mask.dtype)[None, :, None]
        xs = torch.arange(w, dtype=self.mask.dtype)[None, None, :]
        xy = xy.to(self.mask.dtype).cpu()
        d2 = (xs - xy[:, 0, None, None]) ** 2 + (ys - xy[:, 1, None, None]) ** 2
        blob = torch.exp(-d2 / (2 * width**2))
        blob = blob / blob.sum(dim=(1, 2), keepdim=True)
        with torch.no_grad():
            self.mask.copy_(blob.to(self.mask))

    @torch.no_grad()
    def constrain(self) -> None:
        super().constrain()
        if self.positive_mask:
            self.mask.clamp_(min=0.0)

    def regularizer(self, features_l1: float = 0.0, mask_l1: float = 0.0) -> torch.Tensor:
        reg = self.features.new_zeros(())
        if features_l1:
            reg = reg + features_l1 * self.feature_l1()
        if mask_l1:
            reg = reg + mask_l1 * self.mask.abs().sum() / self.n_neurons
        return reg
