"""Plots of a twin bundle (:class:`reprlab.v1.twin.Twin`) shared by the chapter-7 notebook and the
twin explorer app: MEI grids, tuning curves (cluster mean ± spread with one neuron on top), index
histograms with a cluster marked, the combinatorial-code table, the t-SNE map coloured by an index,
and the verification curves (Figs. 1-5 of the digital-twin paper).

Matplotlib functions take an optional ``ax`` / return the figure; HoloViews versions (``hv_*``)
return HoloViews elements for Panel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "combination_table_figure",
    "embedding_figure",
    "hv_embedding",
    "hv_index_histogram",
    "hv_tuning_curve",
    "index_histogram",
    "mei_grid",
    "tuning_curve",
    "tuning_matrix",
    "verification_figure",
]

INDEX_LABELS = {
    "orientation": "orientation tuning (F2/F0)",
    "phase": "phase tuning (F1/F0)",
    "suppression": "suppression index",
    "contrast": "contrast index",
    "plaid": "cross-orientation inhibition",
    "gabor_vs_dog": "Gabor vs DoG",
    "gabor_vs_mei": "Gabor vs MEI",
    "dog_vs_mei": "DoG vs MEI",
    "nonlinearity": "non-linearity (CNN/GLM)",
    "f2_f0_phase": "F2/F0 of phase tuning",
}


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _axes(ax: Any = None, figsize: tuple[float, float] = (4, 3)):
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    return fig, ax


def _crop(img: np.ndarray, center: Any = None, size: int | None = None) -> np.ndarray:
    if center is None or size is None:
        return img
    H, W = img.shape
    cx, cy = int(round(float(center[0]))), int(round(float(center[1])))
    h = size // 2
    pad = np.pad(img, h)
    return pad[cy:cy + 2 * h + 1, cx:cx + 2 * h + 1]


def mei_grid(images: Any, titles: list[str] | None = None, ncols: int = 8, centers: Any = None,
             crop: int | None = None, scale: float | None = None, cmap: str = "gray"):
    """A grid of MEIs (or any images) on a common symmetric grey scale (0 = mean grey).

    ``centers (n, 2)`` and ``crop`` (pixels) cut a window around each RF centre."""
    plt = _plt()
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim != 3 or len(imgs) == 0:
        raise ValueError(f"images must be (n, H, W) with n >= 1, got {imgs.shape}")
    if centers is not None:
        imgs = np.stack([_crop(im, c, crop) for im, c in zip(imgs, np.asarray(centers))])
    n = len(imgs)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    v = scale if scale is not None else float(np.abs(imgs).max()) or 1.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.3 * nrows * imgs.shape[1] / imgs.shape[2] + 0.3),
                             squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(imgs[i], cmap=cmap, vmin=-v, vmax=v)
            if titles is not None and i < len(titles):
                ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return fig


def tuning_curve(x: Any, curves: Any, neuron: int | None = None, ax: Any = None, label: str = "",
                 xlabel: str = "", spread: str = "std", color: str = "C0"):
    """Mean ± spread of ``curves (n, S)`` (e.g. all neurons of a cluster) with one neuron on top.

    Each curve is normalised by its maximum so that shapes are comparable."""
    fig, ax = _axes(ax)
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"curves must be (n, S), got {c.shape}")
    xs = np.asarray(x, dtype=np.float64)
    cn = c / np.maximum(np.abs(c).max(1, keepdims=True), 1e-12)
    m = cn.mean(0)
    s = cn.std(0) if spread == "std" else np.subtract(*np.percentile(cn, [75, 25], axis=0)) / 2
    ax.fill_between(xs, m - s, m + s, color=color, alpha=0.25, lw=0)
    ax.plot(xs, m, color=color, lw=2, label=label or "mean")
    if neuron is not None:
        ax.plot(xs, cn[neuron], color="k", lw=1, ls="--", label="neuron")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("response / max")
    return fig


def tuning_matrix(curve: Any, row_values: Any, col_values: Any, ax: Any = None, row_label: str = "",
                  col_label: str = ""):
    """One neuron's 2-D tuning (size x contrast or plaid contrasts) as lines, one per row value."""
    fig, ax = _axes(ax)
    c = np.asarray(curve, dtype=np.float64)
    cmap = _plt().get_cmap("viridis")
    rv = np.asarray(row_values)
    for i, r in enumerate(rv):
        ax.plot(col_values, c[i], color=cmap(i / max(len(rv) - 1, 1)), label=f"{row_label} {r:g}")
    ax.set_xlabel(col_label)
    ax.set_ylabel("rate")
    ax.legend(fontsize=6)
    return fig


def index_histogram(values: Any, name: str = "", cluster_values: Any = None, ax: Any = None, bins: int = 30):
    """Histogram of an index over the population with one cluster's neurons overlaid."""
    fig, ax = _axes(ax)
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        raise ValueError("values has no finite entries")
    edges = np.histogram_bin_edges(v, bins=bins)
    ax.hist(v, bins=edges, color="0.7", density=True, label="population")
    if cluster_values is not None:
        cv = np.asarray(cluster_values, dtype=np.float64)
        cv = cv[np.isfinite(cv)]
        ax.hist(cv, bins=edges, color="C3", alpha=0.6, density=True, label="cluster")
        ax.axvline(np.mean(cv), color="C3", lw=2)
    ax.axvline(np.mean(v), color="k", lw=1, ls="--")
    ax.set_xlabel(INDEX_LABELS.get(name, name))
    ax.legend(fontsize=7)
    return fig


def embedding_figure(embedding: Any, values: Any, name: str = "", highlight: Any = None, ax: Any = None,
                     cmap: str = "viridis", clip: tuple[float, float] = (2, 98)):
    """t-SNE map coloured by an index (Fig. 3), optional highlighted subset (boolean mask)."""
    fig, ax = _axes(ax, (4.5, 4))
    e = np.asarray(embedding)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    lo, hi = np.percentile(v[ok], clip) if ok.any() else (0, 1)
    sc = ax.scatter(e[ok, 0], e[ok, 1], c=np.clip(v[ok], lo, hi), s=3, cmap=cmap, lw=0)
    if highlight is not None:
        h = np.asarray(highlight, dtype=bool)
        ax.scatter(e[h, 0], e[h, 1], s=6, facecolors="none", edgecolors="r", lw=0.5)
    fig.colorbar(sc, ax=ax, label=INDEX_LABELS.get(name, name))
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def combination_table_figure(table: list[dict], truth_codes: list[int] | None = None, ax: Any = None):
    """The 8 combinations of (phase invariance, surround suppression, COI) as a bar chart of
    cluster counts (Fig. 4C); combinations present in the truth are marked."""
    fig, ax = _axes(ax, (6, 3))
    names = [r["name"] for r in table]
    counts = [r["n_clusters"] for r in table]
    colors = ["C2" if truth_codes is not None and r["code"] in truth_codes else "C0" for r in table]
    ax.barh(range(len(names)), counts, color=colors)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("Gabor-like clusters")
    if truth_codes is not None:
        ax.set_title("green: combination present in the ground truth", fontsize=8)
    fig.tight_layout()
    return fig


def verification_figure(report: dict, ax: Any = None):
    """Fig. 5B/D: coverage of the greedy Gabor set and twin-vs-truth correlation (% of oracle)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3)) if ax is None else (ax[0].figure, ax)
    cov = report.get("coverage_curves", {})
    fr = np.asarray(cov.get("fractions", []))
    for k, v in cov.items():
        if k != "fractions":
            axes[0].plot(np.asarray(v) * 100, fr * 100, label=f"{k} Gabors")
    axes[0].set_xlabel("% of neurons")
    axes[0].set_ylabel("% of optimal Gabor activity")
    axes[0].legend(fontsize=7)
    mm = report.get("mouse_model_all_stimuli", {})
    keys = list(mm)
    axes[1].bar(range(len(keys)), [100 * (mm[k]["fraction"] or 0) for k in keys], color="C0", label="twin - truth")
    axes[1].axhline(70, color="k", ls="--", lw=1, label="thesis (real mice)")
    axes[1].set_xticks(range(len(keys)))
    axes[1].set_xticklabels(keys, fontsize=7, rotation=20)
    axes[1].set_ylabel("% of oracle correlation")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- HoloViews
def hv_embedding(embedding: Any, values: Any, name: str = "", cluster: Any = None):
    """HoloViews scatter of the t-SNE map coloured by an index (tap-friendly)."""
    import holoviews as hv

    e = np.asarray(embedding)
    data = {"x": e[:, 0], "y": e[:, 1], name or "value": np.asarray(values, dtype=np.float64),
            "neuron": np.arange(len(e))}
    if cluster is not None:
        data["cluster"] = np.asarray(cluster)
    vdims = [k for k in data if k not in ("x", "y")]
    return hv.Points(data, kdims=["x", "y"], vdims=vdims).opts(color=name or "value", cmap="viridis", size=3,
                                                                colorbar=True, tools=["hover", "tap"])


def hv_index_histogram(values: Any, name: str = "", cluster_values: Any = None, bins: int = 30):
    import holoviews as hv

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    edges = np.histogram_bin_edges(v, bins=bins)
    h = hv.Histogram(np.histogram(v, edges, density=True), kdims=[INDEX_LABELS.get(name, name)]).opts(
        color="lightgray", alpha=0.8)
    if cluster_values is not None:
        cv = np.asarray(cluster_values, dtype=np.float64)
        cv = cv[np.isfinite(cv)]
        h = h * hv.Histogram(np.histogram(cv, edges, density=True)).opts(color="crimson", alpha=0.5)
    return h


def hv_tuning_curve(x: Any, curves: Any, neuron: int | None = None, xlabel: str = "x"):
    import holoviews as hv

    c = np.asarray(curves, dtype=np.float64)
    cn = c / np.maximum(np.abs(c).max(1, keepdims=True), 1e-12)
    m, s = cn.mean(0), cn.std(0)
    xs = np.asarray(x, dtype=np.float64)
    el = hv.Spread((xs, m, s), kdims=[xlabel], vdims=["response", "spread"]).opts(alpha=0.3) * \
        hv.Curve((xs, m), kdims=[xlabel], vdims=["response"])
    if neuron is not None:
        el = el * hv.Curve((xs, cn[neuron]), kdims=[xlabel], vdims=["response"]).opts(color="black", line_dash="dashed")
    return el
