"""Speed of the texture loss: a straightforward implementation vs the fast path, measured in one run.

One iteration = forward + backward of the full Random-Multiscale eq. (5) loss (1024 maps,
sizes 3...55) on an RGB image, the work of one L-BFGS-B function evaluation. Three paths:

- ``baseline``: what a user would write: ``conv2d`` per scale, ``torch.cat``, ReLU,
  ``G = F F^T / M`` and eq. (5) with autograd for the backward;
- ``direct``: our fused loss (:class:`~reprlab.textures.model.TextureModel`, ``fft_threshold=None``):
  every scale by direct ``conv2d`` (backward by its transposed conv), features written into one
  buffer, symmetric Gram and hand-written backward;
- ``fast``: the same with the kernels of size >= ``fft_threshold`` by FFT (the default model).

All three are checked to give the same loss and gradient. Peak memory is the process' peak
resident set size increase during one iteration (CPU; sampled every 5 ms; the spectra cache is
persistent and reported separately), or the CUDA allocator's peak above the memory in use
before the iteration. A breakdown times the two components of each path separately
(feature maps = convolutions + nonlinearity, forward and backward; Gram loss = eq. (5)
forward and backward from given feature maps), and a scan over ``fft_threshold`` times the
features of the fused path, which is how the default threshold was chosen.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import sys
import threading
import time

import torch

from reprlab._device import device as pick_device
from reprlab._device import torch_threads
from reprlab.textures.fftconv import conv2d_same
from reprlab.textures.filterbanks import random_multiscale_bank
from reprlab.textures.model import FFT_THRESHOLD, TextureModel, _gram_grad_into_features, _sym_gram

BASELINE_DESCRIPTION = ("straightforward PyTorch: conv2d per scale + torch.cat + ReLU, G = F F^T / M, eq. (5), "
                        "autograd backward")


def _rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; falls back to ru_maxrss)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - non-Linux
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


class _PeakSampler:
    """Samples the RSS every few ms in a thread; ``peak`` is the max seen."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, _rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(self.interval)

    def __enter__(self) -> _PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


class BaselineLoss:
    """The straightforward implementation of eq. (5) a user would write (autograd does the backward)."""

    def __init__(self, model: TextureModel, device: torch.device):
        self.weights = [w.to(device) for w in model.bank.weights]
        self.model = model  # for its channel-mean removal only

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.model.preprocess(x[None] if x.ndim == 3 else x)
        return torch.relu(torch.cat([conv2d_same(x, w.to(dtype=x.dtype)) for w in self.weights], 1))

    @staticmethod
    def gram_loss(f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        f = f.reshape(f.shape[-3] if f.ndim == 4 else f.shape[0], -1)
        g = f @ f.T / f.shape[1]
        return ((g - t) ** 2).sum() / (t ** 2).sum()

    def loss(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.gram_loss(self.features(x), t)


def _step(loss_fn, x: torch.Tensor, tg: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    loss = loss_fn(x, tg)
    (g,) = torch.autograd.grad(loss, x)
    return float(loss.detach()), g


def _timed(fn, dev: torch.device) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t0, time.process_time() - c0


def _median_times(fn, dev: torch.device, repeats: int) -> dict:
    fn()  # warm-up (fills caches)
    runs = [_timed(fn, dev) for _ in range(repeats)]
    return {"wall_seconds": statistics.median(r[0] for r in runs), "cpu_seconds": statistics.median(r[1] for r in runs)}


def _breakdown(models: dict, baseline: BaselineLoss, x: torch.Tensor, t_bank: torch.Tensor, dev: torch.device,
               repeats: int) -> dict:
    """Per-path cost of the two components of an iteration (medians of ``repeats`` runs).

    ``features``: convolutions + nonlinearity, forward and backward (baseline: autograd through
    ReLU, cat and conv2d from a given output gradient; fused paths: buffer filling forward and
    the convolutions' adjoint). ``gram``: eq. (5) forward and backward from given feature maps
    (baseline: ``F F^T`` with autograd; fused paths: symmetric Gram, hand-written backward that
    includes the ReLU derivative). The fused ``direct`` and ``fast`` paths share the Gram part."""
    out: dict = {}
    xp = x.detach()
    gen = torch.Generator().manual_seed(1)
    n = baseline.model.n_maps
    gy = torch.randn(1, n, *x.shape[-2:], generator=gen).to(x.device)

    def base_feats():
        xi = xp.clone().requires_grad_(True)
        baseline.features(xi).backward(gy)
    out["baseline"] = {"features": _median_times(base_feats, dev, repeats)}
    with torch.no_grad():
        fb = baseline.features(xp).reshape(n, -1)

    def base_gram():
        fi = fb.clone().requires_grad_(True)
        baseline.gram_loss(fi, t_bank).backward()
    out["baseline"]["gram"] = _median_times(base_gram, dev, repeats)

    for name, model in models.items():
        xm = model.preprocess(xp[None])[0]

        def feats(model=model, xm=xm):
            model._feature_rows(xm)
            model._conv_adjoint(gy[0])
        out[name] = {"features": _median_times(feats, dev, repeats)}
    model = models["fast"]
    with torch.no_grad():
        f = model._feature_rows(model.preprocess(xp[None])[0])
        t = t_bank if model._order is None else t_bank[model._order][:, model._order]

    def fused_gram():
        d = _sym_gram(f, model.gram_block).div_(f.shape[1]).sub_(t)
        norm = (t * t).sum()
        float((d * d).sum() / norm)
        _gram_grad_into_features(d, f, 4.0 / (f.shape[1] * norm), model.nonlinearity)
    g = _median_times(fused_gram, dev, repeats)
    for name in models:
        out[name]["gram"] = g
    for v in out.values():
        v["total_cpu_seconds"] = v["features"]["cpu_seconds"] + v["gram"]["cpu_seconds"]
    out["note"] = ("features = conv + nonlinearity forward and backward; gram = eq. (5) forward and backward "
                   "from the feature maps (the fused paths apply the ReLU derivative there); CPU seconds")
    return out


def _threshold_scan(bank, x: torch.Tensor, dev: torch.device, thresholds) -> list[dict]:
    """CPU seconds of the fused features (forward + adjoint) for each FFT threshold (one run after warm-up)."""
    rows = []
    gy = torch.randn(bank.n_maps, *x.shape[-2:], generator=torch.Generator().manual_seed(2)).to(x.device)
    for thr in thresholds:
        model = TextureModel(bank, fft_threshold=thr).to(dev)
        xm = model.preprocess(x[None])[0]

        def feats(model=model, xm=xm):
            model._feature_rows(xm)
            model._conv_adjoint(gy)
        feats()
        wall, cpu = _timed(feats, dev)
        fft_sizes = [] if thr is None else [k for k in bank.sizes if k >= thr]
        rows.append({"fft_threshold": thr, "fft_sizes": fft_sizes, "features_cpu_seconds": cpu,
                     "features_wall_seconds": wall,
                     "spectra_cache_mb": model.fftconv.cache_bytes() / 2**20 if model.fftconv is not None else 0.0})
        del model
        gc.collect()
    return rows


def run_bench(size: int = 256, repeats: int = 3, maps_per_scale: int = 128, fft_threshold: int = FFT_THRESHOLD,
              device: str | torch.device | None = None, seed: int = 0, threads: int | None = None,
              scan: bool = True) -> dict:
    """Time forward+backward of the full Random-Multiscale loss for the three paths; a JSON-able report.

    The paths run interleaved (baseline, direct, fast, baseline, ...) so that a changing load on
    a shared machine affects them alike; medians of wall and CPU time per iteration are
    reported, and ``speedup`` = baseline / fast (also ``speedup_vs_direct``, which isolates the
    FFT). ``peak_memory_mb`` is the working memory of one iteration after the warm-up (peak RSS
    during it minus RSS before it; ``first_call_peak_memory_mb`` for the warm-up call, which also
    builds the spectra); ``spectra_cache_mb`` the fast path's persistent filter spectra. ``threads`` sets
    torch's intra-op threads for the run (restored afterwards); ``scan`` adds the threshold scan.
    """
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    with torch_threads(threads):
        return _run(size, repeats, maps_per_scale, fft_threshold, device, seed, scan)


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def _run(size, repeats, maps_per_scale, fft_threshold, device, seed, scan) -> dict:
    dev = torch.device(device) if device is not None else pick_device()
    bank = random_multiscale_bank(maps_per_scale=maps_per_scale, in_channels=3, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(3, size, size, generator=gen).to(dev)
    x = torch.rand(3, size, size, generator=gen).to(dev)
    t_start = time.perf_counter()
    report: dict = {"size": size, "channels": 3, "n_maps": bank.n_maps, "sizes": bank.sizes, "repeats": repeats,
                    "fft_threshold": fft_threshold, "device": str(dev), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "load_average_before": _load(), "baseline": BASELINE_DESCRIPTION}
    models = {"direct": TextureModel(bank, fft_threshold=None).to(dev),
              "fast": TextureModel(bank, fft_threshold=fft_threshold).to(dev)}
    baseline = BaselineLoss(models["direct"], dev)
    with torch.no_grad():
        tg = models["direct"].grams(target)[0]
    paths = {"baseline": baseline.loss, "direct": models["direct"].loss, "fast": models["fast"].loss}
    stats = {name: {"wall": [], "cpu": [], "peak": [], "first": None, "first_peak": None} for name in paths}
    grads, losses = {}, {}
    for rep in range(repeats + 1):  # the first round warms up (and fills the FFT spectra cache)
        for name, loss_fn in paths.items():
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev) / 2**20
            else:
                base = _rss_mb()
            with _PeakSampler() as sampler:
                t0, c0 = time.perf_counter(), time.process_time()
                loss, g = _step(loss_fn, x, tg)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            peak = (torch.cuda.max_memory_allocated(dev) / 2**20 - base) if dev.type == "cuda" else sampler.peak - base
            st = stats[name]
            if rep == 0:
                st["first"], st["first_peak"] = wall, peak
            else:
                st["wall"].append(wall)
                st["cpu"].append(cpu)
                st["peak"].append(peak)
            grads[name], losses[name] = g.detach().cpu().double(), loss
            del g
    for name, st in stats.items():
        report[name] = {"seconds_per_iteration": statistics.median(st["wall"]), "all_seconds": st["wall"],
                        "cpu_seconds_per_iteration": statistics.median(st["cpu"]), "all_cpu_seconds": st["cpu"],
                        "first_call_seconds": st["first"], "peak_memory_mb": max(st["peak"]),
                        "first_call_peak_memory_mb": st["first_peak"], "loss": losses[name]}
    fftconv = models["fast"].fftconv
    report["fast"]["spectra_cache_mb"] = fftconv.cache_bytes() / 2**20 if fftconv is not None else 0.0
    for name in ("direct", "fast"):
        report[name]["loss_rel_diff_vs_baseline"] = abs(losses[name] - losses["baseline"]) / abs(losses["baseline"])
        report[name]["grad_rel_err_vs_baseline"] = float((grads[name] - grads["baseline"]).norm()
                                                         / grads["baseline"].norm())
    b, d, f = report["baseline"], report["direct"], report["fast"]
    report["speedup"] = b["seconds_per_iteration"] / f["seconds_per_iteration"]
    report["speedup_cpu_time"] = b["cpu_seconds_per_iteration"] / f["cpu_seconds_per_iteration"]
    report["speedup_vs_direct"] = d["seconds_per_iteration"] / f["seconds_per_iteration"]
    report["speedup_vs_direct_cpu_time"] = d["cpu_seconds_per_iteration"] / f["cpu_seconds_per_iteration"]
    report["load_average_after_timing"] = _load()
    report["breakdown"] = _breakdown(models, baseline, x, tg, dev, repeats)
    del models, paths, baseline
    gc.collect()
    if scan:
        report["threshold_scan"] = _threshold_scan(bank, x, dev, [3, 5, 7, 11, 15, 23, 37, 55, None])
    report["load_average_after"] = _load()
    report["bench_seconds"] = time.perf_counter() - t_start
    return report
