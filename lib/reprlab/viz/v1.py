"""Matplotlib figures of chapter 6 (rotation-invariant clustering; ICLR 2020 paper Figs. 3-7, A1-A3).

Pure functions from the arrays/records produced by :mod:`reprlab.v1.align` and
:mod:`reprlab.v1.cluster` to figures; no science here.

* :func:`plot_relaxation` - Fig. 3, distance vs rotation angle, exact and relaxed rotations.
* :func:`plot_synthetic_alignment` - Fig. 4A, raw R, aligned R̃(α*) and R̃(0) of the toy set.
* :func:`plot_noise_distances` - Fig. 4B / B1, mean pairwise distances per group vs noise level.
* :func:`plot_gmm_selection` - Fig. 5, held-out GMM likelihood vs number of clusters.
* :func:`plot_embedding` - Fig. 6 / A1 / A2, t-SNE coloured by cluster with cluster centres.
* :func:`plot_embeddings` - Fig. A3, several embeddings side by side (aligned, controls).
* :func:`plot_confusion` - Fig. 7, a confusion matrix re-ordered into blocks with block lines.
* :func:`plot_readouts` - a grid of readouts (F × O heat maps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "plot_confusion",
    "plot_embedding",
    "plot_embeddings",
    "plot_gmm_selection",
    "plot_noise_distances",
    "plot_readouts",
    "plot_relaxation",
    "plot_synthetic_alignment",
]


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _ax(ax: Any = None, figsize: tuple[float, float] = (4.0, 3.0)):
    if ax is not None:
        return ax.figure, ax
    fig, ax = _plt().subplots(figsize=figsize)
    return fig, ax


def plot_relaxation(curves: Mapping[str, np.ndarray], ax: Any = None):
    """Fig. 3: ``curves`` from :func:`reprlab.v1.align.shift_distance_curve`."""
    fig, ax = _ax(ax, (5, 3))
    ang = np.degrees(curves["angles"])
    for key, val in curves.items():
        if key == "angles":
            continue
        style = dict(color="black", lw=2) if key == "interp" else dict(lw=1.2)
        ax.plot(ang, val, label="linear interp. (eq. 2)" if key == "interp" else f"relaxed {key}", **style)
    ax.set_xlabel("rotation angle (deg)")
    ax.set_ylabel("distance")
    ax.legend(fontsize=7, frameon=False)
    return fig


def _heat(ax: Any, M: np.ndarray, title: str, vlim: float, groups: np.ndarray | None = None) -> None:
    ax.imshow(M, cmap="RdBu_r", vmin=-vlim, vmax=vlim, aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("orientation channel")
    ax.set_yticks([])
    if groups is not None:
        colors = _plt().get_cmap("tab10")
        for i, g in enumerate(groups):
            ax.add_patch(_plt().Rectangle((-0.5 - 0.9, i - 0.5), 0.8, 1, color=colors(int(g) % 10), clip_on=False))


def plot_synthetic_alignment(level: Mapping[str, Any], feature: int = 0):
    """Fig. 4A: raw readouts R, aligned R̃(α*) and R̃(0) for one noise level.

    ``level`` is an entry of ``synthetic_alignment_experiment(...)['levels']``; rows are sorted by
    true group, coloured markers on the left give the group.
    """
    g = np.asarray(level["true_groups"])
    order = np.argsort(g, kind="stable")
    mats = [np.asarray(level[k])[order, feature] for k in ("R", "aligned", "R0")]
    vlim = float(max(np.abs(m).max() for m in mats))
    fig, axes = _plt().subplots(1, 3, figsize=(9, 3.2), sharey=True)
    for ax, M, title in zip(axes, mats, ("R (raw)", "R̃(α*) aligned", "R̃(0)")):
        _heat(ax, M, title, vlim, g[order])
    fig.suptitle(f"noise {level['noise']:g}: T = {level['temperature']:.3g}, β = {level['beta']:.3g}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_noise_distances(result: Mapping[str, Any]):
    """Fig. 4B / B1: per noise level, mean pairwise distance per true group for raw and aligned
    readouts (relaxed eq. 4 and interpolated eq. 2); dashed line: expected distance from the noise
    alone (perfectly aligned data plus noise)."""
    levels = result["levels"]
    fig, axes = _plt().subplots(1, len(levels), figsize=(3.2 * len(levels), 3), squeeze=False)
    for ax, lev in zip(axes[0], levels):
        groups = lev["groups"]
        x = np.arange(len(groups))
        w = 0.27
        for k, (key, color) in enumerate((("raw", "0.6"), ("aligned", "C0"), ("aligned_interp", "C2"))):
            ax.bar(x + (k - 1) * w, [gr[key] for gr in groups], w, color=color, label=key)
        ax.axhline(lev["noise_only_distance"], color="black", ls="--", lw=1, label="noise only")
        ax.set_xticks(x, [f"group {gr['group']}" for gr in groups])
        ax.set_title(f"noise {lev['noise']:g}", fontsize=9)
        ax.set_ylabel("mean pairwise distance")
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def plot_gmm_selection(selection: Any, ax: Any = None):
    """Fig. 5: mean held-out (and training) log-likelihood per neuron vs number of clusters."""
    fig, ax = _ax(ax)
    ks = np.asarray(selection.n_components)
    ax.plot(ks, selection.test_ll, "o-", label="held-out neurons")
    ax.plot(ks, selection.train_ll, "s--", color="0.6", ms=3, label="training neurons")
    ax.axvline(selection.best, color="C3", lw=1, ls=":", label=f"best K = {selection.best}")
    ax.set_xlabel("number of clusters")
    ax.set_ylabel("log-likelihood per neuron")
    ax.legend(fontsize=7, frameon=False)
    return fig


def plot_embedding(embedding: Any, labels: Any = None, centers: bool = True, ax: Any = None,
                   title: str = "", s: float = 3.0):
    """Fig. 6 / A1 / A2: 2-D embedding coloured by cluster label, black stars at cluster centres
    (the mean embedding position of each cluster's members)."""
    fig, ax = _ax(ax, (4.5, 4.5))
    E = np.asarray(embedding)
    if labels is None:
        ax.scatter(E[:, 0], E[:, 1], s=s, color="0.3", lw=0)
    else:
        lab = np.asarray(labels)
        ax.scatter(E[:, 0], E[:, 1], c=lab % 20, cmap="tab20", s=s, lw=0)
        if centers:
            cs = np.stack([E[lab == k].mean(0) for k in np.unique(lab) if k >= 0])
            ax.scatter(cs[:, 0], cs[:, 1], marker="*", color="black", s=30)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return fig


def plot_embeddings(embeddings: Mapping[str, Any], labels: Mapping[str, Any] | None = None):
    """Fig. A3: embeddings side by side, e.g. {'aligned': E, 'permuted within': E1, ...}."""
    n = len(embeddings)
    fig, axes = _plt().subplots(1, n, figsize=(3.4 * n, 3.4), squeeze=False)
    for ax, (name, E) in zip(axes[0], embeddings.items()):
        plot_embedding(E, None if labels is None else labels.get(name), ax=ax, title=name)
    fig.tight_layout()
    return fig


def plot_confusion(M: Any, arrangement: Any = None, ax: Any = None, title: str = "",
                   vmin: float | None = None, vmax: float | None = None, row_groups: Any = None):
    """Fig. 7: a (C, C) matrix re-ordered by ``arrangement`` (:class:`~reprlab.v1.cluster.BlockArrangement`)
    with block boundaries drawn. For the MEI matrix (rows/columns = neurons) pass ``row_groups``
    (block label per neuron) instead: rows and columns are sorted by block."""
    fig, ax = _ax(ax, (4.5, 4.0))
    A = np.asarray(M, dtype=float)
    bounds: Sequence[float] = ()
    if arrangement is not None:
        A = A[np.ix_(arrangement.order, arrangement.order)]
        bounds = arrangement.boundaries
    elif row_groups is not None:
        g = np.asarray(row_groups)
        order = np.argsort(g, kind="stable")
        A = A[np.ix_(order, order)]
        sg = g[order]
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(sg)) + 1, [sg.size]])
    im = ax.imshow(A, cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
    for b in list(bounds)[1:-1]:
        ax.axhline(b - 0.5, color="white", lw=0.8)
        ax.axvline(b - 0.5, color="white", lw=0.8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def plot_readouts(R: Any, n: int = 16, ncols: int = 8, titles: Sequence[str] | None = None):
    """A grid of the first ``n`` readouts (N, F, O) as F × O heat maps (shared colour scale)."""
    X = np.asarray(R)[:n]
    if X.ndim != 3:
        raise ValueError(f"R must be (N, F, O), got shape {np.shape(R)}")
    vlim = float(np.abs(X).max()) or 1.0
    nrows = int(np.ceil(X.shape[0] / ncols))
    fig, axes = _plt().subplots(nrows, ncols, figsize=(1.3 * ncols, 1.3 * nrows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < X.shape[0]:
            ax.imshow(X[i], cmap="RdBu_r", vmin=-vlim, vmax=vlim, aspect="auto", interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return fig
