"""'Same' convolution with large kernels by FFT, with cached filter spectra.

Paper section 2 uses stride 1, no bias and zero padding (k-1)/2, i.e. the output has the
input's size. A direct convolution costs O(H W k^2) per map and channel, the FFT path
O(H W log(H W)) independent of k, so the large scales of Random-Multiscale (up to 55x55)
are much cheaper by FFT:

- all FFT kernels are embedded, centred, into one kmax x kmax support (a centred zero
  border does not change a 'same' correlation), so one input rfft2 serves every scale
  and all maps share one FFT size;
- the FFT size only needs to be >= H + (kmax-1)/2 (not H + kmax - 1; and >= kmax): we
  keep the output's H x W window, and the circular wrap then only ever reads zero padding;
  it is rounded up to a 5-smooth length (products of 2, 3, 5);
- the kernel is stored rolled by -(k-1)/2 so the correlation lands at index 0 (no roll
  of the output), and its conjugate spectrum is cached per (FFT size, device, dtype);
- maps are processed in chunks of :attr:`FFTConv2d.chunk` so that the spectral products
  and inverse transforms stay small (cache-friendly, no large temporary allocations), and
  each chunk's cropped output is written straight into a caller's buffer, optionally
  through the nonlinearity (:meth:`FFTConv2d.correlate_into`);
- on the CPU the chunks run in parallel, one per thread of a pool of
  ``torch.get_num_threads()`` workers, each chunk single-threaded in numpy/scipy (which
  release the GIL). Splitting the work by chunk scales with the cores; letting pocketfft and
  torch split each small transform and product did not (1.1x from 1 to 2 threads, measured
  in bench/bench_textures.py);
- the backward pass is written by hand (:meth:`FFTConv2d.adjoint`): the map is linear, its
  adjoint is the 'same' convolution of the output gradient with the same kernels, i.e. one
  rfft2 per gradient map, a sum over maps of the products with the cached spectra, and one
  irfft2 per input channel; no activation is saved.

On the CPU the transforms use scipy's pocketfft, which on this machine was 2-3x faster than
``torch.fft`` for the inverse real 2-D transform (measured, see bench/bench_textures.py);
other devices use ``torch.fft``. The result equals
``torch.nn.functional.conv2d(x, w, padding=(k-1)//2)`` (a cross-correlation, as in all
deep-learning frameworks) up to float rounding.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft
import scipy.special
import torch
from torch import nn

_SCIPY_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)

#: ``act(src, out=dst)`` writes a nonlinearity of ``src`` into ``dst``, for torch tensors ...
ACT_INTO: dict[str, Callable] = {
    "relu": lambda src, out: torch.clamp_min(src, 0, out=out),
    "sigmoid": lambda src, out: torch.sigmoid(src, out=out),
    "none": lambda src, out: out.copy_(src),
}
#: ... and the same for numpy arrays (the parallel CPU path)
_NP_ACT_INTO: dict[str, Callable] = {
    "relu": lambda src, out: np.maximum(src, 0, out=out),
    "sigmoid": lambda src, out: scipy.special.expit(src, out=out),
    "none": lambda src, out: np.copyto(out, src),
}

_POOLS: dict[int, ThreadPoolExecutor] = {}


def map_chunks(fn: Callable, starts: Sequence[int], workers: int) -> list:
    """``[fn(s) for s in starts]``, on a shared pool of ``workers`` threads when ``workers > 1``."""
    if workers <= 1 or len(starts) <= 1:
        return [fn(s) for s in starts]
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="reprlab-fft")
    return list(_POOLS[workers].map(fn, starts))


def fft_size(n: int, pad: int) -> int:
    """Smallest 'fast' (5-smooth) length >= max(n + pad, 2 pad + 1) for a real FFT.

    n + pad keeps the circular wrap inside the zero padding; 2 pad + 1 (the kernel size)
    keeps the kernel itself from aliasing on images smaller than it."""
    return int(scipy.fft.next_fast_len(max(int(n) + int(pad), 2 * int(pad) + 1), real=True))


def _use_scipy(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype in _SCIPY_DTYPES and not t.is_conj()


def rfft2(x: torch.Tensor, s: tuple[int, int]) -> torch.Tensor:
    """Real 2-D FFT over the last two dims, zero-padded to ``s`` (scipy on CPU, else torch)."""
    if _use_scipy(x):
        return torch.from_numpy(scipy.fft.rfft2(x.detach().numpy(), s=s, workers=torch.get_num_threads()))
    return torch.fft.rfft2(x, s=s)


def irfft2(xf: torch.Tensor, s: tuple[int, int], overwrite: bool = False) -> torch.Tensor:
    """Inverse of :func:`rfft2` to real (..., s[0], s[1]); ``overwrite`` lets scipy reuse ``xf``."""
    if _use_scipy(xf):
        return torch.from_numpy(scipy.fft.irfft2(xf.detach().numpy(), s=s, workers=torch.get_num_threads(),
                                                 overwrite_x=overwrite))
    return torch.fft.irfft2(xf, s=s)


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
    #: maps per spectral product / inverse FFT batch (small batches stay in cache)
    chunk: int = 32

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

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    def clear_cache(self) -> None:
        self._cache.clear()

    def cache_bytes(self) -> int:
        """Memory held by the cached spectra."""
        return sum(v.numel() * v.element_size() for v in self._cache.values())

    def fft_shape(self, h: int, w: int) -> tuple[int, int]:
        return fft_size(h, self.pad), fft_size(w, self.pad)

    def spectrum(self, fh: int, fw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Conjugate rfft2 (O, C, fh, fw//2+1) of the kernels rolled so that their centre sits at (0, 0)."""
        key = (fh, fw, str(device), dtype)
        spec = self._cache.get(key)
        if spec is not None:
            self._cache.move_to_end(key)
            return spec
        w = self.weight.to(device=device, dtype=dtype)
        o, c, k, _ = w.shape
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        spec = torch.empty(o, c, fh, fw // 2 + 1, device=device, dtype=cdtype)
        for o0 in range(0, o, self.chunk):  # chunked: the zero-padded kernels are as large as the spectra
            buf = w.new_zeros(min(self.chunk, o - o0), c, fh, fw)
            buf[..., :k, :k] = w[o0:o0 + self.chunk]
            buf = torch.roll(buf, shifts=(-self.pad, -self.pad), dims=(-2, -1))
            torch.conj_physical(rfft2(buf, (fh, fw)), out=spec[o0:o0 + self.chunk])
        self._cache[key] = spec
        while len(self._cache) > self.max_cached:  # spectra are large: keep the most recent few
            self._cache.popitem(last=False)
        return spec

    def correlate_into(self, x: torch.Tensor, out: torch.Tensor, nonlinearity: str = "none") -> torch.Tensor:
        """Write ``nonlinearity(correlation of x with every kernel)`` into ``out`` (O, H, W) for one image x (C, H, W).

        ``nonlinearity`` is 'relu', 'sigmoid' or 'none' (a copy). No autograd graph is recorded (see
        :meth:`adjoint`)."""
        c, h, w = x.shape
        o = self.out_channels
        if c != self.in_channels or out.shape != (o, h, w):
            raise ValueError(f"expected x (C={self.in_channels}, H, W) and out ({o}, H, W), got "
                             f"{tuple(x.shape)} and {tuple(out.shape)}")
        if nonlinearity not in ACT_INTO:
            raise ValueError(f"nonlinearity must be one of {tuple(ACT_INTO)}, got {nonlinearity!r}")
        fh, fw = self.fft_shape(h, w)
        starts = range(0, o, self.chunk)
        with torch.no_grad():
            spec = self.spectrum(fh, fw, x.device, x.dtype)
            if _use_scipy(x) and out.is_contiguous():  # CPU: chunks in parallel, numpy/scipy inside
                xf, sp, dst = rfft2(x, (fh, fw)).numpy(), spec.numpy(), out.numpy()
                act = _NP_ACT_INTO[nonlinearity]

                def chunk(o0: int) -> None:
                    s = sp[o0:o0 + self.chunk]
                    prod = xf[0] * s[:, 0]
                    for ci in range(1, c):
                        prod += xf[ci] * s[:, ci]
                    y = scipy.fft.irfft2(prod, s=(fh, fw), workers=1, overwrite_x=True)
                    act(y[:, :h, :w], out=dst[o0:o0 + self.chunk])

                map_chunks(chunk, starts, torch.get_num_threads())
                return out
            act = ACT_INTO[nonlinearity]
            xf = rfft2(x, (fh, fw))
            for o0 in starts:
                s = spec[o0:o0 + self.chunk]
                prod = xf[0] * s[:, 0]
                for ci in range(1, c):
                    prod.addcmul_(xf[ci], s[:, ci])
                y = irfft2(prod, (fh, fw), overwrite=True)
                act(y[:, :h, :w], out=out[o0:o0 + self.chunk])
        return out

    def adjoint(self, gy: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`correlate_into` (without act): gradient (C, H, W) from ``gy`` (O, H, W).

        dx_c = irfft2(sum_o G_o S_oc) with G_o = rfft2(gy_o) and S = conj(cached spectra); computed
        as conj(sum_o conj(G_o) spec_oc) so that only the small per-chunk G is conjugated."""
        if gy.ndim != 3 or gy.shape[0] != self.out_channels:
            raise ValueError(f"expected a gradient ({self.out_channels}, H, W), got {tuple(gy.shape)}")
        return self.adjoint_finish(self.adjoint_spectrum(gy), *gy.shape[-2:])

    def adjoint_spectrum(self, gy: torch.Tensor, start: int = 0, acc: torch.Tensor | None = None) -> torch.Tensor:
        """Accumulate sum_o conj(G_o) spec_o (C, fh, fw//2+1) over the maps ``start ... start + len(gy)``.

        Lets a caller produce the output gradient a few maps at a time (see model._TextureLoss);
        :meth:`adjoint_finish` turns the sum into the input gradient."""
        o, h, w = gy.shape
        if start < 0 or start + o > self.out_channels:
            raise ValueError(f"maps {start}..{start + o} out of range for {self.out_channels} kernels")
        fh, fw = self.fft_shape(h, w)
        starts = range(0, o, self.chunk)
        with torch.no_grad():
            spec = self.spectrum(fh, fw, gy.device, gy.dtype)
            if _use_scipy(gy) and (acc is None or _use_scipy(acc)):  # CPU: chunks in parallel (see module doc)
                g_np, sp = gy.contiguous().numpy(), spec.numpy()

                def chunk(o0: int) -> np.ndarray:
                    g = np.conjugate(scipy.fft.rfft2(g_np[o0:o0 + self.chunk], s=(fh, fw), workers=1))
                    s = sp[start + o0:start + min(o0 + self.chunk, o)]
                    part = np.empty(s.shape[1:], dtype=s.dtype)
                    for ci in range(s.shape[1]):
                        np.sum(np.multiply(g, s[:, ci]), axis=0, out=part[ci])
                    return part

                parts = map_chunks(chunk, starts, torch.get_num_threads())
                total = torch.from_numpy(np.sum(parts, axis=0)) if len(parts) > 1 else torch.from_numpy(parts[0])
                return total if acc is None else acc.add_(total)
            for o0 in starts:
                g = rfft2(gy[o0:o0 + self.chunk], (fh, fw)).conj_physical_()
                s = spec[start + o0:start + min(o0 + self.chunk, o)]
                part = (g[:, None] * s).sum(0)
                acc = part if acc is None else acc.add_(part)
        return acc

    def adjoint_finish(self, acc: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Input gradient (C, h, w) from the sum of :meth:`adjoint_spectrum`."""
        fh, fw = self.fft_shape(h, w)
        with torch.no_grad():
            return irfft2(acc.conj_physical_(), (fh, fw), overwrite=True)[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return _FFTCorrelate.apply(x, self)


class _FFTCorrelate(torch.autograd.Function):
    """Autograd wrapper of :class:`FFTConv2d` for a batch: forward per image, backward by the adjoint."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, conv: FFTConv2d) -> torch.Tensor:
        ctx.conv = conv
        b, _, h, w = x.shape
        out = x.new_empty(b, conv.out_channels, h, w)
        for i in range(b):
            conv.correlate_into(x[i], out[i])
        return out

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        gy = gy.contiguous()
        return torch.stack([ctx.conv.adjoint(g) for g in gy]), None


def conv2d_same(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Direct stride-1 bias-free 'same' correlation, the reference for :class:`FFTConv2d`."""
    return nn.functional.conv2d(x, weight, padding=(int(weight.shape[-1]) - 1) // 2)


def conv2d_same_adjoint(gy: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`conv2d_same` (its gradient with respect to the input) for (B, O, H, W) gradients."""
    return nn.functional.conv_transpose2d(gy, weight, padding=(int(weight.shape[-1]) - 1) // 2)
