"""Speed of the texture loss: direct ``conv2d`` vs the FFT fast path, measured in one run.

One iteration = forward + backward of the full Random-Multiscale eq. (5) loss
(1024 maps, sizes 3...55) on an RGB image, the work of one L-BFGS-B function evaluation.
Both paths share everything except how the large kernels are convolved, and are checked
to give the same loss and gradient. Peak memory is the process' peak resident set size
increase while each path runs (CPU), or ``torch.cuda.max_memory_allocated`` on CUDA.
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


def run_bench(size: int = 256, repeats: int = 3, maps_per_scale: int = 128, fft_threshold: int = FFT_THRESHOLD,
              device: str | torch.device | None = None, seed: int = 0) -> dict:
    """Time forward+backward of the full Random-Multiscale loss for both paths; return a JSON-able report."""
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    dev = torch.device(device) if device is not None else pick_device()
    bank = random_multiscale_bank(maps_per_scale=maps_per_scale, in_channels=3, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(3, size, size, generator=gen).to(dev)
    x = torch.rand(3, size, size, generator=gen).to(dev)
    report: dict = {"size": size, "channels": 3, "n_maps": bank.n_maps, "sizes": bank.sizes, "repeats": repeats,
                    "fft_threshold": fft_threshold, "device": str(dev), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    try:
        report["load_average"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    results, grads = {}, {}
    for name, thr in (("direct", None), ("fft", fft_threshold)):
        model = TextureModel(bank, fft_threshold=thr).to(dev)
        with torch.no_grad():
            tg = model.grams(target)[0]
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        base = _rss_mb()
        with _PeakSampler() as sampler:
            t0 = time.perf_counter()
            loss, g = _step(model, x, tg)  # warm-up (caches FFT spectra)
            warm = time.perf_counter() - t0
            times = []
            for _ in range(repeats):
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
                loss, g = _step(model, x, tg)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                times.append(time.perf_counter() - t0)
        peak = (torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else sampler.peak - base
        results[name] = {"seconds_per_iteration": statistics.median(times), "all_seconds": times,
                         "first_call_seconds": warm, "peak_memory_mb": peak, "loss": loss}
        grads[name] = g.detach().cpu().double()
        del model, tg
        gc.collect()
    rel = float((grads["fft"] - grads["direct"]).norm() / grads["direct"].norm())
    report.update(results)
    report["speedup"] = results["direct"]["seconds_per_iteration"] / results["fft"]["seconds_per_iteration"]
    report["loss_rel_diff"] = abs(results["fft"]["loss"] - results["direct"]["loss"]) / abs(results["direct"]["loss"])
    report["grad_rel_err"] = rel
    return report
