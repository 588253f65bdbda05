"""Twin explorer: the functional embedding of a digital twin, its clusters, MEIs and tuning.

A Panel component over a twin bundle (:mod:`reprlab.v1.twin`, digital-twin paper Figs. 2-4). It
holds no science: every number comes from the bundle, plots from :mod:`reprlab.viz.embedding`.

* The t-SNE embedding, every neuron a point (WebGL), coloured by cluster, animal, true family (if
  the bundle has the ground truth), test correlation or any in silico index, with a colour bar
  (continuous properties) or legend (categories) and hover (neuron id, cluster, animal, test
  correlation, the colouring property).
* Click a point (a quick second click or a slow click alike): its cluster is selected (rings in
  the embedding) and the detail pane shows the cluster MEI and cluster optimal Gabor / DoG
  (rendered from their parameters with :mod:`reprlab.v1.stimuli`), the MEIs of its 16
  best-predicted neurons, its tuning curves (orientation, phase, size-contrast, plaid) as
  mean ± SD with the clicked neuron's curve on top, histograms of every index against the
  population, the KS tests and its place in the combinatorial code. A second click on a neuron
  of the selected cluster focuses that neuron (its MEI, optimal Gabor and DoG), so a double
  click selects the cluster and focuses the neuron. Box / lasso selection selects any set.
* A cluster list (jump menu and table) and a CSV export of the selected neurons (ids, indices).

Speed: everything per cluster (mean ± SD curves, histograms, MEI tiles, stimulus images) is
computed once at load. A click replaces small ``ColumnDataSource.data``: the selection rings and
the marker (plain Bokeh renderers on the overlay layer of the embedding figure, so the browser
does not repaint the N points; :class:`reprlab.viz.embedding.EmbeddingMarks`) and the detail
figures (plain Bokeh figures from :mod:`reprlab.viz.embedding`, built once). No HoloViews plot is
re-rendered on a click, the layout is never rebuilt and only the groups that changed are touched.
The Tuning / Indices figures are built when their tab is first opened.

Under ``panel serve`` use ``widgets/twin_explorer.py``; in JupyterLab::

    import panel as pn; pn.extension("tabulator")
    from reprlab.apps.twin_explorer import TwinExplorer
    TwinExplorer("data/twin_default")          # the same component, displayed in the cell

(In a notebook show one view of a given explorer at a time: its detail figures are Bokeh models,
which live in one document.)
"""

from __future__ import annotations

import io
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import holoviews as hv
import numpy as np
import panel as pn

from reprlab.viz import embedding as vz

__all__ = ["TwinExplorer", "explorer_or_message", "load_twin_bundle"]

# blank (all-NaN) placeholder images make HoloViews warn while computing their colour range
warnings.filterwarnings("ignore", message="All-NaN slice encountered", category=RuntimeWarning,
                        module=r"holoviews\..*")

N_BEST = 16
MAX_LEGEND = 20  # more categories than this are shown as integer codes on a colour bar
MOSAIC_COLS = 8
HIST_BINS = 30
SELECT_COLOR = "#1f77b4"
NEURON_COLOR = "#d62728"
STIM_SOURCES = {"cluster stimuli": "cluster", "own optimal stimuli": "own"}
BUILD_HINT = ("Build the default bundle with `make twin` (or `python -m reprlab v1 twin --out PATH`) "
              "and open another one with `panel serve widgets/twin_explorer.py --args --twin PATH`.")
_EXPERIMENTS = ("orientation", "phase", "size_contrast", "plaid")
_NEW_WIDGET_API = "label" in pn.widgets.Widget.param and "variant" in pn.widgets.Button.param


def _opts(label: str | None = None, color: str | None = None) -> dict[str, str]:
    """Widget keyword arguments spelled for the installed Panel version (1.9 renamed them)."""
    kw: dict[str, str] = {}
    if label is not None:
        kw["label" if _NEW_WIDGET_API else "name"] = label
    if color is not None:
        kw["color" if _NEW_WIDGET_API else "button_type"] = color
    return kw


# =========================================================================== loading
def load_twin_bundle(path: str | os.PathLike) -> Any:
    """Read a twin bundle with :func:`reprlab.v1.twin.load_twin` (FileNotFoundError/ValueError
    with a message saying what is missing)."""
    from reprlab.v1.twin import load_twin

    return load_twin(path)


def _fmt(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(f):
        return "–"
    if f != 0 and (abs(f) < 10 ** -(digits - 1) or abs(f) >= 1e4):
        return f"{f:.{digits - 1}e}"
    return f"{f:.{digits}f}"


def _normalise_curves(arr: np.ndarray) -> np.ndarray:
    """Each neuron's curves divided by its maximum over all conditions of the experiment."""
    a = np.asarray(arr, dtype=np.float32)
    peak = np.nanmax(np.abs(a.reshape(len(a), -1)), axis=1)
    peak = np.where(np.isfinite(peak) & (peak > 0), peak, 1.0)
    return a / peak.reshape((-1,) + (1,) * (a.ndim - 1))


def _group_stats(values: np.ndarray, labels: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group nan-mean and nan-SD of ``values (N, L)`` -> ``(K, L)`` each."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    z = np.where(ok, v, 0.0)
    cnt = np.zeros((K, v.shape[1]))
    s = np.zeros((K, v.shape[1]))
    s2 = np.zeros((K, v.shape[1]))
    np.add.at(cnt, labels, ok)
    np.add.at(s, labels, z)
    np.add.at(s2, labels, z * z)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / cnt
        sd = np.sqrt(np.maximum(s2 / cnt - mean ** 2, 0.0))
    return mean, sd


class _Series:
    """One displayed tuning series: normalised curves ``(N, L)`` per stimulus source."""

    def __init__(self, label: str, curves: dict[str, np.ndarray], color: str) -> None:
        self.label = label
        self.curves = curves
        self.color = color
        self.cluster_mean: dict[str, np.ndarray] = {}
        self.cluster_sd: dict[str, np.ndarray] = {}


# =========================================================================== component
class TwinExplorer(pn.viewable.Viewer):
    """Interactive explorer of a twin bundle; ``TwinExplorer(twin_or_path)``.

    ``twin_or_path`` is a :class:`reprlab.v1.twin.Twin` or the path of a bundle folder.
    Public state: ``selected_cluster`` (int or None), ``selected`` (neuron row indices),
    ``clicked`` / ``focused`` (row index or None), ``detail`` (what the detail pane shows) and
    ``last_update_seconds`` (time of the last selection update, Python side).
    """

    def __init__(self, twin_or_path: Any, title: str = "Twin explorer", **params: Any) -> None:
        import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh plot options)

        super().__init__(**params)
        t0 = time.perf_counter()
        if isinstance(twin_or_path, (str, os.PathLike)):
            twin = load_twin_bundle(twin_or_path)
        else:
            twin = twin_or_path
        for attr in ("neurons", "indices", "mei", "gabor", "dog", "tuning", "meta", "clusters"):
            if not hasattr(twin, attr):
                raise ValueError(f"expected a reprlab.v1.twin.Twin or a bundle path, got {type(twin).__name__}")
        self.twin = twin
        self.title = title
        try:
            self._precompute()
        except (KeyError, IndexError, TypeError) as err:
            where = getattr(twin, "path", None) or "the twin"
            raise ValueError(f"{where} does not have the layout the explorer expects "
                             f"(see reprlab.v1.twin): {type(err).__name__}: {err}") from err
        self.selected_cluster: int | None = None
        self.selected: np.ndarray = np.zeros(0, dtype=np.int64)
        self.clicked: int | None = None
        self.focused: int | None = None
        self.detail: dict[str, Any] = {}
        self.last_update_seconds: float = float("nan")
        self._syncing = False
        self._layout: pn.viewable.Viewable | None = None
        self._build_widgets()
        self._build_plots()
        self.detail = self._empty_detail()
        self._show(self.detail)
        self.load_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------------ precomputation --
    def _precompute(self) -> None:
        from reprlab.v1 import stimuli as stim

        tw = self.twin
        nb = tw.neurons
        self.ids = np.asarray(nb["id"]).astype(np.int64)
        self.N = len(self.ids)
        self.K = len(tw.clusters)
        self.labels = np.asarray(nb["cluster"]).astype(np.int64)
        self.xy = np.asarray(nb["embedding"], dtype=np.float64)
        if self.xy.shape != (self.N, 2):
            raise ValueError(f"neurons/embedding must be ({self.N}, 2), found {self.xy.shape}")
        self.test_corr = np.asarray(nb.get("test_corr", np.full(self.N, np.nan)), dtype=np.float64)
        animals = list(tw.meta.get("animals", []))
        a_idx = np.asarray(nb["animal"]).astype(np.int64)
        n_names = int(a_idx.max()) + 1 if self.N else 0
        names = [animals[i] if i < len(animals) else f"animal {i}" for i in range(n_names)]
        self.animal_names = np.array(names, dtype=object)[a_idx] if self.N else np.zeros(0, object)
        self.cluster_str = np.array([str(k) for k in range(self.K)], dtype=object)[self.labels]
        self.members = [np.flatnonzero(self.labels == k) for k in range(self.K)]
        extent = np.ptp(self.xy, axis=0) if self.N else np.ones(2)
        self._pick_radius = 0.03 * float(max(extent.max(), 1e-9))

        # colouring properties: label -> (values, categorical)
        props: dict[str, tuple[np.ndarray, bool]] = {"cluster": (self.cluster_str, True),
                                                     "animal": (self.animal_names, True)}
        fam = np.asarray(nb.get("family", np.full(self.N, -1))).astype(np.int64)
        families = list(tw.meta.get("families", []))
        self.has_truth = bool(self.N and fam.min() >= 0 and families)
        if self.has_truth:
            props["true family"] = (np.array(families, dtype=object)[fam], True)
        props["test correlation"] = (self.test_corr, False)
        glm = np.asarray(nb.get("glm_test_corr", np.full(self.N, np.nan)), dtype=np.float64)
        if np.isfinite(glm).any():
            props["GLM test correlation"] = (glm, False)
        self.index_names = sorted(tw.indices)
        for name in self.index_names:
            props[f"index: {name}"] = (np.asarray(tw.indices[name], dtype=np.float64), False)
        self.properties = props

        # best-predicted neurons per cluster and their MEIs
        order = np.argsort(-np.nan_to_num(self.test_corr, nan=-np.inf), kind="stable")
        rank = np.empty(self.N, np.int64)
        rank[order] = np.arange(self.N)
        self.best = [m[np.argsort(rank[m], kind="stable")][:N_BEST] for m in self.members]
        self.mei_neuron = tw.mei["neuron"]
        self.mei_cluster = np.asarray(tw.mei["cluster"], dtype=np.float32)
        self.image_shape = tuple(self.mei_cluster.shape[1:])

        # stimulus images from parameters (cluster: canonical frame, once)
        gp = list(tw.meta.get("gabor_params", ["center_x", "center_y", "size", "spatial_frequency",
                                                 "contrast", "orientation", "phase"]))
        dp = list(tw.meta.get("dog_params", ["center_x", "center_y", "sigma_center", "sigma_surround",
                                               "contrast_center", "contrast_surround"]))
        self._gidx = [gp.index(n) for n in ("center_x", "center_y", "size", "spatial_frequency", "orientation",
                                            "phase", "contrast")]
        self._didx = [dp.index(n) for n in ("center_x", "center_y", "sigma_center", "sigma_surround",
                                            "contrast_center", "contrast_surround")]
        self._stim = stim
        # cluster stimuli are stored in the canonical, RF-relative frame: draw them at the centre
        h, w = self.image_shape
        gc = np.array(tw.gabor["cluster"], dtype=np.float32).reshape(self.K, -1)
        gc[:, self._gidx[0]], gc[:, self._gidx[1]] = (w - 1) / 2, (h - 1) / 2
        dc = np.array(tw.dog["cluster"], dtype=np.float32).reshape(self.K, -1)
        dc[:, self._didx[0]], dc[:, self._didx[1]] = (w - 1) / 2, (h - 1) / 2
        self.gabor_cluster_img = self._render_gabors(gc)
        self.dog_cluster_img = self._render_dogs(dc)

        # tuning series (normalised per neuron), per stimulus source, with per-cluster mean/SD
        self.sources = ["cluster", "own"] if tw.cluster_tuning else ["own"]
        self.series: dict[str, list[_Series]] = {}
        self.tuning_x: dict[str, tuple[np.ndarray, str]] = {}
        meta_exp = tw.meta.get("experiments", {})
        for exp in _EXPERIMENTS:
            if exp not in tw.tuning:
                continue
            axes = tw.tuning_axes(exp)
            units = meta_exp.get(exp, {}).get("units", [])
            names = meta_exp.get(exp, {}).get("axes", [])

            def axis_label(i: int, names: list = names, units: list = units) -> str:
                n = names[i] if i < len(names) else f"axis {i}"
                u = units[i] if i < len(units) and units[i] else ""
                return f"{n} ({u})" if u else n

            src = {s: _normalise_curves(tw.cluster_tuning.get(exp, tw.tuning[exp]) if s == "cluster"
                                        else tw.tuning[exp]) for s in self.sources}
            if exp in ("orientation", "phase"):
                self.tuning_x[exp] = (np.asarray(axes[0]), axis_label(0))
                ser = [_Series("mean ± SD", {s: c for s, c in src.items()}, SELECT_COLOR)]
            elif exp == "size_contrast":  # (N, contrast, size): size tuning at the highest/lowest contrast
                c_ax = np.asarray(axes[0])
                self.tuning_x[exp] = (np.asarray(axes[1]), axis_label(1))
                ser = [_Series(f"contrast {c_ax[-1]:g}", {s: c[:, -1, :] for s, c in src.items()}, SELECT_COLOR)]
                if len(c_ax) > 1:
                    ser.append(_Series(f"contrast {c_ax[0]:g}", {s: c[:, 0, :] for s, c in src.items()}, "#2ca02c"))
            else:  # plaid (N, preferred, orthogonal): vs orthogonal contrast at the top preferred contrast
                p_ax = np.asarray(axes[0])
                self.tuning_x[exp] = (np.asarray(axes[1]), axis_label(1))
                ser = [_Series(f"preferred {p_ax[-1]:g}", {s: c[:, -1, :] for s, c in src.items()}, SELECT_COLOR)]
            for sr in ser:
                for s, c in sr.curves.items():
                    sr.cluster_mean[s], sr.cluster_sd[s] = _group_stats(c, self.labels, self.K)
            self.series[exp] = ser

        # index histograms: fixed bins from the population, per-cluster densities once
        self.hist_edges: dict[str, np.ndarray] = {}
        self.hist_pop: dict[tuple[str, str], np.ndarray] = {}
        self.hist_cluster: dict[tuple[str, str], np.ndarray] = {}
        self.index_values: dict[tuple[str, str], np.ndarray] = {}
        for name in self.index_names:
            for s in self.sources:
                v = tw.cluster_indices.get(name, tw.indices[name]) if s == "cluster" else tw.indices[name]
                self.index_values[(s, name)] = np.asarray(v, dtype=np.float64)
            allv = np.concatenate([self.index_values[(s, name)] for s in self.sources])
            allv = allv[np.isfinite(allv)]
            lo, hi = (np.percentile(allv, [1, 99]) if len(allv) else (0.0, 1.0))
            if not hi > lo:
                lo, hi = lo - 0.5, hi + 0.5
            edges = np.linspace(lo, hi, HIST_BINS + 1)
            self.hist_edges[name] = edges
            for s in self.sources:
                v = self.index_values[(s, name)]
                self.hist_pop[(s, name)] = self._density(v, edges)
                self.hist_cluster[(s, name)] = np.stack([self._density(v[m], edges) for m in self.members]) \
                    if self.K else np.zeros((0, HIST_BINS))
        an = tw.analysis or {}
        self.alpha = float((an.get("ks") or {}).get("alpha", 0.01) or 0.01)
        self.comb = an.get("combinatorial") or {}
        self.pop_means = an.get("population_means") or {}

    @staticmethod
    def _density(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
        v = v[np.isfinite(v)]
        if not len(v):
            return np.zeros(len(edges) - 1)
        h, _ = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)
        return h / (h.sum() * np.diff(edges))

    def _render_gabors(self, p: np.ndarray) -> np.ndarray:
        import torch

        p = np.asarray(p, dtype=np.float32).reshape(-1, len(self.twin.meta.get("gabor_params", [0] * 7)))
        if not len(p):
            return np.zeros((0, *self.image_shape), np.float32)
        cols = [torch.as_tensor(p[:, i]) for i in self._gidx]
        cols[2] = cols[2].clamp_min(1e-3)
        cols[3] = cols[3].clamp_min(0.0)
        return self._stim.gabor(*cols[:6], contrast=cols[6], shape=self.image_shape).numpy()

    def _render_dogs(self, p: np.ndarray) -> np.ndarray:
        import torch

        p = np.asarray(p, dtype=np.float32).reshape(-1, len(self.twin.meta.get("dog_params", [0] * 6)))
        if not len(p):
            return np.zeros((0, *self.image_shape), np.float32)
        cols = [torch.as_tensor(p[:, i]) for i in self._didx]
        cols[2] = cols[2].clamp_min(1e-3)
        cols[3] = cols[3].clamp_min(1e-3)
        return self._stim.dog(*cols, shape=self.image_shape).numpy()

    # ------------------------------------------------------------------------- widgets --
    def _build_widgets(self) -> None:
        self.color_by = pn.widgets.Select(**_opts("Colour by"), options=list(self.properties), value="cluster",
                                          width=220)
        jump = {"–": -1}
        jump.update({f"cluster {k} ({len(m)})": k for k, m in enumerate(self.members)})
        self.jump = pn.widgets.Select(**_opts("Jump to cluster"), options=jump, value=-1, width=170)
        self.clear_button = pn.widgets.Button(**_opts("Clear", "light"), width=70, margin=(24, 5, 5, 5))
        self.source = pn.widgets.RadioButtonGroup(
            **_opts("Curves and indices measured with"),
            options=[k for k, v in STIM_SOURCES.items() if v in self.sources],
            value=next(k for k, v in STIM_SOURCES.items() if v == self.sources[0]), width=300)
        self.download = pn.widgets.FileDownload(
            callback=self._csv_io, filename="twin_selection.csv", **_opts("Export selected neurons (CSV)", "primary"),
            width=300, disabled=True)
        self.header = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
        self.summary = pn.pane.Markdown("", width=560, margin=(0, 10))
        self.neuron_note = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
        self.mosaic_title = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
        self.ks_pane = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.code_pane = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.message = pn.pane.Alert(self._bundle_text(), alert_type=self._bundle_alert(),
                                     sizing_mode="stretch_width", margin=(0, 10),
                                     styles={"padding": "2px 10px", "font-size": "90%"})
        import pandas as pd

        names = {r["code"]: r.get("name") for r in self.comb.get("table", [])}
        rows = []
        for k, c in enumerate(self.twin.clusters):
            ks = c.get("ks") or {}
            row = {"cluster": k, "size": int(len(self.members[k])),
                   "test corr": round(float(np.nanmean(self.test_corr[self.members[k]])), 3)
                   if len(self.members[k]) else np.nan,
                   "Gabor-like": "yes" if c.get("gabor_like") else "no",
                   "combination": names.get(c.get("code", -1), "– (not Gabor-like)"),
                   "KS sig.": sum(bool((v or {}).get("significant")) for v in ks.values())}
            if self.has_truth and c.get("true_family_counts"):
                fc = c["true_family_counts"]
                row["main true family"] = max(fc, key=fc.get)
            rows.append(row)
        self.table = pn.widgets.Tabulator(pd.DataFrame(rows), selectable=1, disabled=True, show_index=False,
                                          height=480, sizing_mode="stretch_width", layout="fit_data_table")
        self.color_by.param.watch(lambda e: self._on_color(), ["value"])
        self.jump.param.watch(self._on_jump, ["value"])
        self.table.param.watch(self._on_table, ["selection"])
        self.clear_button.on_click(lambda _e: self.clear())
        self.source.param.watch(lambda _e: self._refresh(), ["value"])

    def _bundle_text(self) -> str:
        tw = self.twin
        where = f"`{tw.path}`" if getattr(tw, "path", None) else "an in-memory twin"
        text = (f"{where}: **{self.N:,} neurons**, **{self.K} clusters**, "
                f"{len(set(self.animal_names))} animal(s), scale `{tw.meta.get('scale', '?')}`. "
                "Click a point: its cluster; click inside it again: focus a neuron; box / lasso (toolbar): any set.")
        if tw.meta.get("scale") == "fixture" or "fixture" in str(tw.meta.get("note", "")):
            text = "**UI fixture bundle (synthetic values, not a twin).** " + text
        return text

    def _bundle_alert(self) -> str:
        return "warning" if self.twin.meta.get("scale") == "fixture" else "info"

    # --------------------------------------------------------------------------- plots --
    def _embedding_element(self, color_by: str) -> hv.Points:
        """The scatter for ``color_by``; sets ``_order`` (plotted row -> neuron row)."""
        values, categorical = self.properties[color_by]
        clim, cmap, fmt = None, None, "{0.000}"
        order = np.arange(self.N)
        cats = sorted(set(values.astype(str).tolist()), key=vz._natural) if categorical else []
        if len(cats) > MAX_LEGEND:
            # too many categories for a legend: integer codes (natural order) on a discrete colour bar
            import colorcet

            code = {c: i for i, c in enumerate(cats)}
            values = np.array([code[v] for v in values.astype(str)], dtype=np.float64)
            categorical, fmt = False, "{0}"
            clim = (-0.5, len(cats) - 0.5)
            cmap = [colorcet.glasbey[i % len(colorcet.glasbey)] for i in range(len(cats))]
        elif categorical:
            # first member of each category up front, in natural order: the legend follows it
            first = np.array([int(np.flatnonzero(values.astype(str) == c)[0]) for c in cats], dtype=np.int64)
            rest = np.setdiff1d(order, first, assume_unique=True)
            order = np.concatenate([first, rest])
        else:
            fin = values[np.isfinite(values)]
            if len(fin):
                lo, hi = np.percentile(fin, [1, 99])
                clim = (float(lo), float(hi if hi > lo else lo + 1e-6))
        self._order = order
        cols = {"id": self.ids[order], "cluster": self.cluster_str[order], "animal": self.animal_names[order],
                "test_corr": self.test_corr[order], "value": values[order]}
        size = 5.0 if self.N <= 2000 else 3.5 if self.N <= 6000 else 2.5
        return vz.embedding_points(self.xy[order], cols, color_by, categorical, clim=clim, cmap=cmap,
                                   value_format=fmt, size=size)

    def _build_plots(self) -> None:
        self.marks = vz.EmbeddingMarks(marker_color=NEURON_COLOR)
        self.embedding_pane = pn.pane.HoloViews(self._make_embedding(self.color_by.value), backend="bokeh",
                                                linked_axes=False, css_classes=["twin-embedding"])
        # detail figures: plain Bokeh, built once, updated in place; only changed groups update
        self._sent: dict[str, Any] = {}
        shape = self.image_shape
        self.cluster_figs = [vz.StimulusFigure(shape, colorbar=i == 2) for i in range(3)]
        self.neuron_figs = [vz.StimulusFigure(shape, colorbar=i == 2) for i in range(3)]
        self.mosaic = vz.MosaicFigure(shape, tiles=N_BEST, ncols=MOSAIC_COLS)
        # the Tuning and Indices figures are built when their tab is first shown
        self.tuning_figs: dict[str, vz.TuningFigure] = {}
        self.hist_figs: dict[str, vz.HistogramFigure] = {}

    def _build_tuning_figs(self) -> list[Any]:
        titles = {"orientation": "Orientation tuning", "phase": "Phase tuning",
                  "size_contrast": "Size tuning (size–contrast)", "plaid": "Plaid: orthogonal mask"}
        self.tuning_figs = {exp: vz.TuningFigure(self.tuning_x[exp][0], [s.color for s in ser], title=titles[exp],
                                                 xlabel=self.tuning_x[exp][1], neuron_color=NEURON_COLOR)
                            for exp, ser in self.series.items()}
        for exp, fig in self.tuning_figs.items():
            fig.update(**self.detail["tuning"][exp])
        return [pn.pane.Bokeh(f.figure) for f in self.tuning_figs.values()]

    def _build_hist_figs(self) -> list[Any]:
        src = self.stim_source
        from reprlab.viz.v1_twin import INDEX_LABELS

        self.hist_figs = {n: vz.HistogramFigure(self.hist_edges[n], self.hist_pop[(src, n)], name=n, color=SELECT_COLOR,
                                                xlabel=INDEX_LABELS.get(n, n)) for n in self.index_names}
        for n, fig in self.hist_figs.items():
            h = self.detail["hist"][n]
            fig.update(h["selection"], h["value"], h["significant"], population=h["population"])
        return [pn.pane.Bokeh(f.figure) for f in self.hist_figs.values()]

    def _on_tab(self, event: Any) -> None:
        """First time the Tuning / Indices tab is shown: build its figures from the current detail."""
        if event.new == 1 and not self.tuning_figs:
            self._tuning_grid.objects = self._build_tuning_figs()
        elif event.new == 2 and not self.hist_figs:
            self._hist_grid.objects = self._build_hist_figs()

    def _make_embedding(self, color_by: str) -> hv.Points:
        """The embedding for ``color_by`` with fresh Tap / PressUp / Selection1D streams on it."""
        # the rings / marker renderers are added to the figure by a plot hook
        self.base = self._embedding_element(color_by).opts(hooks=[self.marks.hook], backend="bokeh")
        # A click reaches BokehJS as one of three gestures: "tap"; "doubletap" when it comes within
        # 300 ms of the previous tap (with SingleTap, which listens to "tap" only, such a quick
        # second click was silently lost); "pressup" when the button was held 300 ms or more
        # (a slow click, or a quick one while the page was busy). Tap covers the first two.
        self.tap_stream = hv.streams.Tap(source=self.base, x=None, y=None)
        self.press_stream = hv.streams.PressUp(source=self.base, x=None, y=None)
        self.selection_stream = hv.streams.Selection1D(source=self.base)
        self.tap_stream.add_subscriber(self._on_tap)
        self.press_stream.add_subscriber(self._on_tap)
        self.selection_stream.add_subscriber(self._on_select)
        self.embedding_view = vz.embedding_overlay(self.base)
        return self.embedding_view

    # -------------------------------------------------------------------------- layout --
    def panel(self) -> pn.viewable.Viewable:
        """The component's layout (embedding left, detail tabs right)."""
        if self._layout is None:
            left = pn.Column(
                pn.Row(self.color_by, self.jump, self.clear_button),
                self.embedding_pane,
                self.summary,
                self.download,
                width=570,
            )
            bk = pn.pane.Bokeh
            self._tuning_grid = pn.GridBox(ncols=2)
            self._hist_grid = pn.GridBox(ncols=4)
            stimuli = pn.Column(
                pn.Row(*[bk(f.figure) for f in self.cluster_figs]),
                self.neuron_note,
                pn.Row(*[bk(f.figure) for f in self.neuron_figs]),
                self.mosaic_title,
                pn.Column(bk(self.mosaic.figure), css_classes=["twin-mei-grid"], margin=0),
            )
            tuning = pn.Column(
                self.source,
                pn.pane.Markdown("Each neuron's curves are divided by its own maximum; band: mean ± SD over "
                                 "the selection; dashed red: the clicked / focused neuron.", margin=(0, 10)),
                self._tuning_grid,
            )
            indices = pn.Column(
                pn.pane.Markdown("Grey: population · blue: selection · black line: clicked / focused neuron · "
                                 f"`*`: KS test of the cluster against the population significant at α = {self.alpha:g}.",
                                 margin=(0, 10)),
                self._hist_grid,
            )
            self.tabs = pn.Tabs(("Stimuli", stimuli), ("Tuning", tuning), ("Indices", indices),
                                ("KS tests & code", pn.Column(self.ks_pane, self.code_pane)),
                                ("Clusters", self.table), dynamic=True, sizing_mode="stretch_width")
            self.tabs.param.watch(self._on_tab, ["active"])
            right = pn.Column(self.header, self.tabs, sizing_mode="stretch_width")
            self._layout = pn.Column(
                pn.Row(pn.pane.Markdown(f"### {self.title}", margin=(0, 10), width=170), self.message,
                       sizing_mode="stretch_width"),
                pn.Row(left, right, sizing_mode="stretch_width"),
                sizing_mode="stretch_width",
            )
            pn.state.onload(self._warm_up)
        return self._layout

    @staticmethod
    def _warm_up() -> None:
        """Once the page is up, import what the first box / lasso selection needs (the KS tests:
        scipy.stats, ~2 s) in a background thread. (Run on the server's event loop, the import
        held up the first click by as long.)"""
        import importlib
        import threading

        threading.Thread(target=importlib.import_module, args=("reprlab.v1.analysis",), daemon=True,
                         name="twin-explorer-warm-up").start()

    def __panel__(self) -> pn.viewable.Viewable:
        return self.panel()

    def serve(self, port: int = 0, address: str = "127.0.0.1", show: bool = False, **kwargs: Any) -> Any:
        """Serve this explorer on ``address`` (localhost by default) with ``pn.serve``."""
        return pn.serve(self.panel(), port=port, address=address, show=show,
                        websocket_origin=kwargs.pop("websocket_origin", [f"{address}:{port}", f"localhost:{port}"]
                                                    if port else None), title=self.title, **kwargs)

    # ------------------------------------------------------------------------ selection --
    def nearest(self, x: float, y: float) -> int | None:
        """Row index of the neuron nearest to ``(x, y)`` in embedding coordinates, or None when
        no neuron is within the pick radius (3% of the embedding's extent)."""
        if self.N == 0 or x is None or y is None:
            return None
        d2 = (self.xy[:, 0] - float(x)) ** 2 + (self.xy[:, 1] - float(y)) ** 2
        i = int(np.argmin(d2))
        return i if d2[i] <= self._pick_radius ** 2 else None

    def click(self, x: float | None, y: float | None) -> int | None:
        """What a click on the embedding does (the Tap stream calls it): select the cluster of
        the nearest neuron; if that neuron already belongs to the selection, focus it."""
        i = self.nearest(x, y)
        if i is None:
            return None
        if self.selected_cluster is not None and self.labels[i] == self.selected_cluster:
            self.focus_neuron(i)
        elif self.selected_cluster is None and len(self.selected) and np.any(self.selected == i):
            self.focus_neuron(i)
        else:
            self.select_cluster(int(self.labels[i]), clicked=i)
        return i

    def select_cluster(self, k: int, clicked: int | None = None) -> None:
        """Select cluster ``k`` (``clicked``: the row whose curves go on top)."""
        if not 0 <= int(k) < self.K:
            raise ValueError(f"cluster must be in [0, {self.K}), got {k}")
        t0 = time.perf_counter()
        self.selected_cluster = int(k)
        self.selected = self.members[int(k)]
        self.clicked = clicked
        self.focused = None
        self._update(t0)

    def focus_neuron(self, i: int) -> None:
        """Focus neuron row ``i`` (its MEI, optimal Gabor and DoG, its curves on top)."""
        if not 0 <= int(i) < self.N:
            raise ValueError(f"neuron row must be in [0, {self.N}), got {i}")
        t0 = time.perf_counter()
        if self.selected_cluster is None and not (len(self.selected) and np.any(self.selected == i)):
            self.selected_cluster = int(self.labels[i])
            self.selected = self.members[self.selected_cluster]
        self.clicked = int(i)
        self.focused = int(i)
        self._update(t0)

    def select_neurons(self, rows: Any) -> None:
        """Select an arbitrary set of neuron rows (what box / lasso selection calls)."""
        idx = np.unique(np.asarray(rows, dtype=np.int64).reshape(-1))
        if len(idx) and (idx.min() < 0 or idx.max() >= self.N):
            raise ValueError(f"neuron rows must be in [0, {self.N}), got range [{idx.min()}, {idx.max()}]")
        t0 = time.perf_counter()
        if len(idx) == 0:
            self.clear()
            return
        self.selected_cluster = None
        self.selected = idx
        self.clicked = None
        self.focused = None
        self._update(t0)

    def clear(self) -> None:
        """Drop the selection."""
        t0 = time.perf_counter()
        self.selected_cluster = None
        self.selected = np.zeros(0, dtype=np.int64)
        self.clicked = None
        self.focused = None
        self._update(t0)

    # HoloViews runs stream callbacks without the document lock; ``unlocked`` dispatches the plain
    # Bokeh model changes they make (a no-op outside a server session)
    def _on_tap(self, x: float | None = None, y: float | None = None) -> None:
        self._from_stream(self.click, x, y)

    def _on_select(self, index: list[int] | None = None) -> None:
        if index is not None and len(index):  # an empty selection (e.g. a tap with box select) is ignored
            self._from_stream(self.select_neurons, self._order[np.asarray(index, dtype=np.int64)])

    def _from_stream(self, handler: Any, *args: Any) -> None:
        """Run a selection handler for a HoloViews stream. An error is logged and shown in the
        header, not raised: raised, it stops the stream's callback loop and every later click
        of the session is lost."""
        with pn.io.unlocked():
            try:
                handler(*args)
            except Exception as err:  # noqa: BLE001 - any failure becomes a message in the page
                import logging

                logging.getLogger(__name__).exception("twin explorer: selection update failed")
                self.header.object = (f"### Could not show this selection\n{type(err).__name__}: "
                                      f"{str(err).replace('`', chr(39))}")

    def _on_color(self) -> None:
        self.embedding_pane.object = self._make_embedding(self.color_by.value)
        self.summary.object = self._summary_text()

    def _on_jump(self, event: Any) -> None:
        if self._syncing or event.new is None or int(event.new) < 0:
            return
        self.select_cluster(int(event.new))

    def _on_table(self, event: Any) -> None:
        if self._syncing or not event.new:
            return
        k = int(self.table.value.iloc[event.new[0]]["cluster"])
        if k != self.selected_cluster or self.focused is not None:
            self.select_cluster(k)

    def _refresh(self) -> None:
        self._update(time.perf_counter())

    # --------------------------------------------------------------------------- detail --
    @property
    def stim_source(self) -> str:
        """'cluster' or 'own': which curves/indices the detail pane shows."""
        return STIM_SOURCES[self.source.value]

    def _empty_detail(self) -> dict[str, Any]:
        blank = np.full(self.image_shape, np.nan, np.float32)
        src = self.stim_source
        tuning = {}
        for exp, ser in self.series.items():
            L = len(self.tuning_x[exp][0])
            tuning[exp] = {"bands": [{"mean": np.full(L, np.nan), "spread": np.full(L, np.nan), "label": s.label,
                                      "color": s.color} for s in ser],
                           "neuron": [{"y": np.full(L, np.nan), "label": "neuron" if j == 0 else "",
                                       "color": NEURON_COLOR} for j in range(len(ser))]}
        hist = {n: {"population": self.hist_pop[(src, n)], "selection": np.zeros(HIST_BINS), "value": None,
                    "significant": None} for n in self.index_names}
        return {"kind": "none", "cluster": None, "neurons": np.zeros(0, np.int64),
                "cluster_images": [(blank, "Cluster MEI"), (blank, "Cluster optimal Gabor"),
                                   (blank, "Cluster optimal DoG")],
                "neuron_images": [(blank, "Neuron MEI"), (blank, "Neuron optimal Gabor"), (blank, "Neuron optimal DoG")],
                "mosaic": {"images": np.zeros((0, *self.image_shape)), "captions": [],
                           "title": f"MEIs of the {N_BEST} best-predicted neurons"},
                "tuning": tuning, "hist": hist}

    def _neuron_images(self, i: int) -> list[tuple[np.ndarray, str]]:
        nid = int(self.ids[i])
        g = self._render_gabors(np.asarray(self.twin.gabor["neuron"][i]))[0]
        d = self._render_dogs(np.asarray(self.twin.dog["neuron"][i]))[0]
        return [(np.asarray(self.mei_neuron[i], np.float32), f"Neuron {nid} MEI"),
                (g, f"Neuron {nid} opt. Gabor"), (d, f"Neuron {nid} opt. DoG")]

    def _compute_detail(self) -> dict[str, Any]:
        k, sel, src = self.selected_cluster, self.selected, self.stim_source
        if k is None and not len(sel):
            return self._empty_detail()
        det = self._empty_detail()
        blank = np.full(self.image_shape, np.nan, np.float32)
        if k is not None:
            det.update(kind="cluster", cluster=k, neurons=self.members[k])
            det["cluster_images"] = [(self.mei_cluster[k], f"Cluster {k} MEI"),
                                     (self.gabor_cluster_img[k], f"Cluster {k} opt. Gabor"),
                                     (self.dog_cluster_img[k], f"Cluster {k} opt. DoG")]
            best = self.best[k]
            what = f"cluster {k}"
        else:
            det.update(kind="set", neurons=sel)
            nk = len(np.unique(self.labels[sel]))
            det["cluster_images"] = [(blank, f"{nk} clusters: no cluster MEI"), (blank, "(no cluster Gabor)"),
                                     (blank, "(no cluster DoG)")]
            tc = np.nan_to_num(self.test_corr[sel], nan=-np.inf)
            best = sel[np.argsort(-tc, kind="stable")][:N_BEST]
            what = f"the selection ({len(sel)} neurons)"
        det["mosaic"] = {"images": np.asarray(self.mei_neuron[best], np.float32),
                         "captions": [f"{int(self.ids[j])}  r={_fmt(self.test_corr[j], 2)}" for j in best],
                         "title": f"MEIs of the {min(N_BEST, len(best))} best-predicted neurons of {what} "
                                  "(caption: id, test correlation)"}
        det["best"] = best
        n_ref = self.focused if self.focused is not None else self.clicked
        if self.focused is not None:
            det["neuron_images"] = self._neuron_images(self.focused)
        # tuning: cluster summaries are precomputed; arbitrary sets are summarised here
        for exp, ser in self.series.items():
            bands, neuron = [], []
            for s in ser:
                if k is not None:
                    mu, sd = s.cluster_mean[src][k], s.cluster_sd[src][k]
                else:
                    c = s.curves[src][sel]
                    mu, sd = np.nanmean(c, 0), np.nanstd(c, 0)
                who = f"cluster {k}" if k is not None else "selection"
                lab = f"{s.label}" if len(ser) > 1 else f"{who} mean ± SD"
                bands.append({"mean": mu, "spread": sd, "label": lab, "color": s.color})
                y = s.curves[src][n_ref] if n_ref is not None else np.full(len(mu), np.nan)
                first = not neuron
                nlab = (f"neuron {int(self.ids[n_ref])}" if n_ref is not None else "neuron") if first else ""
                neuron.append({"y": y, "label": nlab, "color": NEURON_COLOR})
            det["tuning"][exp] = {"bands": bands, "neuron": neuron}
        ks = self._ks(k, sel, src)
        det["ks"] = ks
        for n in self.index_names:
            if k is not None:
                dens = self.hist_cluster[(src, n)][k]
            else:
                dens = self._density(self.index_values[(src, n)][sel], self.hist_edges[n])
            v = self.index_values[(src, n)][n_ref] if n_ref is not None else None
            sig = ks.get(n, {}).get("significant") if ks.get(n) else None
            det["hist"][n] = {"population": self.hist_pop[(src, n)], "selection": dens, "value": v,
                              "significant": sig}
        return det

    def _ks(self, k: int | None, sel: np.ndarray, src: str) -> dict[str, dict[str, Any]]:
        """KS results: the bundle's (cluster, cluster stimuli) or computed for an arbitrary set."""
        if k is not None and src == "cluster":
            return {n: v for n, v in (self.twin.clusters[k].get("ks") or {}).items() if isinstance(v, dict)}
        from reprlab.v1.analysis import ks_tests

        lab = np.zeros(self.N, np.int64)
        lab[sel] = 1
        if lab.sum() == 0 or lab.sum() == self.N:
            return {}
        res = ks_tests({n: self.index_values[(src, n)] for n in self.index_names}, lab, alpha=self.alpha,
                       n_shuffles=0)
        row = next((r for r in res["per_cluster"] if r["cluster"] == 1), {})
        return {n: v for n, v in row.items() if isinstance(v, dict)}

    def _update(self, t0: float) -> None:
        """Push the current selection to every pane (small arrays only)."""
        det = self._compute_detail()
        self.detail = det
        sel = self.selected
        ref = self.focused if self.focused is not None else self.clicked
        self.marks.update(self.xy[sel], self.xy[[ref]] if ref is not None else np.zeros((0, 2)))
        self._show(det)
        self.last_update_seconds = time.perf_counter() - t0

    def _show(self, det: dict[str, Any]) -> None:
        sel_key = (det["kind"], det["cluster"], hash(np.asarray(det["neurons"]).tobytes()))
        ref = self.focused if self.focused is not None else self.clicked
        keys = {"cluster": sel_key, "neuron": self.focused, "tuning": (sel_key, ref, self.stim_source),
                "hist": (sel_key, ref, self.stim_source)}
        changed = [g for g in keys if g not in self._sent or self._sent[g] != keys[g]]
        if "cluster" in changed:
            for fig, (img, title) in zip(self.cluster_figs, det["cluster_images"]):
                fig.update(img, title)
            self.mosaic.update(det["mosaic"]["images"], det["mosaic"]["captions"])
        if "neuron" in changed:
            for fig, (img, title) in zip(self.neuron_figs, det["neuron_images"]):
                fig.update(img, title)
        if "tuning" in changed:
            for exp, fig in self.tuning_figs.items():
                fig.update(**det["tuning"][exp])
        if "hist" in changed:
            pop_changed = self._sent.get("hist", (None, None, None))[2] != self.stim_source
            for n, fig in self.hist_figs.items():
                h = det["hist"][n]
                fig.update(h["selection"], h["value"], h["significant"],
                           population=h["population"] if pop_changed else None)
        self._sent.update(keys)
        k = det["cluster"]
        self.mosaic_title.object = f"#### {det['mosaic']['title']}"
        self.ks_pane.object = self._ks_text(det)
        self.code_pane.object = self._code_text(k)
        if self.focused is not None:
            i = self.focused
            vals = ", ".join(f"{n} {_fmt(self.index_values[(self.stim_source, n)][i], 2)}"
                             for n in self.index_names[:6])
            self.neuron_note.object = (f"**Focused neuron {int(self.ids[i])}** (cluster {int(self.labels[i])}, "
                                       f"{self.animal_names[i]}, test corr {_fmt(self.test_corr[i])}): {vals}")
        elif det["kind"] != "none":
            where = f"cluster {k}" if k is not None else "the selection"
            self.neuron_note.object = f"Click a neuron of {where} in the embedding to focus it (its MEI, optimal Gabor, DoG)."
        else:
            self.neuron_note.object = ""
        self.download.disabled = det["kind"] == "none"
        self.download.filename = (f"twin_cluster_{k}.csv" if k is not None and det["kind"] == "cluster"
                                  else f"twin_selection_{len(det['neurons'])}_neurons.csv")
        self.summary.object = self._summary_text()
        self._syncing = True
        try:
            self.jump.value = k if k is not None else -1
            want = [k] if k is not None else []
            if list(self.table.selection) != want:
                self.table.selection = want
        finally:
            self._syncing = False
        self.header.object = self._header_text(det)  # last: its arrival means the pane is up to date
        if self._layout is not None:
            pn.io.push_notebook(self._layout)  # plain Bokeh changes in a notebook (no-op when served)

    # ---------------------------------------------------------------------------- texts --
    def _header_text(self, det: dict[str, Any]) -> str:
        k = det["cluster"]
        if det["kind"] == "none":
            return "### No selection\nClick a point of the embedding (or pick a cluster) to see its cluster."
        if det["kind"] == "set":
            sel = det["neurons"]
            ks, cnt = np.unique(self.labels[sel], return_counts=True)
            top = ", ".join(f"{a} ({b})" for a, b in sorted(zip(ks, cnt), key=lambda t: -t[1])[:6])
            return (f"### Selection of {len(sel)} neurons\nfrom {len(ks)} clusters: {top}"
                    f"{' …' if len(ks) > 6 else ''} · mean test corr {_fmt(np.nanmean(self.test_corr[sel]))}")
        c = self.twin.clusters[k]
        names = {r["code"]: r.get("name") for r in self.comb.get("table", [])}
        code = c.get("code", -1)
        comb = names.get(code, "not in the table (not Gabor-like)") if code is not None and code >= 0 \
            else "not in the table (not Gabor-like)"
        line = (f"### Cluster {k} · {len(self.members[k])} neurons · mean test corr "
                f"{_fmt(np.nanmean(self.test_corr[self.members[k]]))} · "
                f"{'Gabor-like' if c.get('gabor_like') else 'not Gabor-like'} · code: {comb}")
        ref = self.focused if self.focused is not None else self.clicked
        if ref is not None:
            state = "focused" if self.focused is not None else "clicked"
            line += f"\n{state} neuron {int(self.ids[ref])} ({self.animal_names[ref]}, test corr {_fmt(self.test_corr[ref])})"
        if c.get("true_family_counts"):
            fc = c["true_family_counts"]
            line += " · true families: " + ", ".join(f"{a} {b}" for a, b in sorted(fc.items(), key=lambda t: -t[1])[:4])
        return line

    def _summary_text(self) -> str:
        n = len(self.selected)
        what = ("nothing selected" if not n else f"cluster {self.selected_cluster} ({n} neurons)"
                if self.selected_cluster is not None else f"{n} neurons (box / lasso)")
        ref = self.focused if self.focused is not None else self.clicked
        foc = f" · {'focused' if self.focused is not None else 'clicked'}: neuron {int(self.ids[ref])}" \
            if ref is not None else ""
        return f"**Selected:** {what}{foc} · colour: {self.color_by.value}"

    def _ks_text(self, det: dict[str, Any]) -> str:
        if det["kind"] == "none":
            return "#### KS tests\nSelect a cluster or a set of neurons."
        ks = det.get("ks") or {}
        k = det["cluster"]
        src = self.stim_source
        who = f"cluster {k}" if k is not None else f"the selection ({len(det['neurons'])} neurons)"
        origin = "from the bundle" if (k is not None and src == "cluster") else "computed here on the shown values"
        rows = [f"#### KS tests: {who} vs the population (two-sided, α = {self.alpha:g}; {origin})",
                "| index | selection mean | population mean | KS D | p | different |", "|---|---|---|---|---|---|"]
        sel = det["neurons"]
        for n in self.index_names:
            v = self.index_values[(src, n)]
            r = ks.get(n)
            rows.append(f"| {n} | {_fmt(np.nanmean(v[sel]))} | {_fmt(np.nanmean(v))} | "
                        f"{_fmt(r['statistic']) if r else '–'} | {_fmt(r['p']) if r else '–'} | "
                        f"{('**yes**' if r['significant'] else 'no') if r else 'not tested'} |")
        return "\n".join(rows)

    def _code_text(self, k: int | None) -> str:
        table = self.comb.get("table", [])
        if not table:
            return "#### Combinatorial code\nThe bundle has no combinatorial table."
        code = self.twin.clusters[k].get("code", -1) if k is not None else None
        head = ("#### Combinatorial code (phase invariance × surround suppression × cross-orientation inhibition; "
                "Gabor-like clusters, binarised at the population mean)")
        if k is not None:
            name = next((r.get("name", "") for r in table if r["code"] == code), "")
            head += (f"\nCluster {k}: " + (f"combination **{code}** ({name})" if code is not None and code >= 0
                                           else "not Gabor-like, not in the table"))
        rows = [head, "| code | phase-inv. | suppressed | COI | name | clusters | neurons | |",
                "|---|---|---|---|---|---|---|---|"]
        yes = {True: "✓", False: "·"}
        for r in table:
            mark = f"**◀ cluster {k}**" if code is not None and r["code"] == code else ""
            cl = ", ".join(str(c) for c in r.get("clusters", []))
            rows.append(f"| {r['code']} | {yes[bool(r.get('phase_invariant'))]} | {yes[bool(r.get('suppressed'))]} | "
                        f"{yes[bool(r.get('coi'))]} | {r.get('name', '')} | {cl or '–'} | {r.get('n_neurons', 0)} | {mark} |")
        return "\n".join(rows)

    # --------------------------------------------------------------------------- export --
    def export_frame(self) -> Any:
        """The selected neurons as a DataFrame: id, animal, cluster, test correlations, indices
        (``index_<name>`` own optimal stimuli, ``cluster_index_<name>`` cluster stimuli)."""
        import pandas as pd

        sel = self.selected
        tw = self.twin
        data: dict[str, Any] = {"id": self.ids[sel], "animal": self.animal_names[sel], "cluster": self.labels[sel],
                                "test_corr": self.test_corr[sel]}
        if "glm_test_corr" in tw.neurons:
            data["glm_test_corr"] = np.asarray(tw.neurons["glm_test_corr"])[sel]
        for n in self.index_names:
            data[f"index_{n}"] = np.asarray(tw.indices[n])[sel]
        for n in sorted(tw.cluster_indices):
            data[f"cluster_index_{n}"] = np.asarray(tw.cluster_indices[n])[sel]
        return pd.DataFrame(data)

    def export_csv(self) -> str:
        """CSV text of :meth:`export_frame` (what the Export button downloads)."""
        return self.export_frame().to_csv(index=False, float_format="%.6g")

    def _csv_io(self) -> io.BytesIO:
        return io.BytesIO(self.export_csv().encode("utf-8"))


# =========================================================================== entry point
def explorer_or_message(path: str | os.PathLike, title: str = "Twin explorer") -> pn.viewable.Viewable:
    """The explorer for the bundle at ``path``, or - if it is missing or unusable - a page that
    says so (no traceback). Used by ``widgets/twin_explorer.py``."""
    try:
        return TwinExplorer(path, title=title).panel()
    except Exception as err:  # noqa: BLE001 - any failure becomes a message in the page
        p = Path(path)
        if isinstance(err, FileNotFoundError) or not p.exists():
            what = f"There is no twin bundle at `{p}`."
        else:
            what = f"`{p}` is not a usable twin bundle."
        detail = str(err).replace("`", "'")
        return pn.Column(
            pn.pane.Markdown(f"## {title}", margin=(0, 10)),
            pn.pane.Alert(f"**Could not open the twin bundle.** {what}\n\n{type(err).__name__}: {detail}\n\n"
                          f"{BUILD_HINT}", alert_type="danger", sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )

