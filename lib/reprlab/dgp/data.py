"""Data sets of chapter 5: the sin(7eˣ) regression of Fig. 5 / Table 1, the ±x toy of Fig. 2
and a synthetic heartbeat-like signal for the temporal-warping application (§6, Fig. 6).

Everything is generated here from a seed; nothing is downloaded.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

__all__ = ["heartbeat_signal", "identity_data", "sign_compositions", "sin_exp_data"]


def _check_n(n: int, minimum: int = 2) -> int:
    if int(n) != n or int(n) < minimum:
        raise ValueError(f"number of points must be an integer >= {minimum}, got {n!r}")
    return int(n)


def _check_noise(noise_std: float) -> float:
    noise_std = float(noise_std)
    if not math.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be finite and >= 0, got {noise_std!r}")
    return noise_std


def sin_exp_data(n: int = 50, noise_std: float = 0.01, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The original setup: ``n`` points on [-1, 1], ``y = sin(7 eˣ) + N(0, noise_std²)``.

    The noise is numpy's ``RandomState(seed).randn(n)``, so ``seed=1`` (Table 1's default) gives
    exactly the data of the original code (``np.random.seed(1)`` then ``np.random.randn(50)``).
    """
    n = _check_n(n)
    noise_std = _check_noise(noise_std)
    x = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    noise = torch.from_numpy(np.random.RandomState(int(seed)).randn(n))
    y = torch.sin(7.0 * torch.exp(x)) + noise_std * noise
    return x, y


def identity_data(n: int = 30, noise_std: float = 0.01, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fig. 2 data: ``y = x`` on [-1, 1] plus small noise (a composition of ±x layers fits it)."""
    n = _check_n(n)
    noise_std = _check_noise(noise_std)
    x = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    g = torch.Generator().manual_seed(int(seed))
    return x, x + noise_std * torch.randn(n, generator=g, dtype=torch.float64)


def sign_compositions(n_layers: int = 3, target_sign: int = 1) -> list[tuple[int, ...]]:
    """All sign patterns ``(s_1, …, s_L)``, ``f_ℓ(x) = s_ℓ x``, whose composition is ``target_sign·x``.

    Fig. 2: with three layers and ``y = x`` there are four such compositions (zero or two
    negations); a factorised posterior can only keep one of them.
    """
    n_layers = _check_n(n_layers, 1)
    if target_sign not in (1, -1):
        raise ValueError(f"target_sign must be +1 or -1, got {target_sign!r}")
    return [s for s in itertools.product((1, -1), repeat=n_layers) if math.prod(s) == target_sign]


def _beat(phase: np.ndarray) -> np.ndarray:
    """One stylised ECG cycle on phase ∈ [0, 1): P, Q, R, S and T waves as Gaussian bumps."""
    waves = [  # (centre, width, amplitude): smooth enough to be sampled by ~100 points
        (0.15, 0.05, 0.15),
        (0.33, 0.025, -0.15),
        (0.40, 0.035, 1.0),
        (0.47, 0.025, -0.25),
        (0.70, 0.07, 0.3),
    ]
    out = np.zeros_like(phase)
    for centre, width, amp in waves:
        d = (phase - centre + 0.5) % 1.0 - 0.5
        out += amp * np.exp(-0.5 * (d / width) ** 2)
    return out


def heartbeat_signal(n: int = 100, n_beats: float = 1.2, warp_strength: float = 0.35,
                     noise_std: float = 0.01, seed: int = 0) -> dict[str, torch.Tensor]:
    """A heartbeat-like recording whose timing is warped (§6, eq. (24): ``y = f(g(x)) + ε``).

    ``x`` is on [-1, 1]; the true warp ``g`` is monotonic (a smooth random perturbation of
    the identity of relative size ``warp_strength``) and ``f`` is a periodic ECG-like beat.
    Returns ``x``, ``y``, the true warp ``g`` and the clean signal.
    """
    n = _check_n(n, 4)
    noise_std = _check_noise(noise_std)
    if not (0.0 <= warp_strength < 1.0):
        raise ValueError(f"warp_strength must be in [0, 1), got {warp_strength!r}")
    if n_beats <= 0:
        raise ValueError(f"n_beats must be positive, got {n_beats!r}")
    rng = np.random.default_rng(int(seed))
    x = np.linspace(-1.0, 1.0, n)
    # monotone warp: integrate a positive rate 1 + warp_strength·(smooth zero-mean wiggle)
    freqs = np.arange(1, 4)
    coef = rng.normal(size=(2, freqs.size)) / freqs
    fine = np.linspace(-1.0, 1.0, 2001)
    wiggle = (coef[0] @ np.sin(np.pi * np.outer(freqs, fine)) + coef[1] @ np.cos(np.pi * np.outer(freqs, fine)))
    wiggle = wiggle / (np.abs(wiggle).max() + 1e-12)
    rate = 1.0 + warp_strength * wiggle
    g_fine = np.concatenate([[0.0], np.cumsum(0.5 * (rate[1:] + rate[:-1]) * np.diff(fine))])
    g_fine = -1.0 + 2.0 * g_fine / g_fine[-1]
    g = np.interp(x, fine, g_fine)
    clean = _beat((g + 1.0) / 2.0 * n_beats)
    y = clean + noise_std * rng.normal(size=n)
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return {"x": as_t(x), "y": as_t(y), "warp": as_t(g), "clean": as_t(clean)}
