"""Matplotlib figures for chapter 3 (textures): image grids, loss curves, similarity matrices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch


def to_numpy_image(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor in [0, 1] -> (H, W) or (H, W, 3) numpy array for imshow."""
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected an image (1|3, H, W), got {tuple(img.shape)}")
    arr = img.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
    return arr[..., 0] if arr.shape[2] == 1 else arr


def show_image(ax, img: torch.Tensor, title: str | None = None) -> None:
    """Draw one texture on ``ax`` without ticks (grayscale with a gray colormap)."""
    arr = to_numpy_image(img)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def image_grid(rows: Sequence[Sequence[torch.Tensor]], titles: Sequence[Sequence[str]] | None = None,
               row_labels: Sequence[str] | None = None, size: float = 1.6):
    """A figure with one row of images per entry of ``rows`` (in the spirit of Figs. 1-4)."""
    import matplotlib.pyplot as plt

    if not rows or not any(rows):
        raise ValueError("image_grid needs at least one image")
    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(size * nc, size * nr + 0.3), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            if j < len(row):
                show_image(ax, row[j], titles[i][j] if titles and j < len(titles[i]) else None)
            else:
                ax.axis("off")
        if row_labels:
            axes[i][0].set_ylabel(row_labels[i], fontsize=8)
    fig.tight_layout()
    return fig


def loss_curves(curves: Mapping[str, Sequence[float]], ax=None, title: str = "synthesis loss (eq. 5)"):
    """Log-scale loss curves per labelled run."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    for label, ys in curves.items():
        if len(ys):
            ax.semilogy(np.arange(1, len(ys) + 1), ys, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return ax


def similarity_figure(result: dict, size: float = 3.0):
    """Appendix Fig. 6: one matrix per measure (SSIM linear, feature distances log10)."""
    import matplotlib.pyplot as plt

    mats = result["matrices"]
    names = result["names"]
    fig, axes = plt.subplots(1, len(mats), figsize=(size * len(mats), size), squeeze=False)
    for ax, (mname, mat) in zip(axes[0], mats.items()):
        show = mat if mname == "ssim" else np.log10(np.maximum(mat, 1e-12))
        im = ax.imshow(show, cmap="viridis")
        acc = result.get("accuracy", {}).get(mname)
        ax.set_title(f"{mname}{' (log10)' if mname != 'ssim' else ''}" + (f"\nNN acc {acc:.2f}" if acc is not None else ""),
                     fontsize=8)
        ax.set_xticks(range(len(names)))
        ax.set_yticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=6)
        ax.set_yticklabels(names, fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def filter_grid(banks: Mapping[str, object], n: int = 8, size: float = 0.7, seed: int = 0):
    """Show ``n`` filters of each bank (rows), each scaled to [0, 1] on its own (colour when RGB).

    For multi-scale banks the filters are taken from the scales in turn (largest last).
    """
    import matplotlib.pyplot as plt

    if not banks:
        raise ValueError("filter_grid needs at least one bank")
    gen = torch.Generator().manual_seed(seed)
    fig, axes = plt.subplots(len(banks), n, figsize=(size * n, size * len(banks) + 0.2), squeeze=False)
    for r, (name, bank) in enumerate(banks.items()):
        weights = bank.weights
        for j in range(n):
            w = weights[j % len(weights)] if len(weights) > 1 else weights[0]
            k = int(torch.randint(0, w.shape[0], (1,), generator=gen))
            f = w[k].detach().float()
            f = (f - f.min()) / (f.max() - f.min() + 1e-12)
            show_image(axes[r][j], f)
        axes[r][0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig
