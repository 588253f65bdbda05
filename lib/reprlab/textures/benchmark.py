"""Speed of the texture loss: direct ``conv2d`` vs the FFT fast path, measured in one run.

One iteration = forward + backward of the full Random-Multiscale eq. (5) loss
(1024 maps, sizes 3...55) on an RGB image, the work of one L-BFGS-B function evaluation.
Both paths share everything except how the large kernels are convolved, and are checked
to give the same loss and gradient. Peak memory is the process' peak resident set size
increase during one iteration (CPU; sampled every 5 ms), or the CUDA allocator's peak
above the memory in use before the iteration.
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
from reprlab.textures.filterbanks import random_multiscale_bank
from reprlab.textures.model import FFT_THRESHOLD, TextureModel


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


def _step(model: TextureModel, x: torch.Tensor, tg: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    loss = model.loss(x, tg)
    (g,) = torch.autograd.grad(loss, x)
    return float(loss.detach()), g


def _timed(fn) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _breakdown(models: dict, x: torch.Tensor, dev: torch.device) -> dict:
    """Where an iteration goes: feature maps (conv + ReLU, forward+backward) per path, and the
    Gram loss eq. (5) (forward+backward), which both paths share and convolution speed cannot
    reduce. Wall and CPU seconds of one run each (after the warm-up above)."""
    from reprlab.textures.model import _GramLoss

    out = {}
    for name, model in models.items():
        def feats(model=model):
            xi = x.detach().requires_grad_(True)
            y = model.features(xi)
            y.backward(torch.ones_like(y))
        wall, cpu = _timed(feats)
        out[f"features_{name}"] = {"wall_seconds": wall, "cpu_seconds": cpu}
    model = models["fft"]
    with torch.no_grad():
        f = model.features(x).reshape(model.n_maps, -1)
        t = model.grams(torch.rand_like(x))[0]

    def gram():
        fi = f.clone().requires_grad_(True)
        _GramLoss.apply(fi, t, model.gram_block).backward()
    wall, cpu = _timed(gram)
    out["gram_loss"] = {"wall_seconds": wall, "cpu_seconds": cpu}
    out["features_speedup_cpu"] = out["features_direct"]["cpu_seconds"] / out["features_fft"]["cpu_seconds"]
    return out


def run_bench(size: int = 256, repeats: int = 3, maps_per_scale: int = 128, fft_threshold: int = FFT_THRESHOLD,
              device: str | torch.device | None = None, seed: int = 0, threads: int | None = None) -> dict:
    """Time forward+backward of the full Random-Multiscale loss for both paths; return a JSON-able report.

    The two paths run interleaved (direct, fft, direct, fft, ...) so that a changing load on
    a shared machine affects both alike; medians of wall and CPU time per iteration are
    reported. ``peak_memory_mb`` is the working memory of one iteration (peak RSS during it
    minus RSS before it); ``spectra_cache_mb`` the FFT path's persistent filter spectra.
    ``threads`` sets torch's intra-op threads for the run (restored afterwards).
    """
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(size, repeats, maps_per_scale, fft_threshold, device, seed)
    finally:
        torch.set_num_threads(old_threads)


def _run(size, repeats, maps_per_scale, fft_threshold, device, seed) -> dict:
    dev = torch.device(device) if device is not None else pick_device()
    bank = random_multiscale_bank(maps_per_scale=maps_per_scale, in_channels=3, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(3, size, size, generator=gen).to(dev)
    x = torch.rand(3, size, size, generator=gen).to(dev)
    report: dict = {"size": size, "channels": 3, "n_maps": bank.n_maps, "sizes": bank.sizes, "repeats": repeats,
                    "fft_threshold": fft_threshold, "device": str(dev), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    try:
        report["load_average_before"] = list(os.getloadavg())
    except OSError:  # pragma: no cover
        pass
    models = {"direct": TextureModel(bank, fft_threshold=None).to(dev),
              "fft": TextureModel(bank, fft_threshold=fft_threshold).to(dev)}
    tgs = {}
    with torch.no_grad():
        for name, model in models.items():
            tgs[name] = model.grams(target)[0]
    stats = {name: {"wall": [], "cpu": [], "peak": [], "first": None} for name in models}
    grads, losses = {}, {}
    for rep in range(repeats + 1):  # the first round warms up (and fills the FFT spectra cache)
        for name, model in models.items():
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev) / 2**20
            else:
                base = _rss_mb()
            with _PeakSampler() as sampler:
                t0, c0 = time.perf_counter(), time.process_time()
                loss, g = _step(model, x, tgs[name])
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            peak = (torch.cuda.max_memory_allocated(dev) / 2**20 - base) if dev.type == "cuda" else sampler.peak - base
            st = stats[name]
            if rep == 0:
                st["first"] = wall
            else:
                st["wall"].append(wall)
                st["cpu"].append(cpu)
            st["peak"].append(peak)
            grads[name], losses[name] = g.detach().cpu().double(), loss
            del g
    for name, st in stats.items():
        report[name] = {"seconds_per_iteration": statistics.median(st["wall"]), "all_seconds": st["wall"],
                        "cpu_seconds_per_iteration": statistics.median(st["cpu"]),
                        "first_call_seconds": st["first"], "peak_memory_mb": max(st["peak"]), "loss": losses[name]}
    fftconv = models["fft"].fftconv
    report["fft"]["spectra_cache_mb"] = (sum(v.numel() * v.element_size() for v in fftconv._cache.values()) / 2**20
                                         if fftconv is not None else 0.0)
    report["speedup"] = report["direct"]["seconds_per_iteration"] / report["fft"]["seconds_per_iteration"]
    report["speedup_cpu_time"] = (report["direct"]["cpu_seconds_per_iteration"]
                                  / report["fft"]["cpu_seconds_per_iteration"])
    report["loss_rel_diff"] = abs(losses["fft"] - losses["direct"]) / abs(losses["direct"])
    report["grad_rel_err"] = float((grads["fft"] - grads["direct"]).norm() / grads["direct"].norm())
    report["breakdown"] = _breakdown(models, x, dev)
    try:
        report["load_average_after"] = list(os.getloadavg())
    except OSError:  # pragma: no cover
        pass
    return report
