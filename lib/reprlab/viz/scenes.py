"""Matplotlib figures for chapter 4 (ECON): scenes, decompositions, samples, generation."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _rgb(img) -> np.ndarray:
    """(3, H, W) or (H, W, 3) array -> (H, W, 3) clipped to [0, 1]."""
    a = _np(img)
    if a.ndim == 3 and a.shape[0] == 3:
        a = a.transpose(1, 2, 0)
    return np.clip(a, 0, 1)


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def show_scenes(images, ncols: int = 8, titles: Sequence[str] | None = None, scale: float = 1.3):
    """Grid of RGB images (N, 3, H, W)."""
    imgs = _np(images)
    if imgs.ndim != 4:
        raise ValueError(f"expected (N, 3, H, W) images, got shape {imgs.shape}")
    n = len(imgs)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        _off(ax)
        if i < n:
            ax.imshow(_rgb(imgs[i]), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
        else:
            ax.axis("off")
    fig.tight_layout()
    return fig


def plot_decomposition(image, decomposition, index: int = 0, expert_names: dict[int, str] | None = None, scale: float = 1.4):
    """Fig. 4: one row per inference step (front to back) with the scope s_t, the attention
    region r̃_t, the reconstruction inside the region r̃_t ⊙ μ_t, the full (inpainted) object
    μ_t and its full generated shape m̃_t; the first row shows the image and reconstruction."""
    d = decomposition
    steps = d.regions.shape[1]
    cols = ["scope s_t", "region r_t", "r_t * x_t", "object x_t", "shape m_t"]
    fig, axes = plt.subplots(steps + 1, len(cols), figsize=(scale * len(cols), scale * (steps + 1)), squeeze=False)
    for ax in axes.flat:
        _off(ax)
    axes[0, 0].imshow(_rgb(_np(image)[index]), interpolation="nearest")
    axes[0, 0].set_title("input", fontsize=8)
    axes[0, 1].imshow(_rgb(d.reconstruction[index]), interpolation="nearest")
    axes[0, 1].set_title("reconstruction", fontsize=8)
    for ax in axes[0, 2:]:
        ax.axis("off")
    for t in range(steps):
        k = int(d.winners[index, t])
        name = expert_names.get(k, "") if expert_names else ""
        row = axes[t + 1]
        row[0].imshow(_np(d.scopes[index, t]), cmap="gray", vmin=0, vmax=1)
        row[1].imshow(_np(d.regions[index, t]), cmap="gray", vmin=0, vmax=1)
        row[2].imshow(_rgb(_np(d.regions[index, t])[None] * _np(d.appearances[index, t])), interpolation="nearest")
        row[3].imshow(_rgb(d.appearances[index, t]), interpolation="nearest")
        row[4].imshow(_np(d.shapes[index, t]), cmap="gray", vmin=0, vmax=1)
        row[0].set_ylabel(f"t'={t + 1}\nexpert {k}" + (f"\n({name})" if name else ""), fontsize=8)
        if t == 0:
            for ax, title in zip(row, cols):
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_expert_samples(rgb, shapes, expert_names: dict[int, str] | None = None, scale: float = 1.1):
    """Figs. 1B, 6: rows = experts, columns = samples; objects shown as m̃ ⊙ μ on grey."""
    rgb_a, shp = _np(rgb), _np(shapes)  # (n, K, 3, H, W), (n, K, H, W)
    n, k = shp.shape[:2]
    fig, axes = plt.subplots(k, n, figsize=(scale * n, scale * k), squeeze=False)
    for e in range(k):
        for i in range(n):
            ax = axes[e, i]
            _off(ax)
            m = shp[i, e][None]
            ax.imshow(_rgb(m * rgb_a[i, e] + (1 - m) * 0.5), interpolation="nearest")
        label = f"expert {e}" + (f"\n{expert_names[e]}" if expert_names and e in expert_names else "")
        axes[e, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig


def plot_layered_generation(out: dict, labels: Sequence[str] | None = None, max_rows: int = 6, scale: float = 1.3):
    """Figs. 1C, 7: the canvas after each generation step (background, then object layers)."""
    layers, shapes = _np(out["layers"]), _np(out["shapes"])
    n, t = shapes.shape[:2]
    rows = min(n, max_rows)
    fig, axes = plt.subplots(rows, t, figsize=(scale * t, scale * rows), squeeze=False)
    for i in range(rows):
        canvas = np.zeros_like(layers[i, 0])
        for j in range(t):
            m = shapes[i, j][None]
            canvas = m * layers[i, j] + (1 - m) * canvas
            ax = axes[i, j]
            _off(ax)
            ax.imshow(_rgb(canvas), interpolation="nearest")
            if i == 0:
                ax.set_title(labels[j] if labels is not None else f"layer {j}", fontsize=8)
    fig.tight_layout()
    return fig


def plot_specialisation(spec: dict, title: str = "", ax=None, column_label: str = "e"):
    """Class × expert table of :func:`reprlab.scenes.metrics.specialisation` as a heat map.

    Also draws the class × step table of :func:`reprlab.scenes.metrics.depth_order`
    (``column_label="t'="``: columns are inference steps, front first).
    """
    table = np.asarray(spec["table"], float)
    rows = spec["rows"]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.7 * table.shape[1], 0.5 + 0.5 * table.shape[0]))
    frac = table / np.maximum(table.sum(1, keepdims=True), 1)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for (r, c), v in np.ndenumerate(table):
        ax.text(c, r, int(v), ha="center", va="center", fontsize=8, color="black" if frac[r, c] < 0.6 else "white")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    ax.set_xticks(range(table.shape[1]))
    first = 1 if column_label.startswith("t") else 0
    ax.set_xticklabels([f"{column_label}{k + first}" for k in range(table.shape[1])], fontsize=8)
    ax.set_title(title, fontsize=9)
    return ax
