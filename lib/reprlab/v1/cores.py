"""Rotation-equivariant convolutional core (Ecker et al. 2019, as used by the thesis).

Thesis ch. 6 and the rotation-invariant clustering paper (Sec. 3, "Rotation-equivariant
core"): every filter exists in ``O`` rotated copies (rotated by ``2 pi / O``), so the
feature vector at each position is an ``F x O`` array and rotating the input by
``2 pi / O`` cyclically shifts its orientation axis. Filters are expanded in the 2-D
Hermite basis of :mod:`reprlab.v1.hermite`; rotated copies are obtained by rotating the
coefficients, and in later layers the input-orientation axis of the weights is cyclically
shifted together with the output orientation:

    W[f, o, f', o'] = rotate(c[f, f', (o' - o) mod O], 2 pi o / O)

Channels are laid out feature-major (channel ``f * O + o``). Batch norm is shared across
rotations (statistics and affine parameters per feature, pooled over orientations), the
bias is shared across rotations too, so the whole core is exactly equivariant under
rotations by multiples of 90 degrees when ``O`` is divisible by 4.

Regularisers (Klindt et al. 2017; Ecker et al. 2019): a Laplacian smoothness penalty on the
first-layer filters and a group-sparsity penalty on the coefficients of later layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from reprlab.v1.hermite import default_sigma, hermite_basis, n_basis, rotation_matrix

__all__ = ["HermiteConv2d", "RotationEquivariantCore", "SharedRotationBatchNorm"]

_LAPLACE = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])


class HermiteConv2d(nn.Module):
    """One rotation-equivariant convolution with Hermite-expanded filters.

    ``in_rotations = 1`` for the first layer (plain input channels), ``in_rotations =
    num_rotations`` for later layers (input channels ``in_features * O``, feature-major).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int,
        num_rotations: int,
        in_rotations: int,
        n_max: int | None = None,
        sigma: float | None = None,
        init_std: float = 0.1,
    ):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
        if num_rotations < 1:
            raise ValueError(f"num_rotations must be >= 1, got {num_rotations}")
        if in_rotations not in (1, num_rotations):
            raise ValueError(f"in_rotations must be 1 or num_rotations={num_rotations}, got {in_rotations}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.kernel_size, self.num_rotations, self.in_rotations = int(kernel_size), int(num_rotations), int(in_rotations)
        # enough ranks to resolve the kernel; Ecker et al. use ~ kernel_size ranks with upsampling
        self.n_max = int(n_max) if n_max is not None else max(2, (kernel_size + 1) // 2)
        sigma = sigma if sigma is not None else default_sigma(kernel_size, self.n_max)
        nb = n_basis(self.n_max)
        basis = hermite_basis(kernel_size, self.n_max, sigma, dtype=torch.float64)
        angles = torch.arange(num_rotations, dtype=torch.float64) * (2 * math.pi / num_rotations)
        R = rotation_matrix(angles, self.n_max, dtype=torch.float64)  # (O, nb, nb)
        # rotated_basis[o, b] = sum_b' R_o[b', b] basis[b']: filter_o = sum_b c_b rotated_basis[o, b]
        rot_basis = torch.einsum("oij,ihw->ojhw", R, basis).to(torch.float32)
        self.register_buffer("rotated_basis", rot_basis, persistent=False)
        idx = (torch.arange(num_rotations)[None, :] - torch.arange(num_rotations)[:, None]) % num_rotations
        self.register_buffer("shift_index", idx, persistent=False)  # [o, o'] -> (o' - o) mod O
        scale = init_std / math.sqrt(max(1, in_features * in_rotations))
        self.coeffs = nn.Parameter(torch.randn(out_features, in_features, in_rotations, nb) * scale)

    def weight(self) -> torch.Tensor:
        """Full filter bank ``(F_out * O, F_in * O_in, k, k)``."""
        O, k = self.num_rotations, self.kernel_size
        c = self.coeffs
        if self.in_rotations == 1:
            w = torch.einsum("fgb,obhw->foghw", c[:, :, 0, :], self.rotated_basis)
            w = w.reshape(self.out_features * O, self.in_features, k, k)
        else:
            cs = c[:, :, self.shift_index, :]  # (F, F', O, O', nb) with [o, o'] = c[..., (o'-o)%O, :]
            w = torch.einsum("fgpqb,pbhw->fpgqhw", cs, self.rotated_basis)
            w = w.reshape(self.out_features * O, self.in_features * O, k, k)
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), padding=self.kernel_size // 2)

    def smoothness(self) -> torch.Tensor:
        """Laplacian L2 penalty of the base-orientation filters, normalised by their energy."""
        w = torch.einsum("fgqb,bhw->fgqhw", self.coeffs, self.rotated_basis[0])
        w = w.reshape(-1, 1, self.kernel_size, self.kernel_size)
        lap = F.conv2d(w, _LAPLACE.to(w)[None, None], padding=1)
        return lap.pow(2).sum() / (w.pow(2).sum() + 1e-8)

    def group_sparsity(self) -> torch.Tensor:
        """Group L1: sum over (out, in) feature pairs of the L2 norm of their coefficients."""
        return self.coeffs.pow(2).sum(dim=(2, 3)).add(1e-12).sqrt().sum()


class SharedRotationBatchNorm(nn.Module):
    """Batch norm with statistics and affine parameters shared across the ``O`` rotations."""

    def __init__(self, features: int, num_rotations: int, momentum: float = 0.1):
        super().__init__()
        self.features, self.num_rotations = features, num_rotations
        self.bn = nn.BatchNorm2d(features, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.bn(x.reshape(b, self.features, self.num_rotations * h, w))
        return y.reshape(b, c, h, w)


class RotationEquivariantCore(nn.Module):
    """Stack of :class:`HermiteConv2d` + shared batch norm + ELU (Ecker et al. 2019).

    Output: feature maps ``(B, F * O, H / pool, W / pool)`` of the last layer ("same" padding,
    stride 1), channels feature-major. ``final_nonlinearity`` applies ELU after the last layer
    too. ``pool > 1`` average-pools after the first layer (full-resolution first-layer filters,
    cheaper and larger receptive fields later; 2 x 2 pooling of even-sized maps commutes with
    90-degree rotations, so equivariance stays exact).
    """

    def __init__(
        self,
        in_channels: int = 1,
        features: int = 16,
        num_rotations: int = 8,
        kernel_sizes: Sequence[int] = (13, 5, 5),
        n_max: Sequence[int | None] | None = None,
        final_nonlinearity: bool = True,
        bn_momentum: float = 0.1,
        pool: int = 1,
    ):
        super().__init__()
        if in_channels < 1 or features < 1:
            raise ValueError(f"in_channels and features must be >= 1, got {in_channels}, {features}")
        kernel_sizes = [int(k) for k in kernel_sizes]
        if not kernel_sizes:
            raise ValueError("kernel_sizes must list at least one layer")
        n_max = list(n_max) if n_max is not None else [None] * len(kernel_sizes)
        if len(n_max) != len(kernel_sizes):
            raise ValueError(f"n_max has {len(n_max)} entries for {len(kernel_sizes)} layers")
        self.in_channels, self.features, self.num_rotations = in_channels, features, num_rotations
        self.kernel_sizes = kernel_sizes
        self.final_nonlinearity = final_nonlinearity
        if int(pool) < 1:
            raise ValueError(f"pool must be a positive int, got {pool}")
        self.pool = int(pool)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, k in enumerate(kernel_sizes):
            self.convs.append(
                HermiteConv2d(
                    in_channels if i == 0 else features, features, k, num_rotations,
                    in_rotations=1 if i == 0 else num_rotations, n_max=n_max[i],
                )
            )
            self.norms.append(SharedRotationBatchNorm(features, num_rotations, bn_momentum))

    @property
    def out_channels(self) -> int:
        return self.features * self.num_rotations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"core expects images (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if self.pool > 1 and (x.shape[-2] % self.pool or x.shape[-1] % self.pool):
            raise ValueError(f"core pool={self.pool} must divide the input size {tuple(x.shape[-2:])}")
        n = len(self.convs)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(conv(x))
            if i < n - 1 or self.final_nonlinearity:
                x = F.elu(x)
            if i == 0 and self.pool > 1:
                x = F.avg_pool2d(x, self.pool)
        return x

    def regularizer(self, smoothness: float = 0.0, sparsity: float = 0.0) -> torch.Tensor:
        """``smoothness * laplace(layer 1) + sparsity * group_L1(layers 2..)``."""
        reg = self.convs[0].coeffs.new_zeros(())
        if smoothness:
            reg = reg + smoothness * self.convs[0].smoothness()
        if sparsity:
            for conv in self.convs[1:]:
                reg = reg + sparsity * conv.group_sparsity()
        return reg
