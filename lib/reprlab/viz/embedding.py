"""Interactive HoloViews (bokeh) builders for the twin explorer (digital-twin paper, Figs. 2-4).

Pure functions from arrays to HoloViews elements; they hold no state and no science. The
explorer (:mod:`reprlab.apps.twin_explorer`) wraps them in ``hv.DynamicMap`` s fed by
``hv.streams.Pipe`` s so a click only re-sends small arrays.

* :func:`embedding_points` - the t-SNE embedding, every neuron a point (WebGL, fine for > 13k),
  coloured by a categorical or continuous property with a colour bar and a hover tool showing
  neuron id, cluster, animal, test correlation and the colouring property.
* :func:`selection_rings`, :func:`focus_marker` - overlays marking the selected set / neuron.
* :func:`stimulus_image`, :func:`mei_mosaic` - stimuli in the stimulus space of
  :mod:`reprlab.v1.stimuli` (0 = grey, +-0.5 = white/black), fixed grey colour range.
* :func:`tuning_plot` - tuning curves as mean +- spread bands with one neuron's curve on top.
* :func:`index_histogram` - an index's distribution in a selection against the population.

(The static matplotlib figures of chapter 7 - MEI grids, tuning curves, index histograms, the
combinatorial table - live in ``reprlab.viz.v1_twin``; these are their interactive cousins.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import holoviews as hv
import numpy as np

__all__ = [
    "GREY_RANGE",
    "embedding_overlay",
    "embedding_points",
    "focus_marker",
    "index_histogram",
    "mei_mosaic",
    "selection_rings",
    "stimulus_image",
    "tuning_plot",
]

GREY_RANGE: tuple[float, float] = (-0.5, 0.5)
"""Colour range of stimulus images: the displayable luminance deviation from mean grey."""
EMBED_VDIMS = ("id", "cluster", "animal", "test_corr", "value")
_BOKEH = "bokeh"


def _natural(s: str) -> tuple:
    """Sort key putting '2' before '10' (numbers inside labels compared as numbers)."""
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s)))


def embedding_overlay(base: Any, *layers: Any, n_categories: int = 0) -> Any:
    """``base * layers`` with the categorical legend (if any) outside the frame, in columns of
    at most 24 entries."""
    over = base
    for layer in layers:
        over = over * layer
    return over.opts(
        backend=_BOKEH, legend_position="right", legend_cols=24 if n_categories > 24 else 0,
        legend_opts={"label_height": 11, "glyph_height": 11, "spacing": 0, "label_text_font_size": "8pt",
                     "padding": 4, "margin": 2},
    )


def _as_1d(name: str, arr: Any, n: int | None = None) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 1 or (n is not None and len(a) != n):
        raise ValueError(f"{name} must be a 1-D array of length {n}, got shape {a.shape}")
    return a


def embedding_points(
    xy: np.ndarray,
    columns: dict[str, np.ndarray],
    label: str,
    categorical: bool,
    clim: tuple[float, float] | None = None,
    cmap: Any = None,
    size: float = 3.0,
    width: int = 560,
    height: int = 440,
) -> hv.Points:
    """The embedding scatter: ``xy (N, 2)``; ``columns`` holds ``id, cluster, animal, test_corr``
    and ``value`` (the colouring property: strings if ``categorical`` else floats, NaN = grey).

    ``label`` names the property in the hover tool and on the colour bar."""
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"xy must be (N, 2) embedding coordinates, got shape {xy.shape}")
    n = len(xy)
    missing = [c for c in EMBED_VDIMS if c not in columns]
    if missing:
        raise ValueError(f"columns must include {EMBED_VDIMS}; missing {missing}")
    data = {"x": xy[:, 0], "y": xy[:, 1]}
    for c in EMBED_VDIMS:
        a = _as_1d(c, columns[c], n)
        # numpy unicode (not object) columns: HoloViews then skips re-scanning them on every refresh
        data[c] = a.astype(str) if a.dtype == object else a
    vdims: list[Any] = list(EMBED_VDIMS)
    if categorical:  # declared categories: legend in natural order, no re-scan on refresh
        vdims[-1] = hv.Dimension("value", label=label, values=sorted(set(data["value"].tolist()), key=_natural))
    pts = hv.Points(data, kdims=["x", "y"], vdims=vdims)
    value_fmt = "@value" if categorical else "@value{0.000}"
    tips = [("neuron", "@id"), ("cluster", "@cluster"), ("animal", "@animal"), ("test corr", "@test_corr{0.000}")]
    if label not in ("cluster", "animal", "test correlation"):
        tips.append((label, value_fmt))
    opts: dict[str, Any] = dict(
        color="value", size=size, line_width=0, alpha=0.85, colorbar=True,
        colorbar_opts={"title": label}, width=width, height=height,
        xlabel="t-SNE 1", ylabel="t-SNE 2", title=f"Functional embedding ({n:,} neurons) · colour: {label}",
        tools=["box_select", "lasso_select"], active_tools=["wheel_zoom", "pan"],
        hover_tooltips=tips,
        selection_alpha=0.85, nonselection_alpha=0.85, show_grid=False,
        fontscale=1.0, clipping_colors={"NaN": "#d0d0d0"},
    )
    if categorical:
        opts["cmap"] = cmap if cmap is not None else "glasbey"
    else:
        opts["cmap"] = cmap if cmap is not None else "viridis"
        if clim is not None:
            opts["clim"] = tuple(float(c) for c in clim)
    return pts.opts(backend=_BOKEH, **opts)


def selection_rings(xy: np.ndarray, size: float = 7.0, color: str = "black") -> hv.Points:
    """Unfilled rings around the selected neurons (``xy (M, 2)``, M may be 0)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return hv.Points((xy[:, 0], xy[:, 1]), kdims=["x", "y"]).opts(
        backend=_BOKEH, marker="circle", size=size, fill_alpha=0.0, line_color=color, line_width=1.0,
        line_alpha=0.8, tools=[], nonselection_alpha=1.0, selection_alpha=1.0, apply_ranges=False,
    )


def focus_marker(xy: np.ndarray, size: float = 22.0, color: str = "#d62728") -> hv.Points:
    """A large cross-hair on the focused / clicked neuron (``xy (M, 2)``, M is 0 or 1)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return hv.Points((xy[:, 0], xy[:, 1]), kdims=["x", "y"]).opts(
        backend=_BOKEH, marker="circle_cross", size=size, fill_alpha=0.0, line_color=color, line_width=2.5,
        tools=[], nonselection_alpha=1.0, selection_alpha=1.0, apply_ranges=False,
    )


def _image_bounds(h: int, w: int) -> tuple[float, float, float, float]:
    return (-0.5, -0.5, w - 0.5, h - 0.5)


def stimulus_image(
    image: np.ndarray,
    title: str,
    colorbar: bool = False,
    frame_width: int = 150,
    clim: tuple[float, float] = GREY_RANGE,
) -> hv.Image:
    """One stimulus ``(H, W)`` in pixel coordinates (x right, y down as in ``reprlab.v1.stimuli``),
    grey colour map over ``clim`` (default the displayable range), labelled axes."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"image must be (H, W), got shape {img.shape}")
    h, w = img.shape
    # hv.Image puts row 0 at the top of its bounds; with an inverted y axis flip it back.
    el = hv.Image(np.flipud(img), bounds=_image_bounds(h, w), kdims=["x", "y"], vdims=["luminance"])
    frame_h = max(20, int(round(frame_width * h / w)))
    return el.opts(
        backend=_BOKEH, cmap="gray", clim=tuple(clim), colorbar=colorbar, invert_yaxis=True, title=title,
        frame_width=frame_width, frame_height=frame_h, xlabel="x (px)", ylabel="y (px)", toolbar=None,
        fontsize={"title": 10, "labels": 9, "ticks": 8}, clipping_colors={"NaN": "white"},
        yticks=[t for t in range(0, h, 10 if h <= 60 else 20)],
    )


def mei_mosaic(
    images: np.ndarray,
    captions: Sequence[str],
    ncols: int = 8,
    title: str = "",
    width: int = 690,
    clim: tuple[float, float] = GREY_RANGE,
    tiles: int | None = None,
) -> hv.Overlay:
    """Up to ``tiles`` images ``(M, H, W)`` tiled ``ncols`` per row, each with a caption strip.

    Missing tiles (M < tiles) stay white. One shared grey colour range and colour bar."""
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim != 3:
        raise ValueError(f"images must be (M, H, W), got shape {imgs.shape}")
    m, h, w = imgs.shape
    if len(captions) != m:
        raise ValueError(f"need one caption per image: {m} images, {len(captions)} captions")
    n_tiles = int(tiles if tiles is not None else max(m, 1))
    nrows = max(1, -(-n_tiles // ncols))
    gap, cap = 2, max(7, h // 4)
    tile_h, tile_w = h + cap + gap, w + gap
    canvas = np.full((nrows * tile_h, ncols * tile_w), np.nan, np.float32)
    xs, ys, texts = [], [], []
    total_h = nrows * tile_h
    for i in range(min(m, n_tiles)):
        r, c = divmod(i, ncols)
        y0, x0 = r * tile_h + cap, c * tile_w
        canvas[y0:y0 + h, x0:x0 + w] = imgs[i]
        xs.append(x0 + 1)
        ys.append(total_h - (r * tile_h + cap / 2))
        texts.append(captions[i])
    H, W = canvas.shape
    img = hv.Image(np.flipud(canvas), bounds=(0, 0, W, H), kdims=["mx", "my"], vdims=["luminance"]).opts(
        backend=_BOKEH, cmap="gray", clim=tuple(clim), colorbar=True,
        xaxis=None, yaxis=None, toolbar=None, clipping_colors={"NaN": "white"},
    )
    labels = hv.Labels((np.asarray(xs, float), np.asarray(ys, float), list(texts)), kdims=["mx", "my"],
                       vdims=["caption"]).opts(backend=_BOKEH, text_font_size="8pt", text_align="left",
                                               text_baseline="middle", text_color="#202020")
    height = int(round(width * H / W)) + (40 if title else 12)
    return (img * labels).opts(backend=_BOKEH, title=title, width=width + 70, height=height,
                               fontsize={"title": 10}, toolbar=None)


def tuning_plot(
    x: np.ndarray,
    bands: Sequence[dict[str, Any]],
    neuron: Sequence[dict[str, Any]] = (),
    title: str = "",
    xlabel: str = "",
    ylabel: str = "response / max",
    width: int = 375,
    height: int = 235,
) -> hv.Overlay:
    """Mean +- spread bands (each ``{"mean", "spread", "label", "color"}``) and one neuron's
    curves on top (each ``{"y", "label", "color"}``, ``y`` may be all-NaN = not shown)."""
    xv = np.asarray(x, dtype=np.float64)
    layers: list[Any] = []
    for b in bands:
        mu = np.asarray(b["mean"], dtype=np.float64)
        sp = np.asarray(b["spread"], dtype=np.float64)
        if mu.shape != xv.shape or sp.shape != xv.shape:
            raise ValueError(f"band {b.get('label')!r}: mean/spread must have shape {xv.shape}")
        layers.append(hv.Spread((xv, mu, sp), kdims=["x"], vdims=["y", "spread"]).opts(
            backend=_BOKEH, color=b["color"], alpha=0.25, line_width=0))
        layers.append(hv.Curve((xv, mu), kdims=["x"], vdims=["y"], label=b["label"]).opts(
            backend=_BOKEH, color=b["color"], line_width=2))
    for c in neuron:
        yv = np.asarray(c["y"], dtype=np.float64)
        layers.append(hv.Curve((xv, yv), kdims=["x"], vdims=["y"], label=c["label"]).opts(
            backend=_BOKEH, color=c["color"], line_width=2, line_dash="dashed"))
        layers.append(hv.Scatter((xv, yv), kdims=["x"], vdims=["y"]).opts(
            backend=_BOKEH, color=c["color"], size=5))
    return hv.Overlay(layers).opts(
        backend=_BOKEH, title=title, xlabel=xlabel, ylabel=ylabel, width=width, height=height,
        legend_position="bottom", toolbar=None, show_grid=True, fontsize={"title": 10, "legend": 8, "labels": 9},
        framewise=True, legend_opts={"label_height": 9, "glyph_height": 9, "glyph_width": 16, "spacing": 4,
                                     "padding": 2, "margin": 0, "label_text_font_size": "8pt"},
    )


def index_histogram(
    edges: np.ndarray,
    population: np.ndarray,
    selection: np.ndarray,
    value: float | None = None,
    name: str = "",
    color: str = "#1f77b4",
    significant: bool | None = None,
    width: int = 185,
    height: int = 150,
) -> hv.Overlay:
    """Densities of one index over ``edges`` for the population (grey) and the selection
    (``color``); ``value`` draws a vertical line (the focused neuron), NaN/None = none.
    ``significant`` (KS at the app's alpha) is appended to the title as ``*``."""
    e = np.asarray(edges, dtype=np.float64)
    pop = np.asarray(population, dtype=np.float64)
    sel = np.asarray(selection, dtype=np.float64)
    if pop.shape != (len(e) - 1,) or sel.shape != pop.shape:
        raise ValueError(f"densities must have len(edges) - 1 = {len(e) - 1} bins, got {pop.shape}, {sel.shape}")
    v = np.nan if value is None else float(value)
    top = float(np.nanmax(np.concatenate([pop, sel, [1e-12]])))
    line = hv.Curve(([v, v], [0.0, top * 1.05]) if np.isfinite(v) else ([], []), kdims=["value"],
                    vdims=["density"]).opts(backend=_BOKEH, color="black", line_width=2)
    star = {True: " *", False: "", None: ""}[significant]
    return (
        hv.Histogram((e, pop), kdims=["value"], vdims=["density"]).opts(
            backend=_BOKEH, fill_color="#b8b8b8", line_color="#909090", fill_alpha=0.8)
        * hv.Histogram((e, sel), kdims=["value"], vdims=["density"]).opts(
            backend=_BOKEH, fill_color=color, line_color=color, fill_alpha=0.45)
        * line
    ).opts(backend=_BOKEH, title=f"{name}{star}", xlabel=name, ylabel="density", width=width, height=height,
           toolbar=None, fontsize={"title": 10, "labels": 9, "ticks": 8}, framewise=True, show_legend=False,
           xticks=4, yticks=4)
