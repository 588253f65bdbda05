"""Texture images: a small bundled set, user images, and natural-image patches.

Nothing is downloaded: the bundled textures are read at run time from images that ship
inside installed packages (scikit-image, plenoptic, scikit-learn), and the natural-image
patches used to learn the PCA / k-means filter banks of the paper (section 2, there
sampled from ImageNet) come from the photographs those packages carry.

Images are returned as float32 tensors of shape (C, H, W) with values in [0, 1];
C is 1 for grayscale and 3 for RGB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MIN_SIZE = 16  # smallest accepted image side (pixels); the 55x55 filters want more, but 16 still works


@dataclass(frozen=True)
class _Source:
    loader: Callable[[], np.ndarray]
    crop: tuple[slice, slice] | None
    provenance: str


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _plenoptic(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from importlib import resources

        from PIL import Image

        with resources.files("plenoptic.data").joinpath(name).open("rb") as fh:
            return np.asarray(Image.open(fh).convert("L") if name.endswith(".pgm") else Image.open(fh))

    return load


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return load_sample_images().images[index]

    return load


_TEXTURES: dict[str, _Source] = {
    "brick": _Source(_skimage("brick"), None, "scikit-image data 'brick' (grayscale)"),
    "grass": _Source(_skimage("grass"), None, "scikit-image data 'grass' (grayscale)"),
    "gravel": _Source(_skimage("gravel"), None, "scikit-image data 'gravel' (grayscale)"),
    "reptile_skin": _Source(_plenoptic("reptile_skin.pgm"), None, "plenoptic data 'reptile_skin' (grayscale)"),
    "hubble": _Source(_skimage("hubble_deep_field"), (slice(0, 872), slice(64, 936)),
                      "scikit-image data 'hubble_deep_field' (RGB), crop"),
    "petals": _Source(_sklearn(1), (slice(110, 310), slice(210, 410)),
                      "scikit-learn sample image 'flower.jpg' (RGB), crop of the petals"),
    "foliage": _Source(_sklearn(0), (slice(290, 427), slice(440, 600)),
                       "scikit-learn sample image 'china.jpg' (RGB), crop of the trees"),
}

# Photographs (not textures) that ship with installed packages: the natural-image pool for
# the learned filter banks (PCA, k-means), standing in for the paper's ImageNet patches.
_NATURAL: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "china": _sklearn(0),
    "flower": _sklearn(1),
    "camera": _skimage("camera"),
    "einstein": _plenoptic("einstein.pgm"),
    "curie": _plenoptic("curie.pgm"),
    "parrot": _plenoptic("parrot.png"),
}


def bundled_textures() -> list[str]:
    """Names of the bundled textures accepted by :func:`load_texture`."""
    return list(_TEXTURES)


def texture_provenance(name: str) -> str:
    """Where a bundled texture comes from (package and image)."""
    if name not in _TEXTURES:
        raise ValueError(f"unknown bundled texture {name!r}; expected one of {bundled_textures()}")
    return _TEXTURES[name].provenance


def _to_float(arr: np.ndarray, what: str) -> np.ndarray:
    """Convert an image array to float32 (H, W, C) in [0, 1]."""
    arr = np.asarray(arr)
    if arr.size == 0:
        raise ValueError(f"{what} is empty (shape {arr.shape})")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"{what}: expected a 2-D grayscale or (H, W, 1|3|4) colour image, got shape {arr.shape}")
    if arr.shape[2] == 2:  # grayscale + alpha
        arr = arr[:, :, :1]
    if arr.shape[2] == 4:  # drop alpha
        arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    elif arr.dtype == bool:
        out = arr.astype(np.float32)
    else:
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        if out.min() < 0 or out.max() > 1:
            lo, hi = float(out.min()), float(out.max())
            raise ValueError(f"{what}: float images must lie in [0, 1], found range [{lo:.3g}, {hi:.3g}]")
    if arr.shape[2] == 3 and np.allclose(out[..., 0], out[..., 1]) and np.allclose(out[..., 1], out[..., 2]):
        out = out[..., :1]  # an RGB file holding a grayscale picture
    return out


def _read_file(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise FileNotFoundError(f"texture image not found: {path}")
    if path.is_dir():
        raise ValueError(f"expected an image file, got a directory: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"image file is empty (0 bytes): {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
            elif img.mode.startswith("I;16") or img.mode == "I":
                return np.asarray(img, dtype=np.float64).clip(0, 65535).astype(np.uint16)
            elif img.mode == "F":
                raise ValueError(f"unsupported 32-bit float image mode 'F' in {path}; save it as 8-bit PNG/JPEG")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read {path} as an image (PNG/JPEG/...): {err}") from err


def _resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop (C, H, W) to a square and resize it to size x size (antialiased bilinear)."""
    _, h, w = img.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[:, top:top + side, left:left + side]
    if side != size:
        img = torch.nn.functional.interpolate(
            img[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )[0]
    return img.clamp(0, 1).contiguous()


def to_grayscale(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB -> (1, H, W) luminance (ITU-R 601 weights); (1, H, W) is returned as is."""
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected a (1|3, H, W) image, got shape {tuple(img.shape)}")
    if img.shape[0] == 1:
        return img
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype, device=img.device)
    return (img * weights[:, None, None]).sum(0, keepdim=True)


def load_texture(name_or_path: str | Path, size: int | None = None, grayscale: bool = False) -> torch.Tensor:
    """Load a bundled texture (by name) or an image file as a float32 (C, H, W) tensor in [0, 1].

    ``size`` centre-crops to a square and resizes to ``size`` x ``size``. Colour images give
    C = 3, grayscale ones C = 1 (``grayscale=True`` converts colour to luminance). Raises
    FileNotFoundError for a missing path and ValueError for unreadable, empty or tiny images.
    """
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < MIN_SIZE):
        raise ValueError(f"size must be an int >= {MIN_SIZE} (or None), got {size!r}")
    if isinstance(name_or_path, str) and name_or_path in _TEXTURES:
        src = _TEXTURES[name_or_path]
        arr = src.loader()
        if src.crop is not None:
            arr = arr[src.crop]
        what = f"bundled texture {name_or_path!r}"
    else:
        path = Path(name_or_path).expanduser()
        if not path.exists() and isinstance(name_or_path, str) and path.suffix == "" and "/" not in name_or_path:
            raise ValueError(
                f"{name_or_path!r} is neither a bundled texture ({', '.join(bundled_textures())}) "
                "nor an existing image file"
            )
        arr = _read_file(path)
        what = f"image {path}"
    arr = _to_float(arr, what)
    h, w = arr.shape[:2]
    if min(h, w) < MIN_SIZE:
        raise ValueError(f"{what} is too small: {h}x{w} pixels, need at least {MIN_SIZE}x{MIN_SIZE}")
    img = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    if grayscale:
        img = to_grayscale(img)
    if size is not None:
        img = _resize(img, size)
    return img.float().contiguous()


def natural_images(grayscale: bool = False) -> list[torch.Tensor]:
    """The photographs of installed packages used as the natural-image pool, each (C, H, W)."""
    out = []
    for name, loader in _NATURAL.items():
        img = torch.from_numpy(np.ascontiguousarray(_to_float(loader(), name).transpose(2, 0, 1)))
        if grayscale:
            img = to_grayscale(img)
        elif img.shape[0] == 1:
            continue  # grayscale photographs cannot give colour patches
        out.append(img)
    return out


def natural_image_patches(
    n: int,
    size: int = 11,
    *,
    grayscale: bool = False,
    seed: int = 0,
    images: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Sample ``n`` random ``size`` x ``size`` patches from natural images, as (n, C, size, size).

    ``images`` defaults to :func:`natural_images` (photographs shipped with installed packages);
    pass a list with one texture to sample patches of a target (Kmeans-Sample, section 2).
    Patches are drawn uniformly over images (in proportion to their area) and positions.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    pool = natural_images(grayscale) if images is None else list(images)
    if not pool:
        raise ValueError("no images to sample patches from")
    channels = {int(im.shape[0]) for im in pool}
    if len(channels) != 1 or any(im.ndim != 3 for im in pool):
        raise ValueError(f"images must all be (C, H, W) with the same C, got shapes {[tuple(i.shape) for i in pool]}")
    pool = [im for im in pool if im.shape[1] >= size and im.shape[2] >= size]
    if not pool:
        raise ValueError(f"no image is at least {size}x{size} pixels")
    rng = np.random.default_rng(seed)
    areas = np.array([(im.shape[1] - size + 1) * (im.shape[2] - size + 1) for im in pool], dtype=float)
    which = rng.choice(len(pool), size=n, p=areas / areas.sum())
    out = torch.empty(n, pool[0].shape[0], size, size, dtype=torch.float32)
    for k in range(len(pool)):
        idx = np.flatnonzero(which == k)
        if idx.size == 0:
            continue
        im = pool[k].float()
        ys = rng.integers(0, im.shape[1] - size + 1, size=idx.size)
        xs = rng.integers(0, im.shape[2] - size + 1, size=idx.size)
        # gather all patches of image k at once with unfold-free advanced indexing
        ar = torch.arange(size)
        rows = torch.as_tensor(ys)[:, None] + ar[None]  # (m, size)
        cols = torch.as_tensor(xs)[:, None] + ar[None]
        out[torch.as_tensor(idx)] = im[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)
    return out
