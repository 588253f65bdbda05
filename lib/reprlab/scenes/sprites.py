"""Synthetic sprite scenes of the ECON paper (appendix C.1): circles, squares, triangles.

Scenes follow the dead-leaves process of §2: a uniformly coloured background (RGB
channels 0–127) is the first layer, then objects are placed back to front, each fully
inside the image. Colours are either *unique* per class (red circles, green squares,
blue triangles) or *random* (each channel 128–255). Every scene comes with its full
(unoccluded) shapes, visible regions, a visible label map and the depth order, so the
decomposition can be scored against ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
UNIQUE_COLOURS: dict[str, tuple[int, int, int]] = {
    "circle": (255, 0, 0),
    "square": (0, 255, 0),
    "triangle": (0, 0, 255),
}
COLOUR_MODES: tuple[str, ...] = ("unique", "random")
BACKGROUND_RANGE = (0, 127)
OBJECT_RANGE = (128, 255)
# Fill ratio of the bounding box: triangle 1/2, circle pi/4, square 1.
_FILL_EDGES = (0.64, 0.9)


@dataclass
class SceneBatch:
    """A batch of layered scenes; objects are stored back to front (index 0 is deepest).

    Attributes
    ----------
    images : (N, 3, H, W) float32 in [0, 1].
    shapes : (N, M, H, W) bool, full unoccluded object shapes (padding slots all False).
    regions : (N, M, H, W) bool, visible parts of the objects (eq. 2).
    labels : (N, H, W) int64, 0 = background, i + 1 = visible object in depth slot i.
    classes : (N, M) int64 class index into :data:`CLASSES`, -1 for padding.
    colours : (N, M, 3) uint8 object colours.
    backgrounds : (N, 3) uint8 background colours.
    n_objects : (N,) int64 number of objects per scene.
    colour_mode : 'unique' or 'random'.
    """

    images: np.ndarray
    shapes: np.ndarray
    regions: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    colours: np.ndarray
    backgrounds: np.ndarray
    n_objects: np.ndarray
    colour_mode: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def layers(self) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth layers for eq. (3): appearances (N, M+1, 3, H, W), shapes (N, M+1, H, W).

        Layer 0 is the background (shape all ones); layer i + 1 is object slot i.
        """
        n, m, h, w = self.shapes.shape
        app = np.empty((n, m + 1, 3, h, w), np.float32)
        app[:, 0] = (self.backgrounds.astype(np.float32) / 255.0)[:, :, None, None]
        app[:, 1:] = (self.colours.astype(np.float32) / 255.0)[:, :, :, None, None]
        shp = np.concatenate([np.ones((n, 1, h, w), bool), self.shapes], axis=1)
        return app, shp.astype(np.float32)

    def subset(self, index: np.ndarray | slice) -> SceneBatch:
        """Return the scenes selected by ``index``."""
        return SceneBatch(
            images=self.images[index], shapes=self.shapes[index], regions=self.regions[index],
            labels=self.labels[index], classes=self.classes[index], colours=self.colours[index],
            backgrounds=self.backgrounds[index], n_objects=self.n_objects[index],
            colour_mode=self.colour_mode,
        )


def default_size_range(image_size: int) -> tuple[int, int]:
    """Object bounding-box side at ``image_size``: one fixed size, 35 % of the image.

    Appendix C.1 randomises only the positions, and the paper's expert samples show "the
    same object in different spatial positions" (Fig. 1B), so every object has one size.
    Pass ``size_range`` to :func:`make_scenes` for scenes with varied sizes.
    """
    side = max(3, int(round(0.35 * image_size)))
    return side, side


def shape_mask(cls: int, size: int, top: int, left: int, image_size: int) -> np.ndarray:
    """Binary (H, W) mask of one sprite with bounding box ``size`` at (``top``, ``left``)."""
    if cls not in range(len(CLASSES)):
        raise ValueError(f"class index must be in 0..{len(CLASSES) - 1}, got {cls}")
    if size < 1 or top < 0 or left < 0 or top + size > image_size or left + size > image_size:
        raise ValueError(
            f"sprite of size {size} at ({top}, {left}) does not fit a {image_size}px image"
        )
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32) + 0.5
    v = (yy - top) / size  # in (0, 1) inside the box
    u = (xx - left) / size
    inside = (u > 0) & (u < 1) & (v > 0) & (v < 1)
    name = CLASSES[cls]
    if name == "square":
        return inside
    if name == "circle":
        return inside & ((u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25)
    # upward isosceles triangle: apex at the top centre, base along the bottom edge
    return inside & (np.abs(u - 0.5) <= 0.5 * v)


def make_scenes(
    n: int,
    image_size: int = 32,
    colour_mode: str = "unique",
    n_objects: int | tuple[int, int] | None = None,
    classes: str = "one_each",
    similar_colours: bool = False,
    size_range: tuple[int, int] | None = None,
    random_state: int | np.random.Generator | None = 0,
) -> SceneBatch:
    """Draw ``n`` scenes from the dead-leaves process of §2 (appendix C.1 data).

    ``classes='one_each'`` gives the training distribution: exactly one circle, square and
    triangle in random depth order. ``classes='random'`` draws ``n_objects`` (an int or an
    inclusive ``(lo, hi)`` range, 0–5 allowed) classes with replacement — the
    out-of-distribution scenes. ``similar_colours`` makes all objects of a random-colour
    scene share nearly the same colour (±12 per channel).
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    if colour_mode not in COLOUR_MODES:
        raise ValueError(f"colour_mode must be one of {COLOUR_MODES}, got {colour_mode!r}")
    if classes not in ("one_each", "random"):
        raise ValueError(f"classes must be 'one_each' or 'random', got {classes!r}")
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    lo_s, hi_s = size_range if size_range is not None else default_size_range(image_size)
    if not (1 <= lo_s <= hi_s <= image_size):
        raise ValueError(f"size_range must satisfy 1 <= lo <= hi <= {image_size}, got {(lo_s, hi_s)}")
    if classes == "one_each":
        if n_objects not in (None, len(CLASSES)):
            raise ValueError(f"classes='one_each' places exactly {len(CLASSES)} objects, got n_objects={n_objects}")
        lo_n = hi_n = len(CLASSES)
    else:
        if n_objects is None:
            raise ValueError("classes='random' needs n_objects (an int or a (lo, hi) range)")
        lo_n, hi_n = (n_objects, n_objects) if np.isscalar(n_objects) else tuple(n_objects)
        if not (0 <= lo_n <= hi_n <= 8):
            raise ValueError(f"n_objects must lie in 0..8 with lo <= hi, got {n_objects!r}")
    m = hi_n
    h = w = image_size
    images = np.empty((n, 3, h, w), np.float32)
    shapes = np.zeros((n, m, h, w), bool)
    regions = np.zeros((n, m, h, w), bool)
    labels = np.zeros((n, h, w), np.int64)
    cls_arr = np.full((n, m), -1, np.int64)
    colours = np.zeros((n, m, 3), np.uint8)
    backgrounds = rng.integers(BACKGROUND_RANGE[0], BACKGROUND_RANGE[1] + 1, size=(n, 3)).astype(np.uint8)
    counts = np.empty(n, np.int64)
    for i in range(n):
        if classes == "one_each":
            order = rng.permutation(len(CLASSES))
        else:
            order = rng.integers(0, len(CLASSES), size=int(rng.integers(lo_n, hi_n + 1)))
        counts[i] = len(order)
        canvas = np.broadcast_to(backgrounds[i, :, None, None], (3, h, w)).astype(np.float32) / 255.0
        canvas = canvas.copy()
        base = rng.integers(OBJECT_RANGE[0] + 12, OBJECT_RANGE[1] - 12 + 1, size=3)
        for j, c in enumerate(order):
            size = int(rng.integers(lo_s, hi_s + 1))
            top = int(rng.integers(0, image_size - size + 1))
            left = int(rng.integers(0, image_size - size + 1))
            mask = shape_mask(int(c), size, top, left, image_size)
            if colour_mode == "unique":
                col = np.array(UNIQUE_COLOURS[CLASSES[int(c)]])
            elif similar_colours:
                col = np.clip(base + rng.integers(-12, 13, size=3), *OBJECT_RANGE)
            else:
                col = rng.integers(OBJECT_RANGE[0], OBJECT_RANGE[1] + 1, size=3)
            shapes[i, j] = mask
            cls_arr[i, j] = c
            colours[i, j] = col
            canvas[:, mask] = (col.astype(np.float32) / 255.0)[:, None]
            labels[i][mask] = j + 1
        images[i] = canvas
        for j in range(len(order)):
            regions[i, j] = labels[i] == j + 1
    return SceneBatch(images, shapes, regions, labels, cls_arr, colours, backgrounds, counts, colour_mode)


def classify_shape(mask: np.ndarray, min_pixels: int = 6) -> int:
    """Classify a binary sprite mask by how much of its bounding box it fills.

    Returns the index into :data:`CLASSES` (triangle ≈ 1/2, circle ≈ π/4, square ≈ 1) or
    -1 when the mask has fewer than ``min_pixels`` pixels. Used to check generated shapes.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    area = int(mask.sum())
    if area < min_pixels:
        return -1
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    fill = area / box
    if fill < _FILL_EDGES[0]:
        return CLASSES.index("triangle")
    if fill < _FILL_EDGES[1]:
        return CLASSES.index("circle")
    return CLASSES.index("square")
