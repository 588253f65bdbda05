"""Ground-truth simulated V1: a population of model neurons with known functions.

Every later analysis of chapters 6-7 (twin fit, clustering, in silico experiments) can be scored
against this truth. The cell families follow the combinatorial code reported in the thesis
(chapter 7; digital-twin paper, Fig. 3-4): phase-sensitive *simple* vs phase-invariant *complex*
cells, each with or without *surround suppression* (divisive pool over an annulus) and with or
without *cross-orientation inhibition* (divisive pool over the orthogonal orientation) — all 8
combinations — plus unoriented centre-surround *DoG* cells (ON and OFF) and a non-Gabor *corner*
family (an AND of two oriented edge subunits).

Model of neuron ``n`` for a stimulus ``x`` (stimulus space of :mod:`reprlab.v1.stimuli`):

* Linear filters (unit L2 norm) ``f_1..f_4``: for Gabor families ``f_1, f_2`` are the RF Gabor
  (eq. (1)-(2)) at the preferred phase ``τ`` and ``τ + π/2`` (quadrature pair), ``f_3, f_4`` the
  orthogonal quadrature pair (orientation ``φ + π/2``); DoG cells use ``±`` a balanced
  difference of Gaussians as ``f_1``; corner cells use two odd (edge) Gabor subunits placed on
  the arms of a corner as ``f_1, f_2``. ``y_k = <f_k, x>``.
* Drive (quadratic in contrast): Gabor families
  ``D = (1 - m) (y_1² + y_2²) + 2 m ⌊y_1⌋₊²`` with phase sensitivity ``m`` (≈1 simple, ≈0
  complex: energy model); DoG ``D = 2 ⌊y_1⌋₊²``; corner ``D = 2 ⌊y_1⌋₊ ⌊y_2⌋₊``.
* Divisive normalisation (Heeger 1992; Carandini & Heeger 2012), as a cascade of contrast
  saturation and pool normalisation::

      rate = baseline + gain · D^{p/2} / [(1 + gain · D_inv^{p/2} / r_max)
                                          · (1 + s_ss (S / Ŝ)^{p/2} + s_coi (C / Ĉ)^{p/2})]

  ``D_inv`` is the phase-invariant counterpart of ``D`` (its value at the optimal phase), so
  the response saturates at ``r_max`` for strong optimal stimuli while phase tuning survives.

  ``S`` is local contrast energy at the neuron's spatial-frequency band (quadrature pairs of
  Gabor filters at 4 orientations whose frequency passband covers the neuron's own, so no
  stimulus that drives the RF escapes the surround by its spatial frequency), pooled over orientations with weights peaked at the
  preferred orientation (iso-orientation suppression) and over space with an annulus around
  the RF; ``C = y_3² + y_4²`` is the orthogonal energy at the RF. ``Ŝ, Ĉ`` are their means over a natural-image calibration set, so
  the strengths ``s_ss, s_coi`` are scale free; ``s_ss = 0`` / ``s_coi = 0`` for families without
  that nonlinearity. ``p`` is the output exponent (expansive, ≈2).
* ``gain`` is set so that the mean rate over natural images equals a per-neuron target (log-normal,
  median ≈1 spike per trial); spikes are Poisson (or gamma-Poisson) counts of the rate.

Parameters vary continuously within each family (log-normal sizes, spatial frequencies,
strengths; orientations with a cardinal bias; RF centres concentrated in the image centre).

Sizes (36 x 64 images spanning ~120° of visual field: ~2°/pixel, as in the thesis' data). The
Gabor RF diameter ``2σ`` (± two envelope stds) is ~11-25 px (median ~16 px ≈ 30°), the
scale of mouse V1 receptive fields and of the MEIs of the thesis' twins on 36 x 64 images
(spatial frequency ~0.045 cycles/° with ``ν·σ`` ≈ 0.75: two to three subfields). The
surround annulus peaks at 1-1.5 and reaches ~2-3 classical-RF radii, the extent of the
suppressive surround in mouse V1 (suppression grows up to stimulus sizes ~2-3 times the
optimal one). A previous version used ``ν·σ`` ≈ 1.05 and surround ratios up to 3.5, which
put RF diameters at ~45° (up to ~85°) and the surround pool mostly beyond the 21-29 px
receptive field of the thesis' core (kernels 13, 5, 5), so that no twin of the thesis'
architecture could reproduce size tuning measured in silico (chapter 7). Now ~45 % (median) of
the annulus weight still lies beyond the default core's 14 px radius, but that hardly matters
for Gabor size tuning: the truth seen only through a 29 x 29 px window measures suppression
indices with Spearman 0.99 to the full truth (``bench/bench_v1_index_recovery.py``).
``rate`` is vectorised: filters are built for chunks of neurons at once and applied as one
matrix product per chunk; there is no Python loop over neurons.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reprlab.v1 import stimuli as stim

FAMILIES: tuple[str, ...] = (
    "simple", "simple_ss", "simple_coi", "simple_ss_coi",
    "complex", "complex_ss", "complex_coi", "complex_ss_coi",
    "dog_on", "dog_off", "corner",
)
"""Family names; ``Population.family_code`` indexes this tuple."""

DEFAULT_FAMILY_WEIGHTS: dict[str, float] = {
    "simple": 0.10, "simple_ss": 0.09, "simple_coi": 0.07, "simple_ss_coi": 0.06,
    "complex": 0.12, "complex_ss": 0.11, "complex_coi": 0.08, "complex_ss_coi": 0.07,
    "dog_on": 0.09, "dog_off": 0.09, "corner": 0.12,
}
"""Default family proportions (non-uniform on purpose)."""

#: Spatial-frequency bands (cycles/pixel) of the surround contrast-energy maps (ratio ~1.26,
#: so every neuron's preferred frequency is within ~12% of its band).
ENERGY_BANDS: tuple[float, ...] = (0.04, 0.05, 0.063, 0.08, 0.1, 0.126, 0.16, 0.2, 0.25)
#: Frequency std of the surround energy filters in units of the band frequency: that of a Gabor
#: RF with ``ν·σ = 0.55`` cycles (envelope std ``σ/2``), the broadest RF of the population, so
#: the surround pool covers every neuron's own spatial-frequency passband (see ``_oriented_bank``).
SURROUND_BANDWIDTH = 1.0 / (math.pi * 0.55)
#: Orientations of the surround energy maps (θ_o = π o / N_o, stimuli convention).
N_ENERGY_ORIENTATIONS = 4
_FILTER_CACHE_LIMIT = 4096  # neurons whose filters are cached; beyond, built per chunk
_ENERGY_PAD = 20  # grey padding (pixels) before the FFT of the surround energy maps

_GABOR = [FAMILIES.index(f) for f in FAMILIES[:8]]
_SIMPLE = [FAMILIES.index(f) for f in FAMILIES if f.startswith("simple")]
_COMPLEX = [FAMILIES.index(f) for f in FAMILIES if f.startswith("complex")]
_SS = [FAMILIES.index(f) for f in FAMILIES if "_ss" in f]
_COI = [FAMILIES.index(f) for f in FAMILIES if "coi" in f]
DOG_ON, DOG_OFF, CORNER = FAMILIES.index("dog_on"), FAMILIES.index("dog_off"), FAMILIES.index("corner")


def family_code(name: str) -> int:
    """Integer code of a family name (index into :data:`FAMILIES`)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; expected one of {FAMILIES}")
    return FAMILIES.index(name)


def _isin(codes: torch.Tensor, values: Sequence[int]) -> torch.Tensor:
    return torch.isin(codes, torch.as_tensor(list(values), device=codes.device))


@dataclass
class Population:
    """Ground-truth neurons. Tensor fields have first axis ``n_neurons`` (float32 unless noted).

    Attributes:
        image_shape: ``(H, W)`` of the stimuli the neurons see.
        family_code: int64, index into :data:`FAMILIES` (names via :attr:`family`).
        center: ``(n, 2)`` RF centre ``(x, y)`` in pixels (x = column, y = row).
        orientation: preferred orientation in [0, π) radians, stimuli convention (stripe
            direction from +x towards +y). 0 for unoriented DoG cells (see :attr:`oriented`).
        direction: in [0, 2π): the corner's bisector for corner cells (corners are 2π-periodic);
            equals ``orientation`` for the other families.
        size: RF size, eq. (1)'s σ in pixels (Gaussian envelope std σ/2; DoG centre std σ/2).
        spatial_frequency: preferred spatial frequency, cycles/pixel (0 for DoG cells).
        phase: preferred phase τ (radians) of the linear filter ``f_1``.
        phase_sensitivity: ``m`` in [0, 1]; ≈1 simple (rectified linear), ≈0 complex (energy).
        exponent: output exponent ``p``.
        gain, baseline: rate = baseline + gain · normalised drive (spikes per trial).
        max_rate: saturation level ``r_max`` (spikes per trial) for strong optimal stimuli.
        surround_strength, surround_ratio: ``s_ss`` (0 without surround suppression) and the
            annulus outer radius in units of the RF envelope std.
        surround_untuned: fraction of the surround pool that is orientation-untuned (the rest
            pools energy near the preferred orientation: iso-orientation suppression).
        coi_strength: ``s_coi`` (0 without cross-orientation inhibition).
        dog_ratio, dog_weight: DoG surround/centre std ratio and surround weight.
        corner_angle: opening angle of corner cells (radians; 0 for other families).
        surround_scale, coi_scale: calibration means ``Ŝ`` and ``Ĉ`` over natural images.
        neuron_ids: int64 unique ids.
        noise: ``'poisson'`` or ``'gamma_poisson'`` (overdispersed, shape ``noise_shape``).
    """

    image_shape: tuple[int, int]
    family_code: torch.Tensor
    center: torch.Tensor
    orientation: torch.Tensor
    direction: torch.Tensor
    size: torch.Tensor
    spatial_frequency: torch.Tensor
    phase: torch.Tensor
    phase_sensitivity: torch.Tensor
    exponent: torch.Tensor
    gain: torch.Tensor
    baseline: torch.Tensor
    max_rate: torch.Tensor
    surround_strength: torch.Tensor
    surround_ratio: torch.Tensor
    surround_untuned: torch.Tensor
    coi_strength: torch.Tensor
    dog_ratio: torch.Tensor
    dog_weight: torch.Tensor
    corner_angle: torch.Tensor
    surround_scale: torch.Tensor
    coi_scale: torch.Tensor
    neuron_ids: torch.Tensor
    noise: str = "poisson"
    noise_shape: float = 5.0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ basics
    def __post_init__(self) -> None:
        self.image_shape = tuple(int(s) for s in self.image_shape)  # type: ignore[assignment]
        n = int(self.family_code.shape[0])
        for f in self._tensor_fields():
            t = getattr(self, f)
            if not isinstance(t, torch.Tensor):
                t = torch.as_tensor(np.asarray(t))
                setattr(self, f, t)
            if t.shape[0] != n:
                raise ValueError(f"Population.{f}: expected first axis {n}, found shape {tuple(t.shape)}")
        if self.noise not in ("poisson", "gamma_poisson"):
            raise ValueError(f"noise must be 'poisson' or 'gamma_poisson', got {self.noise!r}")

    @classmethod
    def _tensor_fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.type in ("torch.Tensor",)]

    def __len__(self) -> int:
        return int(self.family_code.shape[0])

    @property
    def n_neurons(self) -> int:
        return len(self)

    @property
    def family(self) -> np.ndarray:
        """Family names ``(n,)`` (numpy str array)."""
        return np.asarray(FAMILIES)[self.family_code.cpu().numpy()]

    @property
    def phase_invariant(self) -> torch.Tensor:
        """Bool: complex-cell families (energy model)."""
        return _isin(self.family_code, _COMPLEX)

    @property
    def surround_suppressed(self) -> torch.Tensor:
        """Bool: families with a divisive surround (annulus) pool."""
        return _isin(self.family_code, _SS)

    @property
    def cross_orientation_inhibited(self) -> torch.Tensor:
        """Bool: families with a divisive orthogonal-orientation pool."""
        return _isin(self.family_code, _COI)

    @property
    def oriented(self) -> torch.Tensor:
        """Bool: neurons with a preferred orientation (all but DoG cells)."""
        return ~_isin(self.family_code, [DOG_ON, DOG_OFF])

    @property
    def gabor_like(self) -> torch.Tensor:
        """Bool: the 8 simple/complex families."""
        return _isin(self.family_code, _GABOR)

    def rf_gabor(self) -> dict[str, torch.Tensor]:
        """Parameters of each neuron's own RF Gabor (``f_1``), as keyword arguments for
        :func:`reprlab.v1.stimuli.gabor` (``center_x, center_y, size, spatial_frequency,
        orientation, phase``). Meaningful for the 8 Gabor families (see :attr:`gabor_like`);
        the ground-truth optimal Gabor of a neuron is this Gabor at full contrast (up to size,
        which surround suppression shrinks)."""
        return {
            "center_x": self.center[:, 0], "center_y": self.center[:, 1], "size": self.size,
            "spatial_frequency": self.spatial_frequency, "orientation": self.orientation,
            "phase": self.phase,
        }

    @classmethod
    def concat(cls, populations: Sequence[Population]) -> Population:
        """Concatenate populations with the same image shape (neurons in the given order)."""
        pops = list(populations)
        if not pops:
            raise ValueError("concat needs at least one population")
        shapes = {p.image_shape for p in pops}
        if len(shapes) != 1:
            raise ValueError(f"populations have different image shapes: {sorted(shapes)}")
        kw = {f: torch.cat([getattr(p, f).cpu() for p in pops]) for f in cls._tensor_fields()}
        return cls(image_shape=pops[0].image_shape, noise=pops[0].noise, noise_shape=pops[0].noise_shape, **kw)

    def subset(self, idx: Sequence[int] | np.ndarray | torch.Tensor) -> Population:
        """The population restricted to neurons ``idx`` (indices or boolean mask)."""
        idx_t = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
        if idx_t.dtype == torch.bool:
            if idx_t.shape != (len(self),):
                raise ValueError(f"boolean mask must have shape ({len(self)},), found {tuple(idx_t.shape)}")
            idx_t = torch.nonzero(idx_t).flatten()
        idx_t = idx_t.long().flatten()
        if idx_t.numel() and (idx_t.min() < -len(self) or idx_t.max() >= len(self)):
            raise ValueError(f"neuron indices must be in [0, {len(self)}), found range "
                             f"[{int(idx_t.min())}, {int(idx_t.max())}]")
        kw = {f: getattr(self, f)[idx_t.to(getattr(self, f).device)] for f in self._tensor_fields()}
        return Population(image_shape=self.image_shape, noise=self.noise, noise_shape=self.noise_shape, **kw)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """All parameters as numpy arrays (for saving); inverse of :meth:`from_arrays`."""
        out = {f: getattr(self, f).detach().cpu().numpy() for f in self._tensor_fields()}
        out["image_shape"] = np.asarray(self.image_shape, dtype=np.int64)
        out["noise"] = np.asarray(self.noise)
        out["noise_shape"] = np.asarray(self.noise_shape, dtype=np.float64)
        out["family"] = self.family
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Population:
        """Rebuild a population from :meth:`to_arrays` output (ValueError names missing keys)."""
        needed = cls._tensor_fields() + ["image_shape"]
        missing = [k for k in needed if k not in arrays]
        if missing:
            raise ValueError(f"population arrays are missing {missing}")
        kw: dict[str, Any] = {}
        for f in cls._tensor_fields():
            a = np.asarray(arrays[f])
            kw[f] = torch.as_tensor(a.astype(np.int64) if f in ("family_code", "neuron_ids") else a.astype(np.float32))
        return cls(
            image_shape=tuple(int(s) for s in np.asarray(arrays["image_shape"])),
            noise=str(np.asarray(arrays.get("noise", "poisson"))),
            noise_shape=float(np.asarray(arrays.get("noise_shape", 5.0))),
            **kw,
        )

    def to(self, device: torch.device | str) -> Population:
        """A copy with all tensors on ``device``."""
        kw = {f: getattr(self, f).to(device) for f in self._tensor_fields()}
        return Population(image_shape=self.image_shape, noise=self.noise, noise_shape=self.noise_shape, **kw)

    # ------------------------------------------------------------------ filters
    def linear_filters(self, idx: torch.Tensor | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        """Unit-norm linear filters ``(n, 4, H, W)`` (``f_1..f_4`` of the module docstring).

        Zero filters are returned where a family does not use one.
        """
        p = self if idx is None else self.subset(idx)
        dev = torch.device(device) if device is not None else p.center.device
        n = len(p)
        H, W = self.image_shape
        fc = p.family_code.to(dev)
        cx, cy = p.center[:, 0].to(dev), p.center[:, 1].to(dev)
        phi, size, nu, tau = (t.to(dev) for t in (p.orientation, p.size, p.spatial_frequency, p.phase))
        kw = dict(shape=self.image_shape, device=dev)
        filt = torch.zeros(n, 4, H, W, device=dev)
        g = _isin(fc, _GABOR)
        if g.any():
            i = torch.nonzero(g).flatten()
            filt[i, 0] = stim.gabor(cx[i], cy[i], size[i], nu[i], phi[i], tau[i], 2.0, **kw)
            filt[i, 1] = stim.gabor(cx[i], cy[i], size[i], nu[i], phi[i], tau[i] + math.pi / 2, 2.0, **kw)
            c = torch.nonzero(_isin(fc, _COI)).flatten()
            if c.numel():
                filt[c, 2] = stim.gabor(cx[c], cy[c], size[c], nu[c], phi[c] + math.pi / 2, tau[c], 2.0, **kw)
                filt[c, 3] = stim.gabor(cx[c], cy[c], size[c], nu[c], phi[c] + math.pi / 2, tau[c] + math.pi / 2, 2.0, **kw)
        d = _isin(fc, [DOG_ON, DOG_OFF])
        if d.any():
            i = torch.nonzero(d).flatten()
            sc = size[i] / 2
            ss = sc * p.dog_ratio.to(dev)[i]
            gc = stim.gaussian_blob(cx[i], cy[i], sc, **kw) / (sc[:, None, None] ** 2)
            gs = stim.gaussian_blob(cx[i], cy[i], ss, **kw) / (ss[:, None, None] ** 2)
            sign = torch.where(fc[i] == DOG_ON, 1.0, -1.0)[:, None, None]
            filt[i, 0] = sign * (gc - p.dog_weight.to(dev)[i, None, None] * gs)
        k = fc == CORNER
        if k.any():
            i = torch.nonzero(k).flatten()
            half = p.corner_angle.to(dev)[i] / 2
            bis = p.direction.to(dev)[i]
            sub_size = 0.7 * size[i]
            sub_nu = 0.8 / sub_size
            offset = 0.45 * size[i]
            for slot, sgn in ((0, 1.0), (1, -1.0)):
                theta = bis + sgn * half  # arm direction
                ax, ay = cx[i] + offset * torch.cos(theta), cy[i] + offset * torch.sin(theta)
                # odd (edge) subunit, positive on the wedge's interior side
                tau_k = torch.full_like(theta, sgn * math.pi / 2)
                filt[i, slot] = stim.gabor(ax, ay, sub_size, sub_nu, theta, tau_k, 2.0, **kw)
        norm = filt.flatten(2).norm(dim=2).clamp_min(1e-8)[:, :, None, None]
        return filt / norm

    def surround_weights(self, idx: torch.Tensor | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        """Annulus weights ``(n, H, W)`` summing to 1 (zeros for neurons without surround)."""
        p = self if idx is None else self.subset(idx)
        dev = torch.device(device) if device is not None else p.center.device
        n = len(p)
        H, W = self.image_shape
        out = torch.zeros(n, H, W, device=dev)
        ss = torch.nonzero(_isin(p.family_code.to(dev), _SS)).flatten()
        if ss.numel():
            cx, cy = p.center[:, 0].to(dev)[ss], p.center[:, 1].to(dev)[ss]
            s_in = p.size.to(dev)[ss] / 2
            s_out = s_in * p.surround_ratio.to(dev)[ss]
            kw = dict(shape=self.image_shape, device=dev)
            ring = stim.gaussian_blob(cx, cy, s_out, **kw) - stim.gaussian_blob(cx, cy, s_in, **kw)
            ring = ring.clamp_min(0)
            out[ss] = ring / ring.flatten(1).sum(1).clamp_min(1e-8)[:, None, None]
        return out

    def energy_band(self) -> torch.Tensor:
        """Index into :data:`ENERGY_BANDS` of each neuron's surround energy band (int64)."""
        bands = torch.log(torch.as_tensor(ENERGY_BANDS))
        nu = self.spatial_frequency.clamp_min(1e-3)
        return (torch.log(nu)[:, None] - bands[None, :].to(nu.device)).abs().argmin(1)

    def _filters(self, start: int, stop: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (start, stop, str(device))
        if key in self._cache:
            return self._cache[key]
        idx = torch.arange(start, stop)
        F = self.linear_filters(idx, device).flatten(2)
        A = self.surround_weights(idx, device).flatten(1)
        if len(self) <= _FILTER_CACHE_LIMIT:
            self._cache[key] = (F, A)
        return F, A

    # ------------------------------------------------------------------ responses
    def _check_stimuli(self, stimuli: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(stimuli)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or tuple(x.shape[-2:]) != self.image_shape:
            raise ValueError(f"stimuli: expected (B, {self.image_shape[0]}, {self.image_shape[1]}), "
                             f"found shape {tuple(x.shape)}")
        x = x.float()
        if not torch.isfinite(x).all():
            raise ValueError("stimuli: found NaN or inf values")
        return x

    def components(self, stimuli: torch.Tensor, chunk_size: int = 256, neuron_chunk: int = 2048) -> dict[str, torch.Tensor]:
        """Unnormalised pieces of the model, each ``(B, n)``: ``drive`` = D^{p/2}, ``surround``
        = S, ``orthogonal`` = C (see the module docstring). Used for calibration and diagnostics."""
        x = self._check_stimuli(stimuli)
        dev = x.device
        B, n = x.shape[0], len(self)
        out = {k: torch.zeros(B, n, device=dev) for k in ("drive", "invariant", "surround", "orthogonal")}
        fc = self.family_code.to(dev)
        m = self.phase_sensitivity.to(dev)
        p = self.exponent.to(dev)
        band = self.energy_band().to(dev)
        ss_mask = _isin(fc, _SS)
        bands_used = sorted(set(band[ss_mask].tolist()))
        pool_w = orientation_pool_weights(self.orientation.to(dev), self.surround_untuned.to(dev))
        with torch.no_grad():
            for b0 in range(0, B, chunk_size):
                xb = x[b0:b0 + chunk_size]
                xf = xb.flatten(1)
                energy = _energy_maps(xb, bands_used) if bands_used else {}
                for n0 in range(0, n, neuron_chunk):
                    n1 = min(n, n0 + neuron_chunk)
                    F, A = self._filters(n0, n1, dev)
                    y = (xf @ F.reshape(-1, F.shape[-1]).T).reshape(xf.shape[0], n1 - n0, 4)
                    y1, y2, y3, y4 = y.unbind(-1)
                    sl = slice(n0, n1)
                    fcs, ms = fc[sl], m[sl]
                    quad = (1 - ms) * (y1**2 + y2**2) + 2 * ms * torch.relu(y1) ** 2
                    dogd = 2 * torch.relu(y1) ** 2
                    corner = 2 * torch.relu(y1) * torch.relu(y2)
                    D = torch.where(_isin(fcs, _GABOR), quad, torch.where(fcs == CORNER, corner, dogd))
                    # phase/sign-invariant counterpart of D (its value at the optimal phase)
                    Dinv = torch.where(_isin(fcs, _GABOR), (1 + ms) * (y1**2 + y2**2),
                                       torch.where(fcs == CORNER, y1**2 + y2**2, 2 * y1**2))
                    out["drive"][b0:b0 + chunk_size, sl] = D.clamp_min(0) ** (p[sl] / 2)
                    out["invariant"][b0:b0 + chunk_size, sl] = Dinv ** (p[sl] / 2)
                    out["orthogonal"][b0:b0 + chunk_size, sl] = y3**2 + y4**2
                    if energy:
                        S = torch.zeros_like(y1)
                        bsl, ssl = band[sl], ss_mask[sl]
                        for bi, E in energy.items():  # E: (b, N_o, P)
                            j = torch.nonzero(ssl & (bsl == bi)).flatten()
                            if j.numel():
                                T = (E.reshape(-1, E.shape[-1]) @ A[j].T).reshape(E.shape[0], E.shape[1], -1)
                                S[:, j] = (T * pool_w[n0 + j].T[None]).sum(1)
                        out["surround"][b0:b0 + chunk_size, sl] = S
        return out

    def normalise(self, comps: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Rates ``(B, n)`` from :meth:`components` output (divisive normalisation, gain, baseline)."""
        dev = comps["drive"].device
        z, denom = self._terms(comps)
        g = self.gain.to(dev)
        saturation = 1 + g * comps["invariant"] / self.max_rate.to(dev)
        return self.baseline.to(dev) + g * z / (saturation * denom)

    def _terms(self, comps: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Numerator ``D^{p/2}`` and the pool part of the denominator ``1 + s_ss S̃ + s_coi C̃``."""
        dev = comps["drive"].device
        p = self.exponent.to(dev)
        s_rel = (comps["surround"] / self.surround_scale.to(dev).clamp_min(1e-12)).clamp_min(0) ** (p / 2)
        c_rel = (comps["orthogonal"] / self.coi_scale.to(dev).clamp_min(1e-12)).clamp_min(0) ** (p / 2)
        denom = 1 + self.surround_strength.to(dev) * s_rel + self.coi_strength.to(dev) * c_rel
        return comps["drive"], denom

    def rate(self, stimuli: torch.Tensor | np.ndarray, chunk_size: int = 256, neuron_chunk: int = 2048) -> torch.Tensor:
        """Noiseless rates (expected spike counts per trial), ``(B, n_neurons)``.

        ``stimuli`` is ``(B, H, W)`` (or one ``(H, W)`` image) in the stimulus space of
        :mod:`reprlab.v1.stimuli`; computed on the stimuli's device, in chunks of
        ``chunk_size`` stimuli and ``neuron_chunk`` neurons (each chunk one matrix product).
        """
        return self.normalise(self.components(stimuli, chunk_size, neuron_chunk))

    def spikes(self, rates: torch.Tensor, generator: torch.Generator | None = None, noise: str | None = None) -> torch.Tensor:
        """Spike counts with mean ``rates``: Poisson, or gamma-Poisson (negative binomial with
        shape ``noise_shape``, variance ``r + r²/shape``) if ``noise='gamma_poisson'``."""
        noise = noise or self.noise
        r = torch.as_tensor(rates).float()
        if not torch.isfinite(r).all() or (r < 0).any():
            raise ValueError("rates must be finite and non-negative")
        if generator is not None and generator.device != r.device:
            r_cpu = r.cpu()
        else:
            r_cpu = r
        if noise == "gamma_poisson":
            k = torch.full_like(r_cpu, float(self.noise_shape))
            r_cpu = torch._standard_gamma(k) / k * r_cpu if generator is None else _gamma(k, generator) / k * r_cpu
        elif noise != "poisson":
            raise ValueError(f"noise must be 'poisson' or 'gamma_poisson', got {noise!r}")
        out = torch.poisson(r_cpu, generator=generator)
        return out.to(r.device)


def _gamma(k: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gamma(k, 1) samples with a generator (Marsaglia-Tsang via normal/uniform draws)."""
    # torch's _standard_gamma takes no generator; use a seeded numpy stream instead.
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.gamma(k.cpu().numpy().astype(np.float64)).astype(np.float32)).to(k.device)


def _energy_maps(x: torch.Tensor, bands: Sequence[int]) -> dict[int, torch.Tensor]:
    """Oriented local contrast energy ``(B, N_o, H*W)`` per spatial-frequency band index.

    Each (band, orientation) filter is an analytic (one-sided) Gabor: in the frequency domain a
    2-D Gaussian of std ``SURROUND_BANDWIDTH · f_b`` around ``f_b`` along the modulation direction
    of orientation θ_o, restricted to that half-plane, so ``|x * h|²`` is the phase-invariant
    energy of a quadrature pair of Gabors like the neurons' own RFs. Applied by FFT with zero
    (grey) padding.
    """
    B, H, W = x.shape
    PH, PW = H + _ENERGY_PAD, W + _ENERGY_PAD
    X = torch.fft.fft2(x, s=(PH, PW))
    out: dict[int, torch.Tensor] = {}
    for bi in bands:
        K = _oriented_bank(bi, PH, PW, x.device)  # (N_o, PH, PW)
        y = torch.fft.ifft2(X[:, None] * K[None])[..., :H, :W]
        out[bi] = (y.real**2 + y.imag**2).flatten(2)
    return out


_BANK_CACHE: dict = {}


def _oriented_bank(bi: int, PH: int, PW: int, device: torch.device) -> torch.Tensor:
    """Frequency responses ``(N_o, PH, PW)`` of the surround energy filters of band ``bi``.

    Why Gabor-shaped (Gaussian in linear frequency) rather than log-Gabor: the suppressive pool
    must cover the frequencies that drive the neuron. A Gabor RF with ``ν·σ`` ≈ 0.55-1.25 cycles
    passes frequencies well below ``ν`` (half amplitude at ~0.5 ν); a log-Gabor pool (~0.7
    octave std) does not, and a large Gabor ~1.5 octaves below ``ν`` then drove a "suppressed"
    neuron more than its own RF Gabor while escaping the surround: its optimal Gabor was a
    large low-frequency one and its measured size tuning showed no suppression (chapter 7).
    A pool of the neuron's own kind of filters is the classical normalisation pool (Heeger
    1992; Cavanaugh et al. 2002: the surround is tuned like, and at least as broadly as, the
    centre)."""
    key = (bi, PH, PW, str(device))
    if key not in _BANK_CACHE:
        fy = torch.fft.fftfreq(PH, device=device)[:, None].expand(PH, PW)
        fx = torch.fft.fftfreq(PW, device=device)[None, :].expand(PH, PW)
        fb = ENERGY_BANDS[bi]
        sd = SURROUND_BANDWIDTH * fb
        bank = []
        for o in range(N_ENERGY_ORIENTATIONS):
            th = math.pi * o / N_ENERGY_ORIENTATIONS
            # modulation direction of stripes at orientation th: n = (-sin th, cos th) in (x, y)
            nx, ny = -math.sin(th), math.cos(th)
            along = fx * nx + fy * ny
            d2 = (fx - fb * nx) ** 2 + (fy - fb * ny) ** 2
            bank.append(torch.exp(-d2 / (2 * sd**2)) * (along > 0))
        _BANK_CACHE[key] = torch.stack(bank).to(torch.complex64)
    return _BANK_CACHE[key]


def orientation_pool_weights(orientation: torch.Tensor, untuned: torch.Tensor, kappa: float = 2.0) -> torch.Tensor:
    """Weights ``(n, N_o)`` of the surround pool over the energy-map orientations: a von Mises
    bump (on the doubled angle) at the preferred orientation mixed with a fraction ``untuned``
    of uniform weight; rows sum to 1 (iso-orientation surround suppression is strongest)."""
    th = torch.arange(N_ENERGY_ORIENTATIONS, device=orientation.device) * math.pi / N_ENERGY_ORIENTATIONS
    vm = torch.exp(kappa * (torch.cos(2 * (th[None] - orientation[:, None])) - 1))
    vm = vm / vm.sum(1, keepdim=True)
    u = untuned[:, None]
    return (1 - u) * vm + u / N_ENERGY_ORIENTATIONS


# ---------------------------------------------------------------------------- sampling
def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int, lo: float, hi: float) -> np.ndarray:
    return np.clip(median * np.exp(sigma * rng.standard_normal(n)), lo, hi)


def _orientations(rng: np.random.Generator, n: int) -> np.ndarray:
    """Orientations in [0, π) with a cardinal bias: mixture of von Mises around 0 and π/2 and a
    uniform component (oblique effect)."""
    comp = rng.choice(3, size=n, p=[0.35, 0.25, 0.40])
    mu = np.where(comp == 0, 0.0, np.pi)  # on the doubled angle: 0 -> horizontal, π -> vertical
    doubled = rng.vonmises(mu, 2.0, size=n)
    doubled = np.where(comp == 2, rng.uniform(-np.pi, np.pi, n), doubled)
    return np.mod(doubled / 2, np.pi)


def _calibrate_gain(pop: Population, comps: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Per-neuron gain so that the mean rate (without baseline) over the calibration images
    equals ``target``: bisection in log-gain, vectorised over neurons."""
    z, denom = pop._terms(comps)
    z, denom, inv = z.cpu(), denom.cpu(), comps["invariant"].cpu()
    r_max = pop.max_rate.cpu()

    def mean_rate(log_g: torch.Tensor) -> torch.Tensor:
        g = torch.exp(log_g)[None]
        return (g * z / ((1 + g * inv / r_max[None]) * denom)).mean(0)

    lo = torch.log(target / (z / denom).mean(0).clamp_min(1e-12))  # ignoring saturation: lower bound
    hi = lo + 14.0
    for _ in range(50):
        mid = (lo + hi) / 2
        too_high = mean_rate(mid) > target
        hi = torch.where(too_high, mid, hi)
        lo = torch.where(too_high, lo, mid)
    return torch.exp((lo + hi) / 2).float()


def sample_population(
    n_neurons: int,
    image_shape: tuple[int, int] = (36, 64),
    seed: int = 0,
    family_weights: Mapping[str, float] | None = None,
    mean_rate: float = 1.0,
    calibration_images: np.ndarray | torch.Tensor | None = None,
    n_calibration: int = 384,
    noise: str = "poisson",
) -> Population:
    """Sample a ground-truth population with a continuum of parameters inside each family.

    Args:
        n_neurons: number of neurons (> 0).
        image_shape: ``(H, W)`` of the stimuli.
        seed: random seed (sampling is deterministic given it).
        family_weights: relative proportions per family name (missing names get 0); defaults
            to :data:`DEFAULT_FAMILY_WEIGHTS`. Family counts are allocated exactly (largest
            remainder) and then shuffled.
        mean_rate: median over neurons of the mean rate (spikes per trial) on natural images.
        calibration_images: natural images used to calibrate ``Ŝ, Ĉ`` and the gains; by default
            ``n_calibration`` images of :func:`reprlab.v1.stimuli.natural_images` (own seed).
        noise: spike noise model stored on the population.
    """
    if not isinstance(n_neurons, (int, np.integer)) or n_neurons <= 0:
        raise ValueError(f"n_neurons must be a positive int, got {n_neurons!r}")
    H, W = stim._check_shape(image_shape)
    if mean_rate <= 0:
        raise ValueError(f"mean_rate must be > 0, got {mean_rate}")
    weights = dict(DEFAULT_FAMILY_WEIGHTS if family_weights is None else family_weights)
    unknown = sorted(set(weights) - set(FAMILIES))
    if unknown:
        raise ValueError(f"family_weights has unknown families {unknown}; expected names from {FAMILIES}")
    w = np.array([float(weights.get(f, 0.0)) for f in FAMILIES])
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("family_weights must be non-negative with a positive sum")
    w = w / w.sum()
    rng = np.random.default_rng(seed)
    counts = np.floor(w * n_neurons).astype(int)
    rem = n_neurons - counts.sum()
    counts[np.argsort(-(w * n_neurons - counts), kind="stable")[:rem]] += 1
    codes = rng.permutation(np.repeat(np.arange(len(FAMILIES)), counts))
    n = n_neurons

    is_simple = np.isin(codes, _SIMPLE)
    is_complex = np.isin(codes, _COMPLEX)
    is_dog = np.isin(codes, [DOG_ON, DOG_OFF])
    is_corner = codes == CORNER

    # RF centres: concentrated around the image centre, kept inside the image
    cx = np.clip((W - 1) / 2 + 0.16 * W * rng.standard_normal(n), 3, W - 4)
    cy = np.clip((H - 1) / 2 + 0.16 * H * rng.standard_normal(n), 3, H - 4)
    orientation = _orientations(rng, n)
    direction = orientation.copy()
    corner_dir = rng.uniform(0, 2 * np.pi, n)
    direction[is_corner] = corner_dir[is_corner]
    orientation[is_corner] = np.mod(corner_dir[is_corner], np.pi)
    orientation[is_dog] = 0.0
    direction[is_dog] = 0.0

    # spatial frequency (mouse V1 prefers ~0.04 cycles/degree ≈ 0.08 cycles/pixel at ~2°/pixel)
    # and size through the number of cycles per σ. ν·σ ≈ 0.75 (two to three subfields, a broad
    # ~1.6-octave spatial-frequency bandwidth) puts the RF diameter 2σ at ~15-20 px ≈ 30-40°,
    # the size of mouse V1 receptive fields and of the thesis' MEIs on 36 x 64 images; the core
    # of the thesis (kernels 13, 5, 5: a 21-29 px receptive field) is sized for such neurons.
    sf = _lognormal(rng, 0.085, 0.25, n, 0.04, 0.2)
    sf[is_complex] = np.clip(sf[is_complex] * 1.15, 0.04, 0.2)
    cycles = _lognormal(rng, 0.75, 0.18, n, 0.55, 1.25)
    size = np.clip(cycles / sf, 4.0, 15.0)
    size[is_dog] = _lognormal(rng, 6.0, 0.25, int(is_dog.sum()), 3.0, 14.0)
    size[is_corner] = _lognormal(rng, 8.0, 0.2, int(is_corner.sum()), 5.0, 13.0)
    sf[is_dog | is_corner] = 0.0
    phase = rng.uniform(0, 2 * np.pi, n)
    m = np.zeros(n)
    m[is_simple] = rng.beta(8, 1, int(is_simple.sum()))
    m[is_complex] = 0.3 * rng.beta(1, 4, int(is_complex.sum()))
    m[is_dog | is_corner] = 1.0
    exponent = _lognormal(rng, 2.0, 0.15, n, 1.4, 3.0)

    ss = np.isin(codes, _SS)
    coi = np.isin(codes, _COI)
    s_ss = np.where(ss, _lognormal(rng, 0.8, 0.6, n, 0.1, 6.0), 0.0)
    # annulus outer std s_out = ratio x the RF envelope std σ/2: the pool peaks at 1-1.5 and reaches
    # ~2-3 classical-RF radii (σ), the extent of the suppressive surround in mouse V1
    s_ratio = rng.uniform(2.0, 3.0, n)
    s_untuned = rng.uniform(0.1, 0.5, n)
    s_coi = np.where(coi, _lognormal(rng, 0.8, 0.6, n, 0.1, 6.0), 0.0)
    dog_ratio = np.where(is_dog, rng.uniform(2.0, 4.0, n), 0.0)
    dog_weight = np.where(is_dog, rng.uniform(0.5, 0.95, n), 0.0)
    corner_angle = np.where(is_corner, rng.uniform(np.pi / 3, 2 * np.pi / 3, n), 0.0)

    f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    pop = Population(
        image_shape=(H, W),
        family_code=torch.as_tensor(codes, dtype=torch.int64),
        center=f32(np.stack([cx, cy], 1)),
        orientation=f32(orientation),
        direction=f32(direction),
        size=f32(size),
        spatial_frequency=f32(sf),
        phase=f32(phase),
        phase_sensitivity=f32(m),
        exponent=f32(exponent),
        gain=torch.ones(n),
        baseline=torch.zeros(n),
        max_rate=torch.full((n,), 1e6),
        surround_strength=f32(s_ss),
        surround_ratio=f32(s_ratio),
        surround_untuned=f32(s_untuned),
        coi_strength=f32(s_coi),
        dog_ratio=f32(dog_ratio),
        dog_weight=f32(dog_weight),
        corner_angle=f32(corner_angle),
        surround_scale=torch.ones(n),
        coi_scale=torch.ones(n),
        neuron_ids=torch.arange(n, dtype=torch.int64),
        noise=noise,
    )
    # ---- calibration on natural images: pool scales, then gains for target mean rates
    if calibration_images is None:
        calibration_images = stim.natural_images(n_calibration, (H, W), seed=seed + 7919)
    cal = torch.as_tensor(np.asarray(calibration_images, dtype=np.float32)
                          if not isinstance(calibration_images, torch.Tensor) else calibration_images)
    comps = pop.components(cal)
    pop.surround_scale = comps["surround"].mean(0).clamp_min(1e-8).cpu()
    pop.coi_scale = comps["orthogonal"].mean(0).clamp_min(1e-8).cpu()
    target = _lognormal(rng, mean_rate, 0.45, n, 0.2 * mean_rate, 5.0 * mean_rate)
    base = target * rng.uniform(0.02, 0.08, n)
    r_max = target * _lognormal(rng, 10.0, 0.3, n, 4.0, 25.0)
    pop.baseline = f32(base)
    pop.max_rate = f32(r_max)
    pop.gain = _calibrate_gain(pop, comps, torch.as_tensor(target - base, dtype=torch.float32))
    pop._cache.clear()
    return pop
