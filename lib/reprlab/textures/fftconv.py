"""'Same' convolution with large kernels by FFT, with cached filter spectra.

Paper section 2 uses stride 1, no bias and zero padding (k-1)/2, i.e. the output has the
input's size. For kernels of 15x15 and more (the 37x37 and 55x55 scales dominate the
cost of Random-Multiscale) a direct convolution costs O(H W k^2) per map and channel,
while the FFT path costs O(H W log(H W)) independent of k:

- all FFT kernels are embedded, centred, into one kmax x kmax support (a centred zero
  border does not change a 'same' correlation), so one input rfft2, one spectral product
  summed over colour channels and one irfft2 serve every large scale at once;
- the FFT size only needs to be >= H + (kmax-1)/2 (not H + kmax - 1; and >= kmax): we
  keep the output's H x W window, and the circular wrap then only ever reads zero padding;
- the kernel is stored rolled by -(k-1)/2 so the correlation lands at index 0 (no roll
  of the output), and its conjugate spectrum is cached per (FFT size, device, dtype).

The result equals ``torch.nn.functional.conv2d(x, w, padding=(k-1)//2)`` (a
cross-correlation, as in all deep-learning frameworks) up to float rounding.
"""

from __future__ import annotations

from collections import OrderedDict

import scipy.fft
import torch
from torch import nn


def fft_size(n: int, pad: int) -> int:
    """Smallest 'fast' (5-smooth) length >= max(n + pad, 2 pad + 1) for a real FFT.

    n + pad keeps the circular wrap inside the zero padding; 2 pad + 1 (the kernel size)
    keeps the kernel itself from aliasing on images smaller than it."""
    return int(scipy.fft.next_fast_len(max(int(n) + int(pad), 2 * int(pad) + 1), real=True))


def embed_centered(weights: list[torch.Tensor]) -> torch.Tensor:
    """Stack kernels of odd sizes into one (sum maps, C, kmax, kmax) tensor, each centred."""
    kmax = max(int(w.shape[-1]) for w in weights)
    out = []
    for w in weights:
        k = int(w.shape[-1])
        m = (kmax - k) // 2
        out.append(nn.functional.pad(w, (m, m, m, m)))
    return torch.cat(out, 0)


class FFTConv2d(nn.Module):
    """Stride-1, bias-free, zero-padded 'same' correlation with odd square kernels, by FFT.

    ``weights``: list of (maps_i, C, k_i, k_i) tensors; the output stacks their maps in
    order, (B, sum maps_i, H, W). Spectra are cached per input size, device and dtype
    (the ``max_cached`` most recent); call :meth:`clear_cache` to free them.
    """

    #: number of input sizes whose spectra are kept (least recently used dropped first)
    max_cached: int = 2

    def __init__(self, weights: list[torch.Tensor]):
        super().__init__()
        if not weights:
            raise ValueError("FFTConv2d needs at least one weight tensor")
        for w in weights:
            if w.ndim != 4 or w.shape[-1] != w.shape[-2] or w.shape[-1] % 2 == 0:
                raise ValueError(f"kernels must be (maps, C, k, k) with odd k, got {tuple(w.shape)}")
        self.register_buffer("weight", embed_centered([w.detach() for w in weights]), persistent=False)
        self.kmax = int(self.weight.shape[-1])
        self.pad = (self.kmax - 1) // 2
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def clear_cache(self) -> None:
        self._cache.clear()

    def spectrum(self, fh: int, fw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Conjugate rfft2 of the kernels rolled so that their centre sits at (0, 0).

        Stored frequency-major, shape (fh, fw//2+1, O, C): the backward pass is then one
        batched matmul over frequencies without any copy of the (large) spectra."""
        key = (fh, fw, str(device), dtype)
        spec = self._cache.get(key)
        if spec is not None:
            self._cache.move_to_end(key)
        else:
            w = self.weight.to(device=device, dtype=dtype)
            o, c, k, _ = w.shape
            buf = torch.zeros(o, c, fh, fw, device=device, dtype=dtype)
            buf[..., :k, :k] = w
            buf = torch.roll(buf, shifts=(-self.pad, -self.pad), dims=(-2, -1))
            spec = torch.fft.rfft2(buf).conj().permute(2, 3, 0, 1).contiguous()
            del buf
            self._cache[key] = spec
            while len(self._cache) > self.max_cached:  # spectra are large: keep the most recent few
                self._cache.popitem(last=False)
        return spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.weight.shape[1]:
            raise ValueError(f"expected input (B, {self.weight.shape[1]}, H, W), got {tuple(x.shape)}")
        _, _, h, w = x.shape
        fh, fw = fft_size(h, self.pad), fft_size(w, self.pad)
        spec = self.spectrum(fh, fw, x.device, x.dtype)
        return _FFTCorrelate.apply(x, spec, fh, fw)


def _mix_forward(xf: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
    """out[b, o, f] = sum_c xf[b, c, f] spec[f, o, c] -> (B, O, fh, fw2) (a permuted view).

    C <= 3: a short loop of fused multiply-adds in the frequency-major layout."""
    xp = xf.permute(2, 3, 0, 1)  # (fh, fw2, B, C)
    out = xp[..., 0, None] * spec[..., None, :, 0]
    for c in range(1, xf.shape[1]):
        out.addcmul_(xp[..., c, None], spec[..., None, :, c])
    return out.permute(2, 3, 0, 1)


def _reversed_padded(g: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """Zero-pad (..., H, W) to (..., fh, fw) with circularly reversed indices: out[-i, -j] = g[i, j].

    For real g, rfft2 of this equals conj(rfft2(zero-padded g)), which lets the adjoint
    use the cached (conjugate) spectra without materialising a conjugate copy of them.
    """
    h, w = g.shape[-2:]
    f = g.flip((-2, -1))  # f[i', j'] = g[h-1-i', w-1-j']
    out = g.new_zeros(*g.shape[:-2], fh, fw)
    out[..., fh - h + 1:, fw - w + 1:] = f[..., : h - 1, : w - 1]
    out[..., fh - h + 1:, 0] = f[..., : h - 1, w - 1]
    out[..., 0, fw - w + 1:] = f[..., h - 1, : w - 1]
    out[..., 0, 0] = f[..., h - 1, w - 1]
    return out


class _FFTCorrelate(torch.autograd.Function):
    """y = 'same' correlation of x with the kernels whose conjugate spectra are ``spec``.

    The map is linear in x, so the backward needs no saved activations: the gradient is
    the adjoint ('same' convolution of the output gradient with the same kernels), done
    with the same cached spectra and FFT size:
    dx = irfft2(sum_o G_o conj(S_o)) = irfft2(conj(sum_o conj(G_o) S_o)), and conj(G) is
    the rfft2 of the index-reversed gradient (real input), so nothing big is conjugated.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, spec: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        ctx.save_for_backward(spec)
        ctx.sizes = (fh, fw, h, w)
        xf = torch.fft.rfft2(x, s=(fh, fw))
        return torch.fft.irfft2(_mix_forward(xf, spec), s=(fh, fw))[..., :h, :w]

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        (spec,) = ctx.saved_tensors
        fh, fw, h, w = ctx.sizes
        gf_conj = torch.fft.rfft2(_reversed_padded(gy, fh, fw))  # = conj(rfft2(padded gy))
        mixed = torch.matmul(gf_conj.permute(2, 3, 0, 1), spec)  # (fh, fw2, B, C): sum over the O maps
        gx = torch.fft.irfft2(mixed.permute(2, 3, 0, 1).conj(), s=(fh, fw))[..., :h, :w]
        return gx, None, None, None


def conv2d_same(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Direct stride-1 bias-free 'same' correlation, the reference for :class:`FFTConv2d`."""
    return nn.functional.conv2d(x, weight, padding=(int(weight.shape[-1]) - 1) // 2)
