"""Interactive plots for the twin explorer (digital-twin paper, Figs. 2-4): no state, no science.

* HoloViews (bokeh) builders for the embedding, which needs HoloViews' selection streams:
  :func:`embedding_points` - every neuron a point (WebGL, fine for > 13k), coloured by a
  categorical (legend) or continuous (colour bar) property, hover showing neuron id, cluster,
  animal, test correlation and the colouring property; :class:`EmbeddingMarks` - selection rings
  and focus cross-hair as plain Bokeh overlay-level renderers on that figure; :func:`embedding_overlay`.
* Detail figures that change on every click, built once as plain Bokeh figures and updated in
  place (new ``ColumnDataSource.data``), so a click costs milliseconds per figure:
  :class:`StimulusFigure` / :class:`MosaicFigure` (stimuli in the stimulus space of
  :mod:`reprlab.v1.stimuli`: 0 = grey, +-0.5 = white/black, one fixed grey range),
  :class:`TuningFigure` (mean +- spread bands with one neuron's curve on top) and
  :class:`HistogramFigure` (an index in a selection against the population).

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
    "HistogramFigure",
    "MosaicFigure",
    "StimulusFigure",
    "TuningFigure",
    "EmbeddingMarks",
    "embedding_overlay",
    "embedding_points",
]

GREY_RANGE: tuple[float, float] = (-0.5, 0.5)
"""Colour range of stimulus images: the displayable luminance deviation from mean grey."""
EMBED_VDIMS = ("id", "cluster", "animal", "test_corr", "value")
_BOKEH = "bokeh"


def _natural(s: str) -> tuple:
    """Sort key putting '2' before '10' (numbers inside labels compared as numbers)."""
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s)))


def embedding_overlay(base: Any, *layers: Any) -> Any:
    """``base * layers`` with the categorical legend (if any) outside the frame, on the right."""
    over = base
    for layer in layers:
        over = over * layer
    return over.opts(
        backend=_BOKEH, legend_position="right",
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
    value_format: str = "{0.000}",
    size: float = 3.0,
    width: int = 560,
    height: int = 440,
) -> hv.Points:
    """The embedding scatter: ``xy (N, 2)``; ``columns`` holds ``id, cluster, animal, test_corr``
    and ``value`` (the colouring property: strings if ``categorical`` else floats, NaN = grey).

    ``label`` names the property in the hover tool and on the colour bar / legend;
    ``value_format`` is the hover's number format for continuous values."""
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
    else:  # the colour bar's title
        vdims[-1] = hv.Dimension("value", label=label)
    pts = hv.Points(data, kdims=["x", "y"], vdims=vdims)
    value_fmt = "@value" if categorical else f"@value{value_format}"
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


class EmbeddingMarks:
    """Selection rings and the focus cross-hair on the embedding, as plain Bokeh renderers at the
    ``overlay`` level of the embedding figure (added by :meth:`hook`, a HoloViews plot hook).

    :meth:`update` replaces two small ``ColumnDataSource.data``: no HoloViews re-render on the
    server, and BokehJS repaints only the canvas's overlay layer, not the N points (which it
    would for any change of a glyph-level renderer: ~0.5 s for 13,000 points in software
    rendering). The hook also drops the scatter's hover glyph, whose highlight repainted the N
    points on every hovered neuron (the tooltip stays)."""

    def __init__(self, ring_size: float = 7.0, ring_color: str = "black", marker_size: float = 22.0,
                 marker_color: str = "#d62728") -> None:
        from bokeh.models import ColumnDataSource

        self.rings = ColumnDataSource({"x": np.zeros(0), "y": np.zeros(0)})
        self.marker = ColumnDataSource({"x": np.zeros(0), "y": np.zeros(0)})
        self._style = {"rings": dict(marker="circle", size=ring_size, fill_alpha=0.0, line_color=ring_color,
                                     line_width=1.0, line_alpha=0.8),
                       "marker": dict(marker="circle_cross", size=marker_size, fill_alpha=0.0,
                                      line_color=marker_color, line_width=2.5)}

    def hook(self, plot: Any, element: Any) -> None:
        """HoloViews ``hooks=[marks.hook]``: add the two renderers to ``plot.state`` (once per figure)."""
        fig = plot.state
        renderer = plot.handles.get("glyph_renderer")
        if renderer is not None:
            renderer.hover_glyph = None
        if any(getattr(r, "data_source", None) is self.rings for r in fig.renderers):
            return
        for name, source in (("rings", self.rings), ("marker", self.marker)):
            fig.scatter(x="x", y="y", source=source, level="overlay", **self._style[name])

    @staticmethod
    def _xy(xy: Any) -> dict[str, np.ndarray]:
        a = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return {"x": a[:, 0].copy(), "y": a[:, 1].copy()}

    def update(self, rings_xy: Any, marker_xy: Any) -> None:
        """Rings around ``rings_xy (M, 2)`` and the cross-hair on ``marker_xy (0 or 1, 2)``."""
        self.rings.data = self._xy(rings_xy)
        self.marker.data = self._xy(marker_xy)

    @property
    def rings_xy(self) -> np.ndarray:
        return np.column_stack([self.rings.data["x"], self.rings.data["y"]]).reshape(-1, 2)

    @property
    def marker_xy(self) -> np.ndarray:
        return np.column_stack([self.marker.data["x"], self.marker.data["y"]]).reshape(-1, 2)


# =========================================================================== detail figures
# Plain Bokeh figures built once and updated in place (``ColumnDataSource.data`` replaced): a
# click then costs ~1 ms per figure instead of a HoloViews re-render (tens of ms per plot).
def _fig(title: str, **kw: Any) -> Any:
    from bokeh.plotting import figure

    f = figure(title=title, toolbar_location=None, tools="", **kw)
    f.title.text_font_size = "10pt"
    for ax in (f.xaxis, f.yaxis):
        ax.axis_label_text_font_size = "9pt"
        ax.axis_label_text_font_style = "normal"
        ax.major_label_text_font_size = "8pt"
    return f


def _grey_mapper(clim: tuple[float, float]) -> Any:
    from bokeh.models import LinearColorMapper
    from bokeh.palettes import Greys256

    return LinearColorMapper(palette=list(Greys256), low=float(clim[0]), high=float(clim[1]),
                             nan_color="white")


def _colorbar(fig: Any, mapper: Any) -> None:
    from bokeh.models import ColorBar

    fig.add_layout(ColorBar(color_mapper=mapper, title="luminance", title_text_font_size="8pt",
                            major_label_text_font_size="8pt", width=10, padding=2), "right")


class StimulusFigure:
    """One stimulus image ``(H, W)`` in pixel coordinates (x right, y down as in
    ``reprlab.v1.stimuli``), grey map over ``clim`` (default the displayable range: 0 = grey,
    -0.5 black, +0.5 white), labelled axes. :meth:`update` swaps image and title."""

    def __init__(self, shape: tuple[int, int], title: str = "", colorbar: bool = False, frame_width: int = 150,
                 clim: tuple[float, float] = GREY_RANGE) -> None:
        from bokeh.models import ColumnDataSource

        h, w = (int(s) for s in shape)
        self.shape = (h, w)
        self.mapper = _grey_mapper(clim)
        self.figure = _fig(title, frame_width=frame_width, frame_height=max(20, round(frame_width * h / w)),
                           x_range=(-0.5, w - 0.5), y_range=(h - 0.5, -0.5), x_axis_label="x (px)",
                           y_axis_label="y (px)")
        self.figure.grid.visible = False
        self.figure.yaxis.ticker = list(range(0, h, 10 if h <= 60 else 20))
        self.source = ColumnDataSource({"image": [np.full((h, w), np.nan, np.float32)]})
        self.figure.image(image="image", x=-0.5, y=-0.5, dw=w, dh=h, color_mapper=self.mapper, source=self.source)
        if colorbar:
            _colorbar(self.figure, self.mapper)

    def update(self, image: np.ndarray, title: str) -> None:
        img = np.asarray(image, dtype=np.float32)
        if img.shape != self.shape:
            raise ValueError(f"image must be {self.shape}, got {img.shape}")
        self.source.data = {"image": [img]}
        self.figure.title.text = title


class MosaicFigure:
    """Up to ``tiles`` images ``(M, H, W)``, ``ncols`` per row, each under a caption strip; one
    grey range and colour bar. Missing tiles stay white. Captions are in column ``caption``."""

    def __init__(self, shape: tuple[int, int], tiles: int = 16, ncols: int = 8, width: int = 690,
                 clim: tuple[float, float] = GREY_RANGE) -> None:
        from bokeh.models import ColumnDataSource

        h, w = (int(s) for s in shape)
        self.shape, self.tiles, self.ncols = (h, w), int(tiles), int(ncols)
        nrows = max(1, -(-self.tiles // self.ncols))
        self.gap, self.cap = 2, max(7, h // 4)
        self.tile_h, self.tile_w = h + self.cap + self.gap, w + self.gap
        H, W = nrows * self.tile_h, self.ncols * self.tile_w
        self.canvas_shape = (H, W)
        self.mapper = _grey_mapper(clim)
        self.figure = _fig("", frame_width=width, frame_height=round(width * H / W), x_range=(0, W),
                           y_range=(H, 0))
        self.figure.axis.visible = False
        self.figure.grid.visible = False
        self.figure.outline_line_color = None
        self.source = ColumnDataSource({"image": [np.full((H, W), np.nan, np.float32)]})
        self.captions = ColumnDataSource({"x": [], "y": [], "caption": []})
        self.figure.image(image="image", x=0, y=0, dw=W, dh=H, color_mapper=self.mapper, source=self.source)
        self.figure.text(x="x", y="y", text="caption", source=self.captions, text_font_size="8pt",
                         text_baseline="middle", text_align="left", text_color="#202020")
        _colorbar(self.figure, self.mapper)

    def compose(self, images: np.ndarray, captions: Sequence[str]) -> tuple[np.ndarray, dict[str, list]]:
        """The canvas and the caption columns for ``images`` (no figure change)."""
        imgs = np.asarray(images, dtype=np.float32)
        if imgs.ndim != 3 or imgs.shape[1:] != self.shape:
            raise ValueError(f"images must be (M, {self.shape[0]}, {self.shape[1]}), got {imgs.shape}")
        if len(captions) != len(imgs):
            raise ValueError(f"need one caption per image: {len(imgs)} images, {len(captions)} captions")
        h, w = self.shape
        canvas = np.full(self.canvas_shape, np.nan, np.float32)
        cols: dict[str, list] = {"x": [], "y": [], "caption": []}
        for i in range(min(len(imgs), self.tiles)):
            r, c = divmod(i, self.ncols)
            y0, x0 = r * self.tile_h + self.cap, c * self.tile_w
            canvas[y0:y0 + h, x0:x0 + w] = imgs[i]
            cols["x"].append(x0 + 1.0)
            cols["y"].append(r * self.tile_h + self.cap / 2)
            cols["caption"].append(str(captions[i]))
        return canvas, cols

    def update(self, images: np.ndarray, captions: Sequence[str]) -> None:
        canvas, cols = self.compose(images, captions)
        self.source.data = {"image": [canvas]}
        self.captions.data = cols


class TuningFigure:
    """Tuning curves: ``n_bands`` mean +- spread bands and one neuron's curve (dashed, dots)
    per band on top; legend below the frame. :meth:`update` swaps values and labels."""

    def __init__(self, x: np.ndarray, colors: Sequence[str], title: str = "", xlabel: str = "",
                 ylabel: str = "response / max", neuron_color: str = "#d62728", width: int = 375,
                 height: int = 235) -> None:
        from bokeh.models import ColumnDataSource, Legend, LegendItem

        self.x = np.asarray(x, dtype=np.float64)
        nan = np.full(len(self.x), np.nan)
        self.figure = _fig(title, width=width, height=height, x_axis_label=xlabel, y_axis_label=ylabel)
        self.bands, self.neurons, items = [], [], []
        for c in colors:
            src = ColumnDataSource({"x": self.x, "mean": nan, "lo": nan, "hi": nan})
            area = self.figure.varea(x="x", y1="lo", y2="hi", source=src, fill_color=c, fill_alpha=0.25)
            line = self.figure.line(x="x", y="mean", source=src, line_color=c, line_width=2)
            self.bands.append(src)
            items.append(LegendItem(label="", renderers=[line, area]))
        for _ in colors:
            src = ColumnDataSource({"x": self.x, "y": nan})
            line = self.figure.line(x="x", y="y", source=src, line_color=neuron_color, line_width=2,
                                    line_dash="dashed")
            dots = self.figure.scatter(x="x", y="y", source=src, color=neuron_color, size=5)
            self.neurons.append(src)
            if len(self.neurons) == 1:
                items.append(LegendItem(label="", renderers=[line, dots]))
        self.items = items
        self.figure.add_layout(Legend(items=items, orientation="horizontal", label_text_font_size="8pt",
                                      glyph_height=9, glyph_width=16, label_height=9, spacing=6, padding=2,
                                      margin=0, border_line_alpha=0), "below")

    def update(self, bands: Sequence[dict[str, Any]], neuron: Sequence[dict[str, Any]]) -> None:
        """``bands``: ``{"mean", "spread", "label"}`` per band; ``neuron``: ``{"y", "label"}``
        per band (all-NaN ``y`` = not shown; the first label names the neuron)."""
        from bokeh.core.properties import value

        if len(bands) != len(self.bands) or len(neuron) != len(self.neurons):
            raise ValueError(f"expected {len(self.bands)} bands and neuron curves, got {len(bands)}, {len(neuron)}")
        for src, item, b in zip(self.bands, self.items, bands):
            mu = np.asarray(b["mean"], dtype=np.float64)
            sp = np.asarray(b["spread"], dtype=np.float64)
            if mu.shape != self.x.shape or sp.shape != self.x.shape:
                raise ValueError(f"band {b.get('label')!r}: mean/spread must have shape {self.x.shape}")
            src.data = {"x": self.x, "mean": mu, "lo": mu - sp, "hi": mu + sp}
            item.label = value(str(b.get("label", "")))
        for src, c in zip(self.neurons, neuron):
            src.data = {"x": self.x, "y": np.asarray(c["y"], dtype=np.float64)}
        self.items[-1].label = value(str(neuron[0].get("label", "")) if neuron else "")


class HistogramFigure:
    """One index: population density (grey) and selection density (``color``) over fixed
    ``edges``, a vertical line at one neuron's value; ``*`` in the title when significant."""

    def __init__(self, edges: np.ndarray, population: np.ndarray, name: str = "", color: str = "#1f77b4",
                 xlabel: str | None = None, width: int = 185, height: int = 150) -> None:
        from bokeh.models import ColumnDataSource, Span

        self.edges = np.asarray(edges, dtype=np.float64)
        pop = np.asarray(population, dtype=np.float64)
        if pop.shape != (len(self.edges) - 1,):
            raise ValueError(f"population density must have {len(self.edges) - 1} bins, got {pop.shape}")
        self.name = name
        self.figure = _fig(name, width=width, height=height, x_axis_label=xlabel or name, y_axis_label="density",
                           x_range=(float(self.edges[0]), float(self.edges[-1])))
        self.figure.xaxis.ticker.desired_num_ticks = 4
        self.figure.yaxis.ticker.desired_num_ticks = 4
        lo, hi = self.edges[:-1], self.edges[1:]
        self.population = ColumnDataSource({"left": lo, "right": hi, "top": pop})
        self.figure.quad(left="left", right="right", bottom=0, top="top", source=self.population,
                         fill_color="#b8b8b8", line_color="#909090", fill_alpha=0.8)
        self.source = ColumnDataSource({"left": lo, "right": hi, "top": np.zeros(len(lo))})
        self.figure.quad(left="left", right="right", bottom=0, top="top", source=self.source, fill_color=color,
                         line_color=color, fill_alpha=0.45)
        self.span = Span(location=0.0, dimension="height", line_color="black", line_width=2, visible=False)
        self.figure.add_layout(self.span)

    def update(self, selection: np.ndarray, value: float | None = None, significant: bool | None = None,
               population: np.ndarray | None = None) -> None:
        """New selection density, neuron value (None/NaN = no line), KS flag, and optionally a
        new population density."""
        n = len(self.edges) - 1
        sel = np.asarray(selection, dtype=np.float64)
        if sel.shape != (n,):
            raise ValueError(f"selection density must have {n} bins, got {sel.shape}")
        self.source.data = {"left": self.edges[:-1], "right": self.edges[1:], "top": sel}
        if population is not None:
            pop = np.asarray(population, dtype=np.float64)
            if pop.shape != (n,):
                raise ValueError(f"population density must have {n} bins, got {pop.shape}")
            self.population.data = {"left": self.edges[:-1], "right": self.edges[1:], "top": pop}
        v = np.nan if value is None else float(value)
        self.span.visible = bool(np.isfinite(v))
        if np.isfinite(v):
            self.span.location = v
        self.figure.title.text = f"{self.name}{' *' if significant else ''}"
