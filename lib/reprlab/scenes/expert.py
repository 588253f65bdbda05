"""ECON experts (appendix C.2), all K of them evaluated as one batched network.

Each expert k has an attention U-Net a_k (C.2.2), a VAE encoder g_k and a spatial
broadcast decoder f_k (C.2.1). Parameters carry a leading expert axis (K, ...), and
activations an expert/group axis: (B, G, C, H, W). Two batched modes, no Python loop
over experts:

* ``idx=None`` — all experts on every image (G = K): grouped convolutions with
  ``groups=K`` and batched matrix products. Used for the competition.
* ``idx`` a (B,) tensor of expert indices — image b is processed by expert ``idx[b]``
  only (G = 1): the selected weights are gathered per image and run as one grouped
  convolution with ``groups=B``. Used to recompute the winners with gradients, so that
  only winning experts receive gradients and the losers' backward pass costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    bound = 1.0 / fan_in**0.5
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class GConv(nn.Module):
    """K independent 2-D convolutions; input/output (B, G, C, H, W), 'same' padding."""

    def __init__(self, k: int, cin: int, cout: int, ksize: int):
        super().__init__()
        self.k, self.cin, self.cout, self.ksize = k, cin, cout, ksize
        fan_in = cin * ksize * ksize
        self.weight = _uniform((k, cout, cin, ksize, ksize), fan_in)
        self.bias = _uniform((k, cout), fan_in)

    def forward(self, h: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        n, g, c, hh, ww = h.shape
        pad = self.ksize // 2
        if idx is None:
            if g != self.k:
                raise ValueError(f"expected {self.k} expert groups, got {g}")
            out = F.conv2d(h.reshape(n, g * c, hh, ww), self.weight.reshape(-1, c, self.ksize, self.ksize),
                           self.bias.reshape(-1), padding=pad, groups=g)
            return out.reshape(n, g, self.cout, hh, ww)
        # per-image weights: im2col + batched matmul (its backward is much cheaper on CPU
        # than a grouped convolution with groups=B)
        w = self.weight[idx].reshape(n, self.cout, c * self.ksize * self.ksize)
        cols = h.reshape(n, c, hh, ww)
        if self.ksize > 1:
            cols = F.unfold(cols, self.ksize, padding=pad)
        else:
            cols = cols.reshape(n, c, hh * ww)
        out = torch.baddbmm(self.bias[idx].unsqueeze(-1), w, cols)
        return out.reshape(n, 1, self.cout, hh, ww)


class GInstanceNorm(nn.Module):
    """Instance normalisation with a per-expert affine transform."""

    def __init__(self, k: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(k, channels))
        self.bias = nn.Parameter(torch.zeros(k, channels))

    def forward(self, h: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        mean = h.mean((-2, -1), keepdim=True)
        var = h.var((-2, -1), unbiased=False, keepdim=True)
        h = (h - mean) / torch.sqrt(var + self.eps)
        w, b = (self.weight, self.bias) if idx is None else (self.weight[idx].unsqueeze(1), self.bias[idx].unsqueeze(1))
        return h * w[..., None, None] + b[..., None, None]


class GLinear(nn.Module):
    """K independent affine maps: (B, G, in) -> (B, G, out)."""

    def __init__(self, k: int, fin: int, fout: int):
        super().__init__()
        self.weight = _uniform((k, fin, fout), fin)
        self.bias = _uniform((k, fout), fin)

    def forward(self, h: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        if idx is None:
            return torch.einsum("bki,kio->bko", h, self.weight) + self.bias
        return torch.einsum("bgi,bio->bgo", h, self.weight[idx]) + self.bias[idx].unsqueeze(1)


def _pool(h: torch.Tensor, mode: str) -> torch.Tensor:
    n, g, c, hh, ww = h.shape
    f = F.max_pool2d if mode == "max" else F.avg_pool2d
    return f(h.reshape(n, g * c, hh, ww), 2).reshape(n, g, c, hh // 2, ww // 2)


def _upsample(h: torch.Tensor) -> torch.Tensor:
    n, g, c, hh, ww = h.shape
    return F.interpolate(h.reshape(n, g * c, hh, ww), scale_factor=2, mode="nearest").reshape(n, g, c, 2 * hh, 2 * ww)


def _groups(idx: torch.Tensor | None, k: int) -> int:
    return k if idx is None else 1


class AttentionUNet(nn.Module):
    """Attention U-Nets a_k(x, s) -> attention logits, log α = logsigmoid (C.2.2).

    Down blocks: 3×3 conv, instance norm, ReLU, ×½ resampling; an MLP at the bottleneck;
    symmetric up blocks with skip connections; a 1×1 conv to one logit map per expert.
    Input: image (B, 3, H, W) and log-scope (B, 1, H, W), shared by all experts.
    """

    def __init__(self, n_experts: int, image_size: int, channels: Sequence[int] = (32, 64, 64, 64), mlp_hidden: int = 128):
        super().__init__()
        k = n_experts
        chs = [int(c) for c in channels]
        if len(chs) < 1:
            raise ValueError("attention U-Net needs at least one block")
        if image_size % 2 ** len(chs):
            raise ValueError(f"image_size {image_size} must be divisible by 2**{len(chs)} (one halving per U-Net block)")
        self.k, self.chs = k, chs
        self.bottleneck = image_size // 2 ** len(chs)
        cins = [4, *chs[:-1]]
        self.down = nn.ModuleList(GConv(k, ci, co, 3) for ci, co in zip(cins, chs))
        self.down_norm = nn.ModuleList(GInstanceNorm(k, c) for c in chs)
        flat = chs[-1] * self.bottleneck**2
        self.mlp = nn.ModuleList([GLinear(k, flat, mlp_hidden), GLinear(k, mlp_hidden, mlp_hidden), GLinear(k, mlp_hidden, flat)])
        ups = list(reversed(chs))
        prev = [chs[-1], *ups[:-1]]
        self.up = nn.ModuleList(GConv(k, p + c, c, 3) for p, c in zip(prev, ups))
        self.up_norm = nn.ModuleList(GInstanceNorm(k, c) for c in ups)
        self.head = GConv(k, chs[0], 1, 1)

    def forward(self, x: torch.Tensor, log_scope: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Return attention logits (B, G, H, W) with G = K (idx None) or 1."""
        g = _groups(idx, self.k)
        inp = torch.cat([x, log_scope], dim=1).unsqueeze(1)
        h = inp.expand(-1, g, -1, -1, -1)
        skips = []
        for conv, norm in zip(self.down, self.down_norm):
            h = F.relu(norm(conv(h, idx), idx))
            skips.append(h)
            h = _pool(h, "avg")
        n = h.shape[0]
        flat = h.reshape(n, g, -1)
        for layer in self.mlp:
            flat = F.relu(layer(flat, idx))
        h = flat.reshape(n, g, self.chs[-1], self.bottleneck, self.bottleneck)
        for conv, norm, skip in zip(self.up, self.up_norm, reversed(skips)):
            h = torch.cat([_upsample(h), skip], dim=2)
            h = F.relu(norm(conv(h, idx), idx))
        return self.head(h, idx)[:, :, 0]


class Encoder(nn.Module):
    """VAE encoders g_k(x, r) -> (μ, log σ²), each (B, G, L) (C.2.1).

    Blocks of 3×3 conv, ReLU, 2×2 max-pool; then FC(4L) + ReLU and FC(2L).
    """

    def __init__(self, n_experts: int, image_size: int, latent_dim: int, n_layers: int, channels: int):
        super().__init__()
        if image_size % 2**n_layers:
            raise ValueError(f"image_size {image_size} must be divisible by 2**{n_layers} (encoder pooling)")
        k = n_experts
        self.k, self.latent_dim = k, latent_dim
        cins = [4] + [channels] * (n_layers - 1)
        self.convs = nn.ModuleList(GConv(k, ci, channels, 3) for ci in cins)
        flat = channels * (image_size // 2**n_layers) ** 2
        self.fc1 = GLinear(k, flat, 4 * latent_dim)
        self.fc2 = GLinear(k, 4 * latent_dim, 2 * latent_dim)

    def forward(self, x: torch.Tensor, regions: torch.Tensor, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W), regions (B, G, H, W) -> μ, log σ² (B, G, L)."""
        n, g, hh, ww = regions.shape
        h = torch.cat([x.unsqueeze(1).expand(n, g, 3, hh, ww), regions.unsqueeze(2)], dim=2)
        for conv in self.convs:
            h = _pool(F.relu(conv(h, idx)), "max")
        out = self.fc2(F.relu(self.fc1(h.reshape(n, g, -1), idx)), idx)
        return out[..., : self.latent_dim], out[..., self.latent_dim:]


class BroadcastDecoder(nn.Module):
    """Spatial broadcast decoders f_k(z) -> (RGB mean, shape logit) (C.2.1).

    z is tiled over the image grid, x/y coordinate channels are appended, then
    ``n_layers`` 3×3 conv + ReLU blocks and a 1×1 conv to 4 channels (sigmoid for RGB;
    the shape channel is returned as a logit, sigmoid gives m̃).
    """

    def __init__(self, n_experts: int, image_size: int, latent_dim: int, n_layers: int, channels: int):
        super().__init__()
        k = n_experts
        self.k, self.image_size = k, image_size
        lin = torch.linspace(-1.0, 1.0, image_size)
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        self.register_buffer("coords", torch.stack([xx, yy]), persistent=False)
        cins = [latent_dim + 2] + [channels] * (n_layers - 1)
        self.convs = nn.ModuleList(GConv(k, ci, channels, 3) for ci in cins)
        self.head = GConv(k, channels, 4, 1)

    def forward(self, z: torch.Tensor, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, G, L) -> rgb (B, G, 3, H, W) in [0, 1], shape logits (B, G, H, W)."""
        n, g, latent = z.shape
        s = self.image_size
        h = torch.cat([z[..., None, None].expand(n, g, latent, s, s), self.coords.expand(n, g, 2, s, s)], dim=2)
        for conv in self.convs:
            h = F.relu(conv(h, idx))
        out = self.head(h, idx)
        return torch.sigmoid(out[:, :, :3]), out[:, :, 3]


class ExpertEnsemble(nn.Module):
    """All K experts (attention net, encoder, decoder) as one module."""

    def __init__(
        self,
        n_experts: int,
        image_size: int,
        latent_dim: int,
        vae_layers: int,
        vae_channels: int,
        attention_channels: Sequence[int],
        attention_mlp: int,
    ):
        super().__init__()
        if n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {n_experts}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.n_experts = n_experts
        self.attention = AttentionUNet(n_experts, image_size, attention_channels, attention_mlp)
        self.encoder = Encoder(n_experts, image_size, latent_dim, vae_layers, vae_channels)
        self.decoder = BroadcastDecoder(n_experts, image_size, latent_dim, vae_layers, vae_channels)
