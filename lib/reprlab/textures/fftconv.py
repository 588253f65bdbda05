"""'Same' convolution with large kernels by FFT, with cached filter spectra.

Paper section 2 uses stride 1, no bias and zero padding (k-1)/2, i.e. the output has the
input's size. For kernels of 15x15 and more (the 37x37 and 55x55 scales dominate the
cost of Random-Multiscale) a direct convolution costs O(H W k^2) per map and channel,
while the FFT path costs O(H W log(H W)) independent of k:

- all FFT kernels are embedded, centred, into one kmax x kmax support (a centred zero
  border does not change a 'same' correlation), so one input rfft2, one spectral product
  summed over colour channels and one irfft2 serve every large scale at once;
- the FFT size only needs to be >= H + (kmax-1)/2 (not H + kmax - 1): we keep the
  output's H x W window, and the circular wrap then only ever reads zero padding;
- the kernel is stored rolled by -(k-1)/2 so the correlation lands at index 0 (no roll
  of the output), and its conjugate spectrum is cached per (FFT size, device, dtype).

The result equals ``torch.nn.functional.conv2d(x, w, padding=(k-1)//2)`` (a
cross-correlation, as in all deep-learning frameworks) up to float rounding.
"""

from __future__ import annotations

import scipy.fft
import torch
from torch import nn


def fft_size(n: int, pad: int) -> int:
    """Smallest 'fast' (5-smooth) length >= n + pad for a real FFT."""
    return int(scipy.fft.next_fast_len(int(n) + int(pad), real=True))


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
    order, (B, sum maps_i, H, W). Spectra are cached per input size; call
    :meth:`clear_cache` to free them.
    """

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
        self._cache: dict[tuple, torch.Tensor] = {}

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def clear_cache(self) -> None:
        self._cache.clear()

    def _apply(self, fn, *args, **kwargs):  # moving the module invalidates cached spectra
        self._cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def spectrum(self, fh: int, fw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Conjugate rfft2 of the kernels rolled so that their centre sits at (0, 0): (O, C, fh, fw//2+1)."""
        key = (fh, fw, str(device), dtype)
        spec = self._cache.get(key)
        if spec is None:
            w = self.weight.to(device=device, dtype=dtype)
            o, c, k, _ = w.shape
            buf = torch.zeros(o, c, fh, fw, device=device, dtype=dtype)
            buf[..., :k, :k] = w
            buf = torch.roll(buf, shifts=(-self.pad, -self.pad), dims=(-2, -1))
            spec = torch.fft.rfft2(buf).conj().contiguous()
            self._cache[key] = spec
        return spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.weight.shape[1]:
            raise ValueError(f"expected input (B, {self.weight.shape[1]}, H, W), got {tuple(x.shape)}")
        _, c, h, w = x.shape
        fh, fw = fft_size(h, self.pad), fft_size(w, self.pad)
        spec = self.spectrum(fh, fw, x.device, x.dtype)
        xf = torch.fft.rfft2(x, s=(fh, fw))  # (B, C, fh, fw//2+1), zero padded at the end
        yf = xf[:, 0, None] * spec[:, 0]
        for ch in range(1, c):  # sum over colour channels (C <= 3): cheaper than einsum's bmm here
            yf = yf + xf[:, ch, None] * spec[:, ch]
        y = torch.fft.irfft2(yf, s=(fh, fw))
        return y[..., :h, :w]


def conv2d_same(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Direct stride-1 bias-free 'same' correlation, the reference for :class:`FFTConv2d`."""
    return nn.functional.conv2d(x, weight, padding=(int(weight.shape[-1]) - 1) // 2)
