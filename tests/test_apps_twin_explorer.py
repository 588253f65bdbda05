"""Twin explorer without a browser: the HoloViews selection streams drive the detail panes.

The bundle is the UI fixture of ``tests/twin_bundle_fixture.py`` (synthetic values, no science):
the assertions check that the explorer shows *the bundle's* numbers for the right cluster/neuron.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("panel")

import pandas as pd  # noqa: E402
import panel as pn  # noqa: E402
from bokeh.document import Document  # noqa: E402
from bokeh.models import ColumnDataSource  # noqa: E402
from pyviz_comms import Comm  # noqa: E402
from reprlab.apps.twin_explorer import TwinExplorer, explorer_or_message, load_twin_bundle  # noqa: E402
from reprlab.io import write_bundle  # noqa: E402
from reprlab.v1 import stimuli as stim  # noqa: E402
from twin_bundle_fixture import make_twin_arrays, write_twin_fixture  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# blank placeholder images are all-NaN on purpose (shown white, not as a grey stimulus)
pytestmark = pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_twin_fixture(tmp_path_factory.mktemp("twin") / "twin", n_neurons=300, n_clusters=6, seed=1)


@pytest.fixture(scope="module")
def twin(bundle):
    return load_twin_bundle(bundle)


@pytest.fixture
def explorer(twin) -> TwinExplorer:
    return TwinExplorer(twin)


def _rendered(explorer: TwinExplorer):
    """Render the layout into a bokeh document (as a server session / notebook comm would)."""
    return explorer.panel().get_root(Document(), comm=Comm())


def _tap(explorer: TwinExplorer, row: int) -> None:
    x, y = explorer.xy[row]
    explorer.tap_stream.event(x=float(x) + 1e-3, y=float(y) - 1e-3)


def _normalised(curves: np.ndarray) -> np.ndarray:
    a = np.asarray(curves, dtype=np.float64)
    return a / np.abs(a.reshape(len(a), -1)).max(1).reshape((-1,) + (1,) * (a.ndim - 1))


def _image_sources(root) -> list[np.ndarray]:
    return [np.asarray(s.data["image"][0]) for s in root.select({"type": ColumnDataSource}) if "image" in s.data]


def test_layout_renders_in_a_document_and_is_the_same_component_in_a_notebook(explorer):
    layout = explorer.panel()
    assert layout is explorer.panel() and pn.panel(explorer) is not None
    root = _rendered(explorer)
    assert root is not None
    assert "600" not in explorer.message.object and "300 neurons" in explorer.message.object
    assert "UI fixture" in explorer.message.object  # a fixture bundle says so in the page
    assert explorer.detail["kind"] == "none" and explorer.download.disabled
    # the embedding: every neuron one point, hover with id / cluster / animal / test corr
    base = explorer.base
    assert len(base) == explorer.N
    assert sorted(base.dimension_values("id")) == sorted(explorer.ids)
    hover = dict(base.opts.get("plot").kwargs)["hover_tooltips"]
    assert [h[0] for h in hover][:4] == ["neuron", "cluster", "animal", "test corr"]


def test_selection_marks_are_overlay_renderers_on_the_embedding_figure(explorer, twin):
    # a click must only touch the rings / marker, drawn on the canvas's overlay layer: the
    # browser then does not repaint the N points (nor on hover: no hover glyph)
    fig = _embedding_figure(_rendered(explorer))
    points = [r for r in fig.renderers if len(r.data_source.data.get("x", [])) == explorer.N]
    assert len(points) == 1 and points[0].level == "glyph" and points[0].hover_glyph is None
    marks = [r for r in fig.renderers if r.data_source in (explorer.marks.rings, explorer.marks.marker)]
    assert len(marks) == 2 and all(r.level == "overlay" for r in marks)
    lab = twin.neurons["cluster"]
    row = int(np.flatnonzero(lab == 2)[0])
    points_data = dict(points[0].data_source.data)
    _tap(explorer, row)
    assert np.allclose(np.sort(explorer.marks.rings.data["x"]), np.sort(explorer.xy[lab == 2, 0]))
    assert np.allclose(explorer.marks.marker.data["y"], explorer.xy[[row], 1])
    assert all(points[0].data_source.data[k] is v for k, v in points_data.items())  # the N points untouched
    # a change of colouring draws a new figure: the marks follow (once)
    explorer.color_by.value = "animal"
    fig = _embedding_figure(_rendered(explorer))
    assert sum(r.data_source is explorer.marks.rings for r in fig.renderers) == 1
    assert len(explorer.marks.rings.data["x"]) == int(np.sum(lab == 2))


def test_tap_selects_the_cluster_and_the_detail_panes_show_that_cluster(explorer, twin):
    root = _rendered(explorer)
    before = [a.copy() for a in _image_sources(root)]
    lab = twin.neurons["cluster"]
    tc = twin.neurons["test_corr"]
    for k in (2, 4):
        row = int(np.flatnonzero(lab == k)[3])
        _tap(explorer, row)
        assert explorer.selected_cluster == k and explorer.clicked == row and explorer.focused is None
        members = np.flatnonzero(lab == k)
        assert np.array_equal(np.sort(explorer.selected), members)
        det = explorer.detail
        assert det["kind"] == "cluster" and det["cluster"] == k
        # cluster MEI from the bundle; cluster optimal Gabor rendered from its parameters
        assert np.array_equal(det["cluster_images"][0][0], twin.mei["cluster"][k])
        g = twin.gabor["cluster"][k]  # (cx, cy, size, sf, contrast, orientation, phase), drawn centred
        h, w = twin.mei["cluster"].shape[1:]
        want = stim.gabor((w - 1) / 2, (h - 1) / 2, g[2], g[3], g[5], g[6], g[4], shape=(h, w)).numpy()
        assert np.allclose(det["cluster_images"][1][0], want, atol=1e-6)
        # the 16 best-predicted neurons of cluster k, best first
        best = members[np.argsort(-tc[members], kind="stable")][:16]
        assert np.array_equal(det["best"], best)
        assert np.array_equal(det["mosaic"]["images"], twin.mei["neuron"][best].astype(np.float32))
        assert det["mosaic"]["captions"][0].startswith(str(int(twin.neurons["id"][best[0]])))
        assert f"cluster {k}" in explorer.mosaic_title.object
        assert explorer.header.object.startswith(f"### Cluster {k} ·")
        # tuning: mean ± SD of the cluster's normalised curves (cluster stimuli) + the clicked neuron
        ori = _normalised(twin.cluster_tuning["orientation"])
        band = det["tuning"]["orientation"]["bands"][0]
        assert np.allclose(band["mean"], ori[members].mean(0), atol=1e-5)
        assert np.allclose(band["spread"], ori[members].std(0), atol=1e-5)
        assert np.allclose(det["tuning"]["orientation"]["neuron"][0]["y"], ori[row], atol=1e-6)
        sc = _normalised(twin.cluster_tuning["size_contrast"])
        assert np.allclose(det["tuning"]["size_contrast"]["bands"][0]["mean"], sc[members, -1, :].mean(0), atol=1e-5)
        # index histograms: the cluster's density against the population, KS flags from the bundle
        v = twin.cluster_indices["phase"].astype(np.float64)
        edges = explorer.hist_edges["phase"]
        h, _ = np.histogram(np.clip(v[members], edges[0], edges[-1]), bins=edges)
        assert np.allclose(det["hist"]["phase"]["selection"], h / (h.sum() * np.diff(edges)))
        assert det["hist"]["phase"]["significant"] == twin.clusters[k]["ks"]["phase"]["significant"]
        assert np.isclose(det["hist"]["phase"]["value"], v[row])
        ks_p = twin.clusters[k]["ks"]["orientation"]["p"]
        assert f"{ks_p:.2e}" in explorer.ks_pane.object or f"{ks_p:.3f}" in explorer.ks_pane.object
        assert f"◀ cluster {k}" in explorer.code_pane.object or "not Gabor-like" in explorer.code_pane.object
        # the figures on the page show them ...
        canvas, caps = explorer.mosaic.compose(det["mosaic"]["images"], det["mosaic"]["captions"])
        assert np.array_equal(explorer.mosaic.source.data["image"][0], canvas, equal_nan=True)
        assert list(explorer.mosaic.captions.data["caption"]) == caps["caption"]
        assert explorer.cluster_figs[0].figure.title.text == f"Cluster {k} MEI"
        assert np.array_equal(explorer.cluster_figs[1].source.data["image"][0], det["cluster_images"][1][0])
        # ... and the rendered bokeh image sources changed
        after = _image_sources(root)
        assert any(a.shape != b.shape or not np.array_equal(a, b, equal_nan=True) for a, b in zip(after, before))
        before = [a.copy() for a in after]
        # rings around the members, a marker on the clicked neuron
        assert np.allclose(np.sort(explorer.marks.rings_xy[:, 0]), np.sort(explorer.xy[members, 0]))
        assert np.allclose(explorer.marks.marker_xy, explorer.xy[[row]])
    assert np.isfinite(explorer.last_update_seconds)
    # Tuning / Indices figures are built when their tab opens, then follow every click
    explorer.tabs.active = 1
    explorer.tabs.active = 2
    members = np.flatnonzero(lab == 0)
    _tap(explorer, int(members[0]))
    det = explorer.detail
    fig = explorer.tuning_figs["phase"]
    assert np.allclose(fig.bands[0].data["mean"], det["tuning"]["phase"]["bands"][0]["mean"])
    assert np.allclose(fig.neurons[0].data["y"], det["tuning"]["phase"]["neuron"][0]["y"])
    assert fig.items[0].label["value"] == "cluster 0 mean ± SD"
    hist = explorer.hist_figs["plaid"]
    assert np.allclose(hist.source.data["top"], det["hist"]["plaid"]["selection"])
    assert hist.span.visible and np.isclose(hist.span.location, det["hist"]["plaid"]["value"])
    assert hist.figure.title.text.startswith("plaid")


def test_second_click_in_the_cluster_focuses_that_neuron(explorer, twin):
    _rendered(explorer)
    lab = twin.neurons["cluster"]
    a, b = (int(i) for i in np.flatnonzero(lab == 1)[:2])
    _tap(explorer, a)
    assert explorer.focused is None and "Click a neuron of cluster 1" in explorer.neuron_note.object
    _tap(explorer, b)
    assert explorer.selected_cluster == 1 and explorer.focused == b
    det = explorer.detail
    assert np.array_equal(det["neuron_images"][0][0], twin.mei["neuron"][b].astype(np.float32))
    g = twin.gabor["neuron"][b]
    want = stim.gabor(g[0], g[1], g[2], g[3], g[5], g[6], g[4], shape=twin.mei["neuron"].shape[1:]).numpy()
    assert np.allclose(det["neuron_images"][1][0], want, atol=1e-6)
    d = twin.dog["neuron"][b]
    want = stim.dog(*d, shape=twin.mei["neuron"].shape[1:]).numpy()
    assert np.allclose(det["neuron_images"][2][0], want, atol=1e-6)
    ph = _normalised(twin.cluster_tuning["phase"])
    assert np.allclose(det["tuning"]["phase"]["neuron"][0]["y"], ph[b], atol=1e-6)
    assert np.isclose(det["hist"]["plaid"]["value"], twin.cluster_indices["plaid"][b])
    assert f"Focused neuron {int(twin.neurons['id'][b])}" in explorer.neuron_note.object
    assert np.allclose(explorer.marks.marker_xy, explorer.xy[[b]])
    # the cluster panes did not change, a click elsewhere selects the other cluster
    assert det["cluster"] == 1
    c = int(np.flatnonzero(lab == 3)[0])
    _tap(explorer, c)
    assert explorer.selected_cluster == 3 and explorer.focused is None and explorer.clicked == c


def _embedding_figure(root):
    from bokeh.models import Plot

    figs = [p for p in root.select({"type": Plot}) if p.title and p.title.text.startswith("Functional embedding")]
    assert len(figs) == 1
    return figs[0]


def _browser_events(explorer: TwinExplorer, events: list[tuple[str, int]]) -> list[tuple[float, float]]:
    """Send bokeh ``Tap`` / ``DoubleTap`` UI events (what BokehJS sends for a click) to the
    rendered embedding figure, one at a time, and return the clicks the explorer handled."""
    import asyncio

    from bokeh.events import DoubleTap, PressUp, Tap

    calls: list[tuple[float, float]] = []
    click = explorer.click
    explorer.click = lambda x, y: (calls.append((x, y)), click(x, y))[1]

    async def run() -> None:
        fig = _embedding_figure(_rendered(explorer))
        # exactly one server-side handler per UI event: two streams (or two tap callbacks) on the
        # figure would deliver one browser tap twice
        handlers = {k: len(v) for k, v in fig._event_callbacks.items() if k in ("tap", "doubletap", "pressup")}
        assert handlers == {"tap": 1, "doubletap": 1, "pressup": 1}
        for kind, row in events:
            n = len(calls)
            ev = {"tap": Tap, "doubletap": DoubleTap, "pressup": PressUp}[kind]
            fig._trigger_event(ev(fig, x=float(explorer.xy[row, 0]), y=float(explorer.xy[row, 1])))
            for _ in range(200):  # the HoloViews callback runs on the event loop
                await asyncio.sleep(0.01)
                if len(calls) > n:
                    break
            await asyncio.sleep(0.05)  # a duplicate delivery would arrive here

    try:
        asyncio.run(run())
    finally:
        del explorer.click
    return calls


def test_one_browser_tap_is_one_click_and_a_quick_second_tap_is_not_lost(explorer, twin):
    # BokehJS reports a click within 300 ms of the previous one as "doubletap", not "tap", and a
    # click with the button held >= 300 ms as "pressup": the explorer must take both as a click
    # (they were lost with a SingleTap stream); and one tap must be handled exactly once (twice,
    # a first click became "select, then focus")
    lab = twin.neurons["cluster"]
    a, b = int(np.flatnonzero(lab == 3)[0]), int(np.flatnonzero(lab == 1)[0])
    calls = _browser_events(explorer, [("tap", a)])
    assert len(calls) == 1
    assert explorer.selected_cluster == 3 and explorer.clicked == a and explorer.focused is None
    calls = _browser_events(explorer, [("doubletap", b)])
    assert len(calls) == 1
    assert explorer.selected_cluster == 1 and explorer.clicked == b and explorer.focused is None
    # a quick second click on a neuron of the selected cluster focuses it
    c = int(np.flatnonzero(lab == 1)[1])
    _browser_events(explorer, [("doubletap", c)])
    assert explorer.selected_cluster == 1 and explorer.focused == c
    # a slow click (button held >= 300 ms: BokehJS sends "pressup") is a click too
    calls = _browser_events(explorer, [("pressup", a)])
    assert len(calls) == 1 and explorer.selected_cluster == 3 and explorer.focused is None
    # after a change of colouring (new plot, new streams) a tap is still handled once
    explorer.color_by.value = "test correlation"
    calls = _browser_events(explorer, [("tap", b)])
    assert len(calls) == 1 and explorer.selected_cluster == 1 and explorer.clicked == b and explorer.focused is None


def test_an_error_in_a_click_is_shown_and_later_clicks_still_arrive(explorer, twin, monkeypatch):
    # an exception escaping the stream callback stops HoloViews' event loop for the figure:
    # every later click of the session would be lost
    import logging

    monkeypatch.setattr(logging.getLogger("reprlab.apps.twin_explorer"), "disabled", True)
    lab = twin.neurons["cluster"]
    a, b = int(np.flatnonzero(lab == 2)[0]), int(np.flatnonzero(lab == 4)[0])
    failures = [1, 1]

    def flaky(x, y):
        if failures:
            failures.pop()
            raise RuntimeError("broken row")
        return TwinExplorer.click(explorer, x, y)

    explorer.click = flaky
    _browser_events(explorer, [("tap", a)])
    assert "Could not show this selection" in explorer.header.object and "broken row" in explorer.header.object
    explorer.click = flaky
    calls = _browser_events(explorer, [("tap", a), ("tap", b)])
    assert len(calls) == 2 and explorer.selected_cluster == 4 and explorer.clicked == b
    assert "Cluster 4 ·" in explorer.header.object


def test_tap_far_from_every_neuron_changes_nothing(explorer):
    _tap(explorer, 0)
    k = explorer.selected_cluster
    far = explorer.xy.max(0) + 10 * np.ptp(explorer.xy, 0)
    explorer.tap_stream.event(x=float(far[0]), y=float(far[1]))
    assert explorer.selected_cluster == k and explorer.clicked == 0
    explorer.tap_stream.event(x=None, y=None)  # a tap outside the plot ranges
    assert explorer.selected_cluster == k


def test_box_or_lasso_selection_of_an_arbitrary_set(explorer, twin):
    from scipy import stats

    _rendered(explorer)
    explorer.color_by.value = "animal"  # categorical: plotted order differs from neuron order
    order = explorer._order
    assert not np.array_equal(order, np.arange(explorer.N))
    plotted = np.arange(0, explorer.N, 4)
    explorer.selection_stream.event(index=plotted.tolist())
    rows = np.sort(order[plotted])
    assert explorer.selected_cluster is None and np.array_equal(explorer.selected, rows)
    # plotted point j is neuron order[j]: the ids in the scatter agree
    assert np.array_equal(explorer.base.dimension_values("id")[plotted], twin.neurons["id"][order[plotted]])
    det = explorer.detail
    assert det["kind"] == "set" and np.array_equal(det["neurons"], rows)
    ori = _normalised(twin.cluster_tuning["orientation"])
    assert np.allclose(det["tuning"]["orientation"]["bands"][0]["mean"], ori[rows].mean(0), atol=1e-5)
    tc = twin.neurons["test_corr"]
    assert np.array_equal(det["best"], rows[np.argsort(-tc[rows], kind="stable")][:16])
    v = twin.cluster_indices["suppression"].astype(np.float64)
    want = stats.ks_2samp(v[rows], v)  # the set against the whole population, as for clusters
    assert np.isclose(det["ks"]["suppression"]["p"], want.pvalue, rtol=1e-6)
    assert f"Selection of {len(rows)} neurons" in explorer.header.object
    # an empty selection (a click with the box tool active) keeps the set
    explorer.selection_stream.event(index=[])
    assert np.array_equal(explorer.selected, rows)
    # clicking a member focuses it; clear() drops everything
    _tap(explorer, int(rows[5]))
    assert explorer.focused == int(rows[5]) and explorer.selected_cluster is None
    explorer.clear()
    assert explorer.detail["kind"] == "none" and len(explorer.selected) == 0 and explorer.download.disabled


def test_cluster_table_and_jump_menu_select_a_cluster_and_stay_in_sync(explorer):
    _rendered(explorer)
    explorer.table.selection = [3]
    assert explorer.selected_cluster == 3 and explorer.jump.value == 3
    explorer.jump.value = 5
    assert explorer.selected_cluster == 5 and explorer.table.selection == [5]
    _tap(explorer, int(explorer.members[0][0]))
    assert explorer.jump.value == 0 and explorer.table.selection == [0]
    table = explorer.table.value
    assert list(table["cluster"]) == list(range(explorer.K))
    assert list(table["size"]) == [len(m) for m in explorer.members]


def test_export_csv_of_the_selected_neurons_ids_and_indices(explorer, twin):
    explorer.select_cluster(2)
    frame = pd.read_csv(io.StringIO(explorer.export_csv()))
    members = np.flatnonzero(twin.neurons["cluster"] == 2)
    assert list(frame["id"]) == list(twin.neurons["id"][members])
    assert (frame["cluster"] == 2).all()
    for name in twin.indices:
        assert np.allclose(frame[f"index_{name}"], twin.indices[name][members], rtol=1e-5, equal_nan=True)
        assert np.allclose(frame[f"cluster_index_{name}"], twin.cluster_indices[name][members], rtol=1e-5,
                           equal_nan=True)
    assert not explorer.download.disabled and explorer.download.filename == "twin_cluster_2.csv"
    assert explorer._csv_io().getvalue().decode() == explorer.export_csv()
    explorer.select_neurons([5, 1, 9])
    frame = pd.read_csv(io.StringIO(explorer.export_csv()))
    assert list(frame["id"]) == list(twin.neurons["id"][[1, 5, 9]])
    assert explorer.download.filename == "twin_selection_3_neurons.csv"


def test_colour_by_every_property_with_a_key(explorer, twin):
    opts = list(explorer.color_by.options)
    assert {"cluster", "animal", "true family", "test correlation"} <= set(opts)
    assert {f"index: {n}" for n in twin.indices} <= set(opts)
    for name in opts:
        explorer.color_by.value = name
        base = explorer.base
        values, categorical = explorer.properties[name]
        shown = base.dimension_values("value")
        want = values[explorer._order]
        if categorical:
            assert list(shown) == [str(v) for v in want]
        else:
            assert np.allclose(shown.astype(float), want, equal_nan=True)
        plot_opts = base.opts.get("plot").kwargs
        assert plot_opts["colorbar"] is True  # a colour bar (continuous) / legend (categorical)
        assert name in plot_opts["title"]
    explorer.color_by.value = "index: phase"
    clim = explorer.base.opts.get("style").kwargs.get("clim") or explorer.base.opts.get("plot").kwargs.get("clim")
    assert clim is not None and clim[0] < clim[1]
    _rendered(explorer)  # a rendered page swaps the plot, and clicks still work on the new one
    explorer.color_by.value = "cluster"
    _tap(explorer, 7)
    assert explorer.selected_cluster == int(twin.neurons["cluster"][7])


def test_many_clusters_are_coloured_by_code_on_a_colour_bar(tmp_path):
    path = write_twin_fixture(tmp_path / "k25", n_neurons=150, n_clusters=25, seed=3)
    ex = TwinExplorer(path)
    shown = ex.base.dimension_values("value")
    assert np.array_equal(shown.astype(int), ex.labels[ex._order])  # codes = cluster ids, natural order
    opts = {**ex.base.opts.get("style").kwargs, **ex.base.opts.get("plot").kwargs}
    assert opts["colorbar"] is True and tuple(opts["clim"]) == (-0.5, 24.5) and len(opts["cmap"]) == 25
    row = int(ex.members[11][0])
    _tap(ex, row)
    assert ex.selected_cluster == 11


def test_stimulus_source_toggle_switches_curves_and_indices(explorer, twin):
    explorer.select_cluster(0, clicked=int(explorer.members[0][0]))
    members = explorer.members[0]
    explorer.source.value = "own optimal stimuli"
    own = _normalised(twin.tuning["orientation"])
    assert np.allclose(explorer.detail["tuning"]["orientation"]["bands"][0]["mean"], own[members].mean(0), atol=1e-5)
    assert np.isclose(explorer.detail["hist"]["phase"]["value"], twin.indices["phase"][members[0]])
    assert "computed here" in explorer.ks_pane.object


def test_missing_or_wrong_bundles_give_a_message_not_a_traceback(tmp_path, twin):
    def alert_text(view) -> str:
        alerts = [o for o in view.select(pn.pane.Alert)]
        assert alerts, "expected an Alert in the page"
        return alerts[0].object

    text = alert_text(explorer_or_message(tmp_path / "nope"))
    assert "no twin bundle" in text.lower() and "make twin" in text and "Traceback" not in text
    write_bundle(tmp_path / "other", "textures", arrays={"x": np.zeros(3)})
    text = alert_text(explorer_or_message(tmp_path / "other"))
    assert "'twin'" in text and "'textures'" in text
    arrays, docs = make_twin_arrays(n_neurons=40, n_clusters=3)
    arrays.pop("mei/cluster")
    write_bundle(tmp_path / "broken", "twin", arrays=arrays, documents=docs)
    text = alert_text(explorer_or_message(tmp_path / "broken"))
    assert "mei/cluster" in text and "not a usable twin bundle" in text
    arrays, docs = make_twin_arrays(n_neurons=40, n_clusters=3)
    arrays["neurons/embedding"] = arrays["neurons/embedding"][:, :1]
    write_bundle(tmp_path / "flat", "twin", arrays=arrays, documents=docs)
    assert "neurons/embedding" in alert_text(explorer_or_message(tmp_path / "flat"))
    with pytest.raises(ValueError, match="Twin or a bundle path"):
        TwinExplorer(object())
    with pytest.raises(ValueError, match="cluster must be in"):
        TwinExplorer(twin).select_cluster(99)


def test_widget_script_ignores_other_apps_options_and_reports_a_missing_bundle(tmp_path, bundle):
    spec = importlib.util.spec_from_file_location("twin_explorer_widget", ROOT / "widgets" / "twin_explorer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = mod.parse_args(["--texture", "x", "--twin", str(bundle), "--size", "3"])
    assert args.twin == str(bundle)
    assert mod.parse_args([]).twin == "data/twin_default"
    assert mod.resolve("data/twin_default") in (Path("data/twin_default"), ROOT / "data/twin_default")
    page = mod.build(["--twin", str(tmp_path / "missing")])
    assert any("Could not open the twin bundle" in a.object for a in page.select(pn.pane.Alert))
    page = mod.build(["--twin", str(bundle), "--maps", "8"])
    assert not any(isinstance(a, pn.pane.Alert) and a.alert_type == "danger" for a in page.select(pn.pane.Alert))
