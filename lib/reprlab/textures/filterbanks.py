"""Filter banks of the single-layer texture models (paper section 2).

A :class:`FilterBank` is a list of weight tensors, one per filter size, each of shape
(maps, in_channels, k, k) with odd k. All convolutions are 'same' (padding (k-1)/2), so
feature maps of all sizes stack into one layer of ``n_maps`` feature maps.

Banks (names for :func:`make_bank`):

==================  ==========================================================================
random-363          363 random 11x11 filters, Glorot uniform
random-3267         3267 random 11x11 filters, Glorot uniform
random-multiscale   sizes 3,5,7,11,15,23,37,55 x 128 maps = 1024 maps, Glorot uniform per size
fourier-363         each 11x11 2-D Fourier basis function on each colour channel separately
fourier-3267        each basis function times colour weights (w_R, w_G, w_B) in {1, 0, -1}^3
pca-363             principal axes of 11x11 natural-image patches
kmeans-363/-3267    k-means centroids of whitened 11x11 natural-image patches
kmeans-nonwhite     k-means centroids of raw (not whitened) patches (``maps`` = 363 or 3267)
kmeans-sample       k-means centroids of whitened patches of the target texture (``target=``)
==================  ==========================================================================

For grayscale inputs (``in_channels=1``) the colour structure collapses: Fourier banks have
121 (or 3 x 121, weights {1, 0, -1}) maps and PCA has 121 axes. Natural-image patches come
from photographs that ship with installed packages (:mod:`reprlab.textures.images`); their
number is ``n_patches`` (the paper's 1e7 at ``paper`` scale, far fewer at ``default``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from reprlab.scales import pick

MULTISCALE_SIZES: tuple[int, ...] = (3, 5, 7, 11, 15, 23, 37, 55)

BANK_NAMES: tuple[str, ...] = (
    "random-363",
    "random-3267",
    "random-multiscale",
    "fourier-363",
    "fourier-3267",
    "pca-363",
    "kmeans-363",
    "kmeans-3267",
    "kmeans-nonwhite",
    "kmeans-sample",
)

#: number of natural-image patches used to learn PCA / k-means banks, per scale
PATCH_PRESETS = {"smoke": 4000, "default": 40_000, "paper": 10_000_000}


@dataclass
class FilterBank:
    """Convolution weights per filter size: ``weights[i]`` has shape (maps_i, in_channels, k_i, k_i)."""

    weights: list[torch.Tensor]
    name: str = "bank"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.weights:
            raise ValueError("a FilterBank needs at least one weight tensor")
        cin = None
        for w in self.weights:
            if not isinstance(w, torch.Tensor) or w.ndim != 4:
                raise ValueError(f"each weight must be a 4-D tensor (maps, in_channels, k, k), got {getattr(w, 'shape', type(w))}")
            if w.shape[2] != w.shape[3] or w.shape[2] % 2 == 0:
                raise ValueError(f"filters must be square with odd size, got {tuple(w.shape[2:])}")
            if w.shape[0] < 1:
                raise ValueError("each scale needs at least one feature map")
            if cin is not None and w.shape[1] != cin:
                raise ValueError(f"all scales must share in_channels, got {cin} and {w.shape[1]}")
            cin = w.shape[1]
            if not torch.isfinite(w).all():
                raise ValueError("filter weights contain NaN or infinite values")
        self.weights = [w.detach().float().contiguous() for w in self.weights]

    @property
    def sizes(self) -> list[int]:
        """Filter size k of each scale."""
        return [int(w.shape[-1]) for w in self.weights]

    @property
    def maps_per_scale(self) -> list[int]:
        return [int(w.shape[0]) for w in self.weights]

    @property
    def n_maps(self) -> int:
        """Total number of feature maps N (rows of the Gram matrix)."""
        return sum(self.maps_per_scale)

    @property
    def in_channels(self) -> int:
        return int(self.weights[0].shape[1])

    def subset(self, sizes: list[int] | tuple[int, ...]) -> FilterBank:
        """The bank restricted to the given filter sizes (e.g. single scales of Fig. 2)."""
        keep = [w for w in self.weights if w.shape[-1] in set(sizes)]
        if not keep:
            raise ValueError(f"none of sizes {list(sizes)} is in this bank (sizes {self.sizes})")
        return FilterBank(keep, name=f"{self.name}[{','.join(str(w.shape[-1]) for w in keep)}]", meta=dict(self.meta))

    def __repr__(self) -> str:
        return f"FilterBank({self.name!r}, sizes={self.sizes}, maps={self.maps_per_scale}, in_channels={self.in_channels})"


def _check_channels(in_channels: int) -> None:
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}")


def glorot_uniform(maps: int, in_channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Glorot & Bengio (2010) uniform init as in Lasagne: U(-a, a), a = sqrt(6 / (fan_in + fan_out)),
    fan_in = in_channels k^2, fan_out = maps k^2."""
    fan_in, fan_out = in_channels * size * size, maps * size * size
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(maps, in_channels, size, size, generator=generator) * 2 - 1) * a


def random_bank(size: int = 11, maps: int = 363, in_channels: int = 3, seed: int = 0) -> FilterBank:
    """Single-scale bank of ``maps`` random ``size`` x ``size`` filters (Glorot uniform)."""
    if not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd int, got {size!r}")
    if not isinstance(maps, int) or maps < 1:
        raise ValueError(f"maps must be a positive int, got {maps!r}")
    _check_channels(in_channels)
    gen = torch.Generator().manual_seed(int(seed))
    return FilterBank([glorot_uniform(maps, in_channels, size, gen)], name=f"random-{size}x{maps}",
                      meta={"seed": seed})


def random_multiscale_bank(
    sizes: tuple[int, ...] | list[int] = MULTISCALE_SIZES,
    maps_per_scale: int = 128,
    in_channels: int = 3,
    seed: int = 0,
) -> FilterBank:
    """Random-Multiscale (section 2): Glorot-uniform filters of each size, ``maps_per_scale`` each.

    The paper's model is sizes 3, 5, 7, 11, 15, 23, 37, 55 x 128 maps = 1024 feature maps.
    Each size draws from its own generator stream (seed, size), so toggling a size on or off
    leaves the filters of the other sizes unchanged.
    """
    sizes = list(sizes)
    if not sizes:
        raise ValueError("sizes must name at least one filter size")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"sizes must be distinct, got {sizes}")
    if not isinstance(maps_per_scale, int) or maps_per_scale < 1:
        raise ValueError(f"maps_per_scale must be a positive int, got {maps_per_scale!r}")
    _check_channels(in_channels)
    weights = []
    for s in sorted(sizes):
        if not isinstance(s, int) or s < 1 or s % 2 == 0:
            raise ValueError(f"filter sizes must be positive odd ints, got {s!r}")
        gen = torch.Generator().manual_seed(int(seed) * 1000 + s)
        weights.append(glorot_uniform(maps_per_scale, in_channels, s, gen))
    return FilterBank(weights, name="random-multiscale", meta={"seed": seed})


def fourier_basis(size: int = 11) -> torch.Tensor:
    """Real orthonormal 2-D Fourier basis of size x size images: (size^2, size, size).

    For each frequency pair (u, v) / (-u, -v) one cosine and one sine; the DC (and, for even
    sizes, the Nyquist) terms have only the cosine. Orthonormality makes the basis complete.
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    y, x = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    basis = []
    seen = set()
    for u in range(size):
        for v in range(size):
            key = (u, v)
            neg = ((-u) % size, (-v) % size)
            if key in seen:
                continue
            seen.update({key, neg})
            phase = 2 * np.pi * (u * y + v * x) / size
            basis.append(np.cos(phase))
            if neg != key:
                basis.append(np.sin(phase))
    b = np.stack(basis)
    b /= np.linalg.norm(b.reshape(len(b), -1), axis=1)[:, None, None]
    return torch.from_numpy(b).float()


def fourier_bank(maps: int = 363, in_channels: int = 3, size: int = 11) -> FilterBank:
    """Fourier-363 (each basis function on one colour channel) or Fourier-3267 (colour weights
    in {1, 0, -1}^3, all 27 combinations including the zero one, as in the paper's count)."""
    _check_channels(in_channels)
    basis = fourier_basis(size)  # (size^2, k, k)
    if maps == 363:
        eye = torch.eye(in_channels)
        w = torch.einsum("bij,cd->cbdij", basis, eye).reshape(-1, in_channels, size, size)
    elif maps == 3267:
        combos = torch.tensor(list(itertools.product((1.0, 0.0, -1.0), repeat=in_channels)))
        w = torch.einsum("bij,cd->cbdij", basis, combos).reshape(-1, in_channels, size, size)
    else:
        raise ValueError(f"Fourier banks come with maps=363 or 3267, got {maps!r}")
    return FilterBank([w], name=f"fourier-{maps}", meta={"size": size})


def _patch_matrix(n_patches: int, size: int, in_channels: int, seed: int, images=None) -> np.ndarray:
    from reprlab.textures.images import natural_image_patches

    p = natural_image_patches(n_patches, size, grayscale=in_channels == 1, seed=seed, images=images)
    return p.reshape(n_patches, -1).double().numpy()


def _blas_threads():
    """Limit numpy/scipy BLAS threads to torch's thread count: one knob for the whole chapter
    (oversubscribed BLAS threads can make a 363x363 eigendecomposition 100x slower)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=torch.get_num_threads(), user_api="blas")


def _covariance_eig(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, eigenvalues (descending) and eigenvectors (columns) of the covariance of rows of x."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    mean = xt.mean(0)
    xc = xt - mean
    cov = xc.T @ xc / max(1, xt.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)
    return mean.numpy(), evals[order].clamp_min(0).numpy(), evecs[:, order].numpy()


def zca_whitener(x: np.ndarray, eps: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """ZCA whitening of rows of x: returns (mean, W) so that (x - mean) @ W has ~identity covariance.

    ``eps`` regularises small eigenvalues relative to the mean eigenvalue."""
    mean, evals, evecs = _covariance_eig(x)
    w = evecs @ np.diag(1.0 / np.sqrt(evals + eps * evals.mean())) @ evecs.T
    return mean, w


def pca_bank(in_channels: int = 3, size: int = 11, n_patches: int | None = None, seed: int = 0) -> FilterBank:
    """PCA-363: the principal axes of vectorised natural-image patches as filters (all of them,
    by decreasing variance; eigendecomposition of the patch covariance)."""
    _check_channels(in_channels)
    n_patches = pick(PATCH_PRESETS) if n_patches is None else int(n_patches)
    dim = in_channels * size * size
    if n_patches < dim:
        raise ValueError(f"PCA of {dim}-dim patches needs n_patches >= {dim}, got {n_patches}")
    x = _patch_matrix(n_patches, size, in_channels, seed)
    _, _, evecs = _covariance_eig(x)  # principal axes, by decreasing variance
    w = torch.from_numpy(np.ascontiguousarray(evecs.T)).float().reshape(dim, in_channels, size, size)
    return FilterBank([w], name="pca-363", meta={"n_patches": n_patches, "seed": seed})


def kmeans_bank(
    maps: int = 363,
    in_channels: int = 3,
    size: int = 11,
    whiten: bool = True,
    n_patches: int | None = None,
    seed: int = 0,
    images: list[torch.Tensor] | None = None,
    name: str | None = None,
) -> FilterBank:
    """K-means centroids of (whitened) ``size`` x ``size`` patches as filters (Kmeans-* banks).

    Uses scikit-learn's MiniBatchKMeans (the paper cites a batch-OMP k-means, here the
    standard mini-batch k-means). ``images`` restricts patches to given images (Kmeans-Sample).
    """
    _check_channels(in_channels)
    if not isinstance(maps, int) or maps < 1:
        raise ValueError(f"maps must be a positive int, got {maps!r}")
    n_patches = pick(PATCH_PRESETS) if n_patches is None else int(n_patches)
    if n_patches < maps:
        raise ValueError(f"k-means with {maps} clusters needs n_patches >= {maps}, got {n_patches}")
    from sklearn.cluster import MiniBatchKMeans

    x = _patch_matrix(n_patches, size, in_channels, seed, images=images)
    if whiten:
        mean, w = zca_whitener(x)
        x = (x - mean) @ w
    with _blas_threads():
        km = MiniBatchKMeans(n_clusters=maps, random_state=seed, n_init=1, batch_size=max(1024, 4 * maps),
                             max_iter=50).fit(x.astype(np.float32))
    c = torch.from_numpy(np.asarray(km.cluster_centers_)).float().reshape(maps, in_channels, size, size)
    return FilterBank([c], name=name or f"kmeans-{maps}", meta={"n_patches": n_patches, "seed": seed, "whiten": whiten})


def make_bank(name: str, in_channels: int = 3, seed: int = 0, target: torch.Tensor | None = None, **kw) -> FilterBank:
    """Build a named bank of section 2 (see module docstring for ``name``).

    Extra keywords go to the underlying builder: ``maps_per_scale``/``sizes`` for
    random-multiscale, ``n_patches`` for the learned banks, ``maps`` (363 or 3267) for
    kmeans-nonwhite / kmeans-sample. ``target`` (C, H, W) is required by kmeans-sample.
    """
    if not isinstance(name, str):
        raise ValueError(f"bank name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key == "random-363":
        return _named(random_bank(11, 363, in_channels, seed), key)
    if key == "random-3267":
        return _named(random_bank(11, 3267, in_channels, seed), key)
    if key == "random-multiscale":
        return random_multiscale_bank(in_channels=in_channels, seed=seed, **kw)
    if key == "fourier-363":
        return fourier_bank(363, in_channels)
    if key == "fourier-3267":
        return fourier_bank(3267, in_channels)
    if key == "pca-363":
        return pca_bank(in_channels, seed=seed, **kw)
    if key == "kmeans-363":
        return kmeans_bank(363, in_channels, seed=seed, **kw)
    if key == "kmeans-3267":
        return kmeans_bank(3267, in_channels, seed=seed, **kw)
    if key == "kmeans-nonwhite":
        maps = kw.pop("maps", 363)
        return kmeans_bank(maps, in_channels, whiten=False, seed=seed, name=f"kmeans-nonwhite-{maps}", **kw)
    if key == "kmeans-sample":
        if target is None:
            raise ValueError("kmeans-sample learns its filters from the target texture: pass target=(C, H, W) image")
        if target.ndim != 3 or target.shape[0] != in_channels:
            raise ValueError(f"target must be ({in_channels}, H, W), got shape {tuple(target.shape)}")
        maps = kw.pop("maps", 363)
        return kmeans_bank(maps, in_channels, seed=seed, images=[target.detach().cpu().float()],
                           name=f"kmeans-sample-{maps}", **kw)
    raise ValueError(f"unknown filter bank {name!r}; expected one of {list(BANK_NAMES)}")


def _named(bank: FilterBank, name: str) -> FilterBank:
    bank.name = name
    return bank
