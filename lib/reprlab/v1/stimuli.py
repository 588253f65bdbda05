"""Stimuli for the V1 chapters: natural images and parametric Gabor / DoG / plaid stimuli.

Conventions (relied on by the population, the in silico experiments and readout alignment)
------------------------------------------------------------------------------------------
* **Stimulus space.** Every stimulus is a float32 image of *luminance deviation from mean grey*:
  0 is the grey screen, the displayable range is [-0.5, 0.5] (intensity = value + 0.5). A Gabor
  of contrast ``a`` spans [-a/2, a/2], so ``a = 1`` is full (Michelson) contrast.
* **Pixel coordinates.** Images are ``(..., H, W)``; pixel ``[i, j]`` has coordinates
  ``x = j`` (column, rightwards) and ``y = i`` (row, downwards), in pixels, with pixel centres at
  integer coordinates. The image centre is ``((W - 1) / 2, (H - 1) / 2)``. Positions are always
  given as ``(x, y)``. (The paper's eq. (2) writes the row offset first: its ``r^x`` is our ``y``.)
* **Orientation** ``φ`` (radians) is the direction of the grating's stripes (its bars), measured
  from the +x axis towards the +y axis. ``φ = 0``: horizontal stripes (luminance varies along y,
  as in eq. (1) where the carrier runs along the first/row axis); ``φ = π/2``: vertical stripes.
  Because y points down, increasing ``φ`` turns the stripes *clockwise* on a display with the
  origin at the top left (matplotlib ``imshow`` default). Exactly:
  ``gabor(φ)(p) = gabor(0)(c + R(-φ) (p - c))`` with ``R(θ) = [[cos θ, -sin θ], [sin θ, cos θ]]``
  acting on column vectors ``(x, y)`` and ``c`` the centre.
* **Phase** ``τ``: the carrier is ``cos(2π ν u + τ)`` with ``u = -sin φ (x - cx) + cos φ (y - cy)``
  the signed distance across the stripes (``u`` is eq. (2)'s ``i'``). ``τ = 0`` puts a bright bar
  through the centre (even), ``τ = π`` a dark bar, ``τ = ±π/2`` an edge (odd).
* **Size** ``σ`` is eq. (1)'s σ: the Gaussian envelope has standard deviation ``σ / 2`` pixels.
  **Spatial frequency** ``ν`` is in cycles per pixel.

The 2-D Hermite steerable basis (exact rotation of coefficients) lives in
:mod:`reprlab.v1.hermite` and is re-exported here (``stimuli.HermiteBasis`` etc.); it uses the
same coordinate and angle conventions.

All generators are vectorised: every parameter may be a scalar, a sequence, a numpy array or a
torch tensor; they are broadcast to a common batch shape ``S`` and one call returns ``(*S, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

DEFAULT_SHAPE: tuple[int, int] = (36, 64)

ArrayLike = float | int | Sequence[float] | np.ndarray | torch.Tensor

__all__ = [
    "DEFAULT_SHAPE",
    "dead_leaves",
    "dog",
    "gabor",
    "grid",
    "natural_images",
    "photo_sources",
    "plaid",
]


# --------------------------------------------------------------------------- helpers
def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError) as err:
        raise ValueError(f"shape must be (H, W) with two positive ints, got {shape!r}") from err
    if h < 2 or w < 2:
        raise ValueError(f"shape must be (H, W) with H, W >= 2, got {shape!r}")
    return h, w


def _as_params(
    names: Sequence[str],
    values: Sequence[ArrayLike],
    device: torch.device | str | None,
    dtype: torch.dtype,
) -> tuple[list[torch.Tensor], torch.Size, torch.device]:
    """Convert parameters to tensors on one device, broadcast them, check they are finite."""
    dev = None
    for v in values:
        if isinstance(v, torch.Tensor):
            dev = v.device
            break
    dev = torch.device(device) if device is not None else (dev or torch.device("cpu"))
    tensors = []
    for name, v in zip(names, values):
        t = torch.as_tensor(v if not isinstance(v, np.ndarray) else np.asarray(v, dtype=np.float64))
        t = t.to(device=dev, dtype=dtype)
        if not torch.isfinite(t).all():
            raise ValueError(f"parameter {name!r} must be finite, found NaN or inf")
        tensors.append(t)
    try:
        tensors = list(torch.broadcast_tensors(*tensors))
    except RuntimeError as err:
        shapes = {n: tuple(t.shape) for n, t in zip(names, tensors)}
        raise ValueError(f"stimulus parameters do not broadcast to one batch shape: {shapes}") from err
    return tensors, tensors[0].shape, dev


def grid(
    shape: Sequence[int] = DEFAULT_SHAPE,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinate grids ``(x, y)``, each ``(H, W)``: ``x[i, j] = j``, ``y[i, j] = i``."""
    h, w = _check_shape(shape)
    y = torch.arange(h, device=device, dtype=dtype)[:, None].expand(h, w)
    x = torch.arange(w, device=device, dtype=dtype)[None, :].expand(h, w)
    return x, y


# --------------------------------------------------------------------------- parametric stimuli
def gabor(
    center_x: ArrayLike,
    center_y: ArrayLike,
    size: ArrayLike,
    spatial_frequency: ArrayLike,
    orientation: ArrayLike,
    phase: ArrayLike = 0.0,
    contrast: ArrayLike = 1.0,
    *,
    shape: Sequence[int] = DEFAULT_SHAPE,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gabor stimuli of the digital-twin Methods, eqs. (1)-(2), batched.

    ``x[i, j] = a/2 · exp(-½ (u² + v²) / (σ²/4)) · cos(2π ν u + τ)`` with ``u`` the coordinate
    across the stripes and ``v`` along them (see the module docstring for the conventions).

    Args:
        center_x, center_y: centre in pixels (x = column, y = row).
        size: σ of eq. (1) (envelope std is σ/2), pixels, > 0.
        spatial_frequency: ν, cycles per pixel, >= 0.
        orientation: φ, stripe direction in radians.
        phase: τ, radians.
        contrast: a; the stimulus spans [-a/2, a/2].
        shape: ``(H, W)`` of each image.

    Returns:
        Tensor ``(*S, H, W)`` where ``S`` is the broadcast shape of the parameters.
    """
    names = ("center_x", "center_y", "size", "spatial_frequency", "orientation", "phase", "contrast")
    (cx, cy, sz, nu, phi, tau, a), batch, dev = _as_params(
        names, (center_x, center_y, size, spatial_frequency, orientation, phase, contrast), device, dtype
    )
    if (sz <= 0).any():
        raise ValueError(f"size must be > 0 pixels, found min {float(sz.min()):.4g}")
    if (nu < 0).any():
        raise ValueError(f"spatial_frequency must be >= 0 cycles/pixel, found {float(nu.min()):.4g}")
    gx, gy = grid(shape, dev, dtype)
    e = (..., None, None)
    dx = gx - cx[e]
    dy = gy - cy[e]
    c, s = torch.cos(phi)[e], torch.sin(phi)[e]
    u = -s * dx + c * dy  # across the stripes (eq. (2)'s i')
    r2 = dx * dx + dy * dy
    envelope = torch.exp(-0.5 * r2 / (sz[e] ** 2 / 4.0))
    carrier = torch.cos(2 * math.pi * nu[e] * u + tau[e])
    out = (a[e] / 2.0) * envelope * carrier
    return out.reshape(*batch, *out.shape[-2:])


def gaussian_blob(
    center_x: ArrayLike,
    center_y: ArrayLike,
    sigma: ArrayLike,
    *,
    shape: Sequence[int] = DEFAULT_SHAPE,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Unnormalised Gaussian ``g(r, σ)`` of eq. (10): peak 1 at the centre, std ``σ`` pixels."""
    (cx, cy, sg), batch, dev = _as_params(("center_x", "center_y", "sigma"), (center_x, center_y, sigma), device, dtype)
    if (sg <= 0).any():
        raise ValueError(f"sigma must be > 0 pixels, found min {float(sg.min()):.4g}")
    gx, gy = grid(shape, dev, dtype)
    e = (..., None, None)
    r2 = (gx - cx[e]) ** 2 + (gy - cy[e]) ** 2
    out = torch.exp(-r2 / (2 * sg[e] ** 2))
    return out.reshape(*batch, *out.shape[-2:])


def dog(
    center_x: ArrayLike,
    center_y: ArrayLike,
    sigma_center: ArrayLike,
    sigma_surround: ArrayLike,
    contrast_center: ArrayLike = 0.5,
    contrast_surround: ArrayLike = 0.5,
    *,
    shape: Sequence[int] = DEFAULT_SHAPE,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Difference-of-Gaussians stimuli of the digital-twin Methods, eqs. (9)-(10), batched.

    ``x = a_cen (1 + a_sur) g(r, σ_cen) - a_sur g(r, σ_sur)`` with ``g`` the unnormalised
    Gaussian of eq. (10) (peak 1). The value at the centre is ``a_cen (1 + a_sur) - a_sur``.
    A negative ``contrast_center`` gives an OFF-centre stimulus. Centre and surround share one
    location ``(center_x, center_y)`` (pixels, x = column, y = row).
    """
    names = ("center_x", "center_y", "sigma_center", "sigma_surround", "contrast_center", "contrast_surround")
    (cx, cy, sc, ss, ac, asur), batch, dev = _as_params(
        names, (center_x, center_y, sigma_center, sigma_surround, contrast_center, contrast_surround), device, dtype
    )
    if (sc <= 0).any() or (ss <= 0).any():
        raise ValueError("sigma_center and sigma_surround must be > 0 pixels")
    g_c = gaussian_blob(cx, cy, sc, shape=shape, device=dev, dtype=dtype)
    g_s = gaussian_blob(cx, cy, ss, shape=shape, device=dev, dtype=dtype)
    e = (..., None, None)
    out = ac[e] * (1 + asur[e]) * g_c - asur[e] * g_s
    return out.reshape(*batch, *out.shape[-2:])


def plaid(
    center_x: ArrayLike,
    center_y: ArrayLike,
    size: ArrayLike,
    spatial_frequency: ArrayLike,
    orientation: ArrayLike,
    phase: ArrayLike = 0.0,
    contrast: ArrayLike = 0.5,
    contrast_orthogonal: ArrayLike = 0.5,
    phase_orthogonal: ArrayLike | None = None,
    *,
    shape: Sequence[int] = DEFAULT_SHAPE,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Plaid stimuli (Methods, "Plaid stimuli"): a Gabor plus the orthogonal Gabor, batched.

    ``plaid = gabor(φ, τ, a) + gabor(φ + π/2, τ_orth, a_orth)`` with identical centre, size and
    spatial frequency. ``phase_orthogonal`` defaults to ``phase``. The sum spans at most
    ``[-(a + a_orth)/2, (a + a_orth)/2]``; keep ``a + a_orth <= 1`` to stay displayable.
    """
    if phase_orthogonal is None:
        phase_orthogonal = phase
    kw = dict(shape=shape, device=device, dtype=dtype)
    names = ("center_x", "center_y", "size", "spatial_frequency", "orientation", "phase",
             "contrast", "contrast_orthogonal", "phase_orthogonal")
    (cx, cy, sz, nu, phi, tau, a, ao, tauo), _, dev = _as_params(
        names, (center_x, center_y, size, spatial_frequency, orientation, phase, contrast,
                contrast_orthogonal, phase_orthogonal), device, dtype
    )
    kw["device"] = dev
    g1 = gabor(cx, cy, sz, nu, phi, tau, a, **kw)
    g2 = gabor(cx, cy, sz, nu, phi + math.pi / 2, tauo, ao, **kw)
    return g1 + g2


# --------------------------------------------------------------------------- natural images
# Photographs shipped inside installed packages (read from disk with PIL; nothing is downloaded).
_PHOTO_FILES: tuple[tuple[str, str], ...] = (
    ("skimage", "data/astronaut.png"), ("skimage", "data/brick.png"), ("skimage", "data/camera.png"),
    ("skimage", "data/chelsea.png"), ("skimage", "data/clock_motion.png"), ("skimage", "data/coffee.png"),
    ("skimage", "data/coins.png"), ("skimage", "data/grass.png"), ("skimage", "data/gravel.png"),
    ("skimage", "data/moon.png"), ("skimage", "data/rocket.jpg"), ("skimage", "data/motorcycle_left.png"),
    ("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("plenoptic", "data/einstein.pgm"), ("plenoptic", "data/curie.pgm"), ("plenoptic", "data/parrot.png"),
    ("plenoptic", "data/reptile_skin.pgm"), ("plenoptic", "data/macaca_nigra_self-portrait.jpg"),
)


def _to_gray01(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img).astype(np.float64)
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.2125, 0.7154, 0.0721]) if a.shape[-1] >= 3 else a[..., 0]
    lo, hi = np.percentile(a, 0.5), np.percentile(a, 99.5)
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


@lru_cache(maxsize=1)
def _load_photos() -> tuple[tuple[str, np.ndarray], ...]:
    """Grayscale photographs in [0, 1] shipped with skimage, sklearn, matplotlib and plenoptic."""
    import importlib.util
    from pathlib import Path

    from PIL import Image

    photos: list[tuple[str, np.ndarray]] = []
    for package, rel in _PHOTO_FILES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(list(spec.submodule_search_locations)[0]) / rel
        if not path.is_file():
            continue
        try:
            with Image.open(path) as im:
                gray = np.asarray(im.convert("L"), dtype=np.float64)
        except OSError:
            continue
        photos.append((f"{package}:{path.stem}", _to_gray01(gray)))
    return tuple(photos)


def photo_sources() -> list[str]:
    """Names of the packaged photographs that :func:`natural_images` crops from."""
    return [name for name, _ in _load_photos()]


def _resize(batch: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Anti-aliased resize of ``(B, h, w)`` to ``(B, H, W)``."""
    return torch.nn.functional.interpolate(
        batch[:, None], size=shape, mode="bilinear", antialias=True, align_corners=False
    )[:, 0]


def dead_leaves(
    n: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    seed: int = 0,
    n_discs: int = 200,
    r_min: float = 0.025,
    r_max: float = 0.5,
    oversample: int = 1,
) -> np.ndarray:
    """Dead-leaves images: occluding discs with power-law radii ``p(r) ∝ r^-3`` (1/f² power).

    Radii are relative to the image width; grey levels are uniform in [0, 1]. Discs are painted
    back to front, vectorised over images. Returns intensities in [0, 1], shape ``(n, H, W)``.
    """
    h, w = _check_shape(shape)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0 < r_min < r_max:
        raise ValueError(f"need 0 < r_min < r_max, got r_min={r_min}, r_max={r_max}")
    if n == 0:
        return np.zeros((0, h, w), np.float32)
    # numpy (single-threaded elementwise work is fastest for this loop of small operations)
    rng = np.random.default_rng(int(seed))
    hh, ww = h * oversample, w * oversample
    ys = np.linspace(0, h / w, hh, dtype=np.float32)[:, None]
    xs = np.linspace(0, 1, ww, dtype=np.float32)[None, :]
    out = np.empty((n, hh, ww), np.float32)
    chunk = 128
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        img = np.repeat(rng.random((b, 1, 1), dtype=np.float32), hh, 1).repeat(ww, 2)
        # inverse-CDF sampling of p(r) ∝ r^-3 on [r_min, r_max]
        u = rng.random((b, n_discs))
        r = ((r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5).astype(np.float32)
        cx = (rng.random((b, n_discs)) * 1.2 - 0.1).astype(np.float32)
        cy = ((rng.random((b, n_discs)) * 1.2 - 0.1) * (h / w)).astype(np.float32)
        val = rng.random((b, n_discs)).astype(np.float32)
        # paint the largest discs first so that small ones stay visible (back to front)
        order = np.argsort(-r, axis=1, kind="stable")
        r, cx, cy, val = (np.take_along_axis(t, order, 1) for t in (r, cx, cy, val))
        dx2 = (xs[None] - cx[:, :, None]) ** 2  # (b, discs, ww)
        dy2 = (ys.T[None] - cy[:, :, None]) ** 2  # (b, discs, hh)
        for k in range(n_discs):
            mask = dy2[:, k, :, None] + dx2[:, k, None, :] < (r[:, k] ** 2)[:, None, None]
            img = np.where(mask, val[:, k, None, None], img)
        out[start:start + b] = img
    res = _resize(torch.from_numpy(out), (h, w)).numpy() if oversample > 1 else out
    return np.clip(res, 0, 1).astype(np.float32)


def _photo_crops(n: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    photos = _load_photos()
    if not photos:
        raise RuntimeError("no packaged photographs could be loaded (skimage/sklearn/matplotlib/plenoptic)")
    h, w = shape
    aspect = h / w
    out = np.empty((n, h, w), np.float32)
    src = rng.integers(0, len(photos), size=n)
    for k in range(n):
        img = photos[src[k]][1]
        ih, iw = img.shape
        max_w = min(iw, ih / aspect)
        min_w = min(max_w, max(w, 0.12 * max_w))
        cw = float(np.exp(rng.uniform(np.log(min_w), np.log(max_w))))
        ch = cw * aspect
        x0 = rng.uniform(0, iw - cw)
        y0 = rng.uniform(0, ih - ch)
        crop = img[int(y0):int(y0 + ch) or 1, int(x0):int(x0 + cw) or 1]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        t = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None]
        out[k] = _resize(t, shape)[0].numpy()
    return out


def natural_images(
    n: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    seed: int = 0,
    photo_fraction: float = 0.5,
    rms_contrast: tuple[float, float] = (0.1, 0.25),
) -> np.ndarray:
    """``n`` distinct natural-like grayscale images in the stimulus space (see module docstring).

    A fraction ``photo_fraction`` are random crops (random location, log-uniform scale, random
    mirror) of the photographs shipped with scikit-image, scikit-learn, matplotlib and plenoptic
    (:func:`photo_sources`); the rest are :func:`dead_leaves` images with 1/f-like statistics.
    Each image is converted to luminance deviation from its mean (mean 0), scaled to an RMS
    contrast drawn uniformly from ``rms_contrast`` and clipped to [-0.5, 0.5]. The order of
    photos and dead leaves is shuffled. Deterministic given ``seed``.

    Returns:
        float32 array ``(n, H, W)``.
    """
    h, w = _check_shape(shape)
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not 0.0 <= photo_fraction <= 1.0:
        raise ValueError(f"photo_fraction must be in [0, 1], got {photo_fraction}")
    lo, hi = rms_contrast
    if not 0 < lo <= hi <= 0.5:
        raise ValueError(f"rms_contrast must satisfy 0 < lo <= hi <= 0.5, got {rms_contrast}")
    rng = np.random.default_rng(seed)
    n_photo = int(round(n * photo_fraction))
    parts = []
    if n_photo:
        parts.append(_photo_crops(n_photo, (h, w), rng))
    if n - n_photo:
        parts.append(dead_leaves(n - n_photo, (h, w), seed=int(rng.integers(2**31))))
    if not parts:
        return np.zeros((0, h, w), np.float32)
    imgs = np.concatenate(parts)[rng.permutation(n)].astype(np.float64)
    imgs -= imgs.mean(axis=(1, 2), keepdims=True)
    std = imgs.std(axis=(1, 2), keepdims=True)
    target = rng.uniform(lo, hi, size=(n, 1, 1))
    imgs = imgs * (target / np.maximum(std, 1e-6))
    return np.clip(imgs, -0.5, 0.5).astype(np.float32)


# --------------------------------------------------------------------------- Hermite basis
_HERMITE_NAMES = ("HermiteBasis", "hermite_basis", "hermite_functions", "hermite_orders", "n_basis",
                  "rotate_coefficients", "rotation_matrix")


def __getattr__(name: str):
    """Re-export the steerable Hermite basis of :mod:`reprlab.v1.hermite` (imported lazily)."""
    if name in _HERMITE_NAMES:
        from reprlab.v1 import hermite

        return getattr(hermite, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
