"""The single-layer texture model (paper sections 2-4).

One convolutional layer (stride 1, no bias, zero padding (k-1)/2) with the filters of a
:class:`~reprlab.textures.filterbanks.FilterBank`, a pointwise nonlinearity (ReLU,
sigmoid, or none = the linear control of Fig. 2), on inputs whose mean intensity per
colour channel has been removed (the paper subtracts the ImageNet channel means).

- eq. (1): Gram matrix ``G_ij = 1/M sum_m F_im F_jm`` over the M = H W positions,
- eq. (2): normalised Gram distance between two textures, :func:`gram_distance`,
- eq. (3): normalised pixel distance, :func:`pixel_distance`,
- eq. (5): synthesis objective ``E(y) = sum (G(x) - G(y))^2 / sum G(x)^2``, :meth:`TextureModel.loss`.

Kernels of size >= ``fft_threshold`` are applied by FFT (:mod:`reprlab.textures.fftconv`),
smaller ones by direct ``conv2d``; both give the same feature maps. The default threshold (7)
was chosen by measurement (bench/bench_textures.py, threshold scan: 7 and 11 tie at 256 px).
:meth:`TextureModel.loss` is fused (``_TextureLoss``): features written through the
nonlinearity into one buffer, symmetric Gram, and a hand-written backward; it equals the
straightforward conv2d + autograd computation (tests/test_textures_model.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reprlab.textures.fftconv import ACT_INTO, FFTConv2d, conv2d_same, conv2d_same_adjoint
from reprlab.textures.filterbanks import FilterBank

#: ImageNet mean intensity per RGB channel (in [0, 1]); its luminance for grayscale
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_MEAN_GRAY = 0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406

#: kernels of this size and larger go through the FFT path by default (threshold scan in bench/bench_textures.py)
FFT_THRESHOLD = 7

NONLINEARITIES = ("relu", "sigmoid", "none")


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Eq. (1): (B, N, H, W) feature maps -> (B, N, N) Gram matrices averaged over the M = H W positions."""
    if features.ndim != 4:
        raise ValueError(f"expected features (B, N, H, W), got shape {tuple(features.shape)}")
    b, n, h, w = features.shape
    f = features.reshape(b, n, h * w)
    return f @ f.transpose(1, 2) / (h * w)


def _as_batch(x: torch.Tensor, channels: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor image, got {type(x).__name__}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"expected an image (C, H, W) or batch (B, C, H, W) with C={channels}, got {tuple(x.shape)}")
    return x


def _sym_gram(f: torch.Tensor, block: int) -> torch.Tensor:
    """F F^T for f (N, M), computing only the upper block triangle (the Gram is symmetric)."""
    n = f.shape[0]
    g = f.new_empty(n, n)
    for s in range(0, n, block):
        e = min(s + block, n)
        rows = f[s:e] @ f[s:].T
        g[s:e, s:] = rows
        g[e:, s:e] = rows[:, e - s:].T
    return g


class _GramLoss(torch.autograd.Function):
    """Eq. (5) for one image from its features f (N, M) and the target Gram t (N, N).

    Forward: G = F F^T / M from the upper block triangle only; E = ||G - T||^2 / ||T||^2.
    Backward by hand: dE/dF = 4 (G - T) F / (M ||T||^2) (G and T symmetric), one N x N x M
    product instead of autograd's two, and no per-block gradient accumulation.
    """

    @staticmethod
    def forward(ctx, f: torch.Tensor, t: torch.Tensor, block: int) -> torch.Tensor:
        m = f.shape[1]
        d = _sym_gram(f, block).div_(m).sub_(t)
        norm = (t * t).sum()
        ctx.save_for_backward(f, d)
        ctx.scale = 4.0 / (m * norm)
        return (d * d).sum() / norm

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        f, d = ctx.saved_tensors
        return (d @ f).mul_(grad * ctx.scale), None, None


class _TextureLoss(torch.autograd.Function):
    """Eq. (5) for one mean-removed image x (C, H, W), fused end to end with a hand-written backward.

    Forward: the feature maps of every scale are written, through the nonlinearity, straight
    into one (N, H W) buffer (no per-scale outputs, no concatenation, no autograd graph);
    then E = ||G - T||^2 / ||T||^2 with G = F F^T / M from the upper block triangle.
    Backward: dE/dF = 4 (G - T) F / (M ||T||^2); times the nonlinearity's derivative (read off
    the saved F: F > 0 for ReLU, F (1 - F) for the sigmoid), in place; then the adjoint of each
    convolution (transposed conv2d for small kernels, FFT adjoint for large ones).
    ``t`` is in the model's internal map order (:attr:`TextureModel._order`).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, t: torch.Tensor, model: TextureModel) -> torch.Tensor:
        f = model._feature_rows(x)
        m = f.shape[1]
        d = _sym_gram(f, model.gram_block).div_(m).sub_(t)
        norm = (t * t).sum()
        ctx.save_for_backward(f, d)
        ctx.model, ctx.hw = model, tuple(x.shape[-2:])
        ctx.scale = 4.0 / (m * norm)
        return (d * d).sum() / norm

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        f, d = ctx.saved_tensors
        model = ctx.model
        h, w = ctx.hw
        g = _gram_grad_into_features(d, f, grad * ctx.scale, model.nonlinearity).view(-1, h, w)
        return model._conv_adjoint(g), None, None


def _gram_grad_into_features(d: torch.Tensor, f: torch.Tensor, scale: torch.Tensor, nonlinearity: str,
                             cols: int = 4096) -> torch.Tensor:
    """``scale * (d @ f) * act'(f)`` for features f = act(y) (N, M), in blocks of ``cols`` positions.

    The derivative of the nonlinearity is read off its output (ReLU: f > 0; sigmoid: f (1 - f))
    and applied to each block while it is still in cache (measured ~10% faster than one big
    product followed by a separate masking pass)."""
    n, m = f.shape
    out = f.new_empty(n, m)
    for j0 in range(0, m, cols):
        fc = f[:, j0:j0 + cols]
        g = torch.matmul(d, fc).mul_(scale)
        if nonlinearity == "relu":
            torch.mul(g, fc > 0, out=out[:, j0:j0 + cols])
        elif nonlinearity == "sigmoid":
            torch.mul(g, fc * (1 - fc), out=out[:, j0:j0 + cols])
        else:
            out[:, j0:j0 + cols] = g
    return out


class TextureModel(nn.Module):
    """Single conv layer + nonlinearity; Gram statistics of its feature maps (paper sections 2-3).

    Parameters
    ----------
    bank: the filters (one or several sizes); all feature maps form one layer of N maps.
    nonlinearity: 'relu' (the paper's default), 'sigmoid' or 'none' (linear control).
    fft_threshold: kernels with size >= this use the FFT path; ``None`` = all direct conv2d.
    channel_mean: subtracted from each input channel: 'imagenet' (paper), 'image' (the
        input's own mean) or explicit per-channel values.
    gram_block: the loss computes the symmetric Gram in row blocks of this many maps,
        upper block triangle only (same value, ~40% fewer flops for N = 1024), and its
        gradient in one product (see ``_GramLoss``).
    """

    def __init__(
        self,
        bank: FilterBank,
        nonlinearity: str = "relu",
        fft_threshold: int | None = FFT_THRESHOLD,
        channel_mean: str | Sequence[float] = "imagenet",
        gram_block: int = 256,
    ):
        super().__init__()
        if not isinstance(bank, FilterBank):
            raise ValueError(f"bank must be a FilterBank, got {type(bank).__name__}")
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
        if not isinstance(gram_block, int) or gram_block < 1:
            raise ValueError(f"gram_block must be a positive int, got {gram_block!r}")
        self.bank = bank
        self.nonlinearity = nonlinearity
        self.fft_threshold = fft_threshold
        self.gram_block = gram_block
        self.in_channels = bank.in_channels
        self.n_maps = bank.n_maps
        c = self.in_channels
        if isinstance(channel_mean, str):
            if channel_mean == "imagenet":
                mean = list(IMAGENET_MEAN_RGB) if c == 3 else [IMAGENET_MEAN_GRAY]
            elif channel_mean == "image":
                mean = None
            else:
                raise ValueError(f"channel_mean must be 'imagenet', 'image' or {c} numbers, got {channel_mean!r}")
        else:
            mean = [float(v) for v in channel_mean]
            if len(mean) != c:
                raise ValueError(f"channel_mean needs {c} values, got {len(mean)}")
        self.channel_mean = channel_mean if isinstance(channel_mean, str) else tuple(mean)
        self.register_buffer("mean", None if mean is None else torch.tensor(mean).view(1, c, 1, 1), persistent=False)

        use_fft = [fft_threshold is not None and k >= fft_threshold for k in bank.sizes]
        self._direct_idx: list[int] = []
        fft_w, self._fft_idx = [], []
        for i, (w, f) in enumerate(zip(bank.weights, use_fft)):
            if f:
                fft_w.append(w)
                self._fft_idx.append(i)
            else:
                self.register_buffer(f"weight_{i}", w.clone(), persistent=False)
                self._direct_idx.append(i)
        self.fftconv = FFTConv2d(fft_w) if fft_w else None
        self._fft_maps = [int(bank.weights[i].shape[0]) for i in self._fft_idx]
        # internal map order of the fused loss: direct scales first, then the FFT block
        starts = [0]
        for w in bank.weights:
            starts.append(starts[-1] + int(w.shape[0]))
        order = [r for i in self._direct_idx + self._fft_idx for r in range(starts[i], starts[i + 1])]
        self._order = None if order == list(range(self.n_maps)) else torch.tensor(order)

    def extra_repr(self) -> str:
        return (f"bank={self.bank.name!r}, sizes={self.bank.sizes}, N={self.n_maps}, nonlinearity={self.nonlinearity!r}, "
                f"fft_sizes={[self.bank.sizes[i] for i in self._fft_idx]}")

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Remove the mean intensity per colour channel."""
        if self.mean is None:
            return x - x.mean(dim=(-2, -1), keepdim=True)
        return x - self.mean.to(dtype=x.dtype)

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """Linear filter responses (B, N, H, W) of the mean-removed input, in bank order."""
        x = _as_batch(x, self.in_channels)
        x = self.preprocess(x)
        parts: list[torch.Tensor | None] = [None] * len(self.bank.weights)
        for i in self._direct_idx:
            parts[i] = conv2d_same(x, getattr(self, f"weight_{i}").to(dtype=x.dtype))
        if self.fftconv is not None:
            y = self.fftconv(x)
            for i, yi in zip(self._fft_idx, torch.split(y, self._fft_maps, dim=1)):
                parts[i] = yi
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def _feature_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Features (N, H W) of one mean-removed image x (C, H, W) in the internal order, no autograd."""
        c, h, w = x.shape
        act = ACT_INTO[self.nonlinearity]
        out = x.new_empty(self.n_maps, h, w)
        r = 0
        with torch.no_grad():
            for i in self._direct_idx:
                wi = getattr(self, f"weight_{i}").to(dtype=x.dtype)
                act(conv2d_same(x[None], wi)[0], out=out[r:r + wi.shape[0]])
                r += int(wi.shape[0])
            if self.fftconv is not None:
                self.fftconv.correlate_into(x, out[r:], self.nonlinearity)
        return out.view(self.n_maps, h * w)

    def _conv_adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """Adjoint of the linear conv layer in the internal order: (N, H, W) gradient -> (C, H, W)."""
        dx = None
        r = 0
        for i in self._direct_idx:
            wi = getattr(self, f"weight_{i}").to(dtype=g.dtype)
            n = int(wi.shape[0])
            part = conv2d_same_adjoint(g[None, r:r + n], wi)[0]
            dx = part if dx is None else dx.add_(part)
            r += n
        if self.fftconv is not None:
            part = self.fftconv.adjoint(g[r:])
            dx = part if dx is None else dx.add_(part)
        return dx

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps F (B, N, H, W): conv layer followed by the nonlinearity."""
        if not (torch.is_grad_enabled() and x.requires_grad):  # no graph needed: the fused, buffer-filling path
            x = self.preprocess(_as_batch(x, self.in_channels))
            rows = [self._feature_rows(xi) for xi in x]
            f = (rows[0][None] if len(rows) == 1 else torch.stack(rows)).view(x.shape[0], self.n_maps, *x.shape[-2:])
            if self._order is not None:
                f = f[:, torch.argsort(self._order.to(f.device))]
            return f
        y = self.conv(x)
        if self.nonlinearity == "relu":
            return torch.relu(y)
        if self.nonlinearity == "sigmoid":
            return torch.sigmoid(y)
        return y

    def grams(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (1) Gram matrices (B, N, N) of the features of an image (C, H, W) or batch."""
        return gram_matrix(self.features(x))

    def loss(self, x: torch.Tensor, target_grams: torch.Tensor) -> torch.Tensor:
        """Eq. (5): ``sum_ij (G_ij(target) - G_ij(x))^2 / sum_ij G_ij(target)^2``, summed over a batch.

        ``target_grams`` is (N, N) (broadcast over the batch) or (B, N, N).
        """
        x = _as_batch(x, self.in_channels)
        t = target_grams
        if t.ndim == 2:
            t = t[None]
        n = self.n_maps
        if t.ndim != 3 or t.shape[-2:] != (n, n) or t.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"target_grams must be ({n}, {n}) or (B, {n}, {n}), got {tuple(target_grams.shape)}")
        t = t.to(device=x.device, dtype=x.dtype)
        norm = (t ** 2).sum(dim=(1, 2))
        if torch.any(norm == 0):
            raise ValueError("target Gram matrix is all zeros: the target texture has no feature energy")
        if self._order is not None:  # the fused loss works in the internal map order
            o = self._order.to(t.device)
            t = t[:, o][:, :, o]
        x = self.preprocess(x)
        losses = [_TextureLoss.apply(x[i], t[i if t.shape[0] > 1 else 0].contiguous(), self) for i in range(x.shape[0])]
        return torch.stack(losses).sum()


def gram_distance(x: torch.Tensor, y: torch.Tensor, model: TextureModel) -> float:
    """Eq. (2): ``sum (G(x) - G(y))^2 / (||G(x)|| ||G(y)||)`` (Frobenius norms) under ``model``."""
    with torch.no_grad():
        gx, gy = model.grams(x)[0], model.grams(y)[0]
        return float(((gx - gy) ** 2).sum() / (gx.norm() * gy.norm()))


def pixel_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Eq. (3): ``sum (x - y)^2 / (||x|| ||y||)`` over raw pixel values (same shape required)."""
    if x.shape != y.shape:
        raise ValueError(f"pixel distance needs images of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double(), y.double()
    return float(((x - y) ** 2).sum() / (x.norm() * y.norm()))
