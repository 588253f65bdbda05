"""Twin explorer in headless Chromium: ``panel serve widgets/twin_explorer.py``, click a point,
the MEI grid of that point's cluster appears; a second click focuses a neuron; two quick clicks
(a BokehJS double tap) and a slow click (a press) select too.

Uses ``data/twin_default`` when it exists and loads; otherwise the UI fixture bundle of
``tests/twin_bundle_fixture.py`` (the reason is reported as a warning).
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import EMBEDDING_POINT_JS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "data" / "twin_default"

# JS: captions of the MEI grid (the Labels data source), [] before anything is selected
CAPTIONS_JS = """() => {
  const out = [];
  for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.data && m.data.caption) out.push(Array.from(m.data.caption));
  return out;
}"""


def _bundle(tmp_path: Path) -> tuple[Path, str]:
    from reprlab.apps.twin_explorer import load_twin_bundle

    if DEFAULT.exists():
        try:
            load_twin_bundle(DEFAULT)
            return DEFAULT, "default bundle"
        except (OSError, ValueError) as err:
            reason = f"{DEFAULT} does not load ({err})"
    else:
        reason = f"{DEFAULT} does not exist yet"
    from twin_bundle_fixture import write_twin_fixture

    warnings.warn(f"twin explorer browser test uses the UI fixture bundle: {reason}", stacklevel=1)
    return write_twin_fixture(tmp_path / "twin_fixture", n_neurons=600, n_clusters=8), "UI fixture"


def _point(page, xy) -> tuple[float, float]:
    page.wait_for_function(EMBEDDING_POINT_JS, arg=[float(xy[0]), float(xy[1])], timeout=120_000)
    return tuple(page.evaluate(EMBEDDING_POINT_JS, [float(xy[0]), float(xy[1])]))


@pytest.mark.browser
def test_click_a_point_shows_its_cluster_mei_grid(serve_app, browser_page, tmp_path):
    from reprlab.apps.twin_explorer import load_twin_bundle

    path, kind = _bundle(tmp_path)
    twin = load_twin_bundle(path)
    ids, lab = twin.neurons["id"], twin.neurons["cluster"]
    tc, xy = twin.neurons["test_corr"], twin.neurons["embedding"]
    # the largest cluster; click its member farthest from other clusters (a click a pixel off still
    # lands in it), then the member farthest from every other neuron (the focus lands on it exactly)
    from scipy.spatial import cKDTree

    k = int(np.bincount(lab).argmax())
    members = np.flatnonzero(lab == k)
    best = members[np.argsort(-tc[members], kind="stable")]
    a = int(members[np.argmax(cKDTree(xy[lab != k]).query(xy[members])[0])])
    d2, _ = cKDTree(xy).query(xy[members], k=2)
    rest = members != a
    b = int(members[rest][np.argmax(d2[rest, 1])])

    # --texture is another app's option (make serve passes one set of args to every app)
    url = serve_app("widgets/twin_explorer.py", "--twin", str(path), "--texture", "x")
    page = browser_page
    t0 = time.monotonic()
    page.goto(url)
    pa = _point(page, xy[a])
    page.get_by_text(re.compile(r"No selection")).first.wait_for(timeout=60_000)
    print(f"{kind}: time to first render {time.monotonic() - t0:.2f} s")
    assert page.get_by_text("Traceback").count() == 0
    grid = page.locator(".twin-mei-grid").first
    grid.wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    blank = grid.screenshot()
    page.screenshot(path=str(tmp_path / "explorer_start.png"))

    t1 = time.monotonic()
    page.mouse.click(*pa)
    page.get_by_text(re.compile(rf"Cluster {k} · {len(members)} neurons")).first.wait_for(timeout=30_000)
    page.get_by_text(f"best-predicted neurons of cluster {k}").first.wait_for(timeout=30_000)
    page.wait_for_function(f"() => ({CAPTIONS_JS})().some(c => c.length > 0)", timeout=30_000)
    print(f"click -> detail pane: {time.monotonic() - t1:.2f} s (browser, includes a loaded machine)")
    captions = [c for c in page.evaluate(CAPTIONS_JS) if c]
    assert captions, "the MEI grid has no captions"
    # one click is one click: the header names the clicked neuron; nothing is focused
    page.get_by_text(f"clicked neuron {int(ids[a])}").first.wait_for(timeout=30_000)
    assert page.get_by_text("Focused neuron").count() == 0
    shown = [int(c.split()[0]) for c in captions[0]]
    want = [int(ids[j]) for j in best[:16]]
    assert shown == want, "the MEI grid does not show the cluster's 16 best-predicted neurons"
    page.wait_for_timeout(400)
    drawn = grid.screenshot()
    assert drawn != blank, "the MEI grid did not change after the click"
    page.screenshot(path=str(tmp_path / "explorer_cluster.png"))

    page.mouse.click(*_point(page, xy[b]))
    page.get_by_text(f"Focused neuron {int(ids[b])}").first.wait_for(timeout=30_000)
    page.wait_for_timeout(400)
    page.screenshot(path=str(tmp_path / "explorer_focused.png"))
    page.get_by_text("Tuning", exact=True).first.click()
    page.get_by_text("Each neuron's curves are divided").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1200)
    page.screenshot(path=str(tmp_path / "explorer_tuning.png"))
    assert page.get_by_text("Traceback").count() == 0

    # two quick clicks on points of two other clusters (BokehJS reports the second, within
    # 300 ms of the first, as a double tap): the page ends on the second one's cluster
    others = [int(c) for c in np.argsort(-np.bincount(lab))[1:3]]
    rows = []
    for c in others:
        m = np.flatnonzero(lab == c)
        rows.append(int(m[np.argmax(cKDTree(xy[lab != c]).query(xy[m])[0])]))
    pts = [_point(page, xy[r]) for r in rows]
    page.mouse.click(*pts[0])
    page.mouse.click(*pts[1])
    c2 = others[1]
    page.get_by_text(re.compile(rf"Cluster {c2} · {int(np.sum(lab == c2))} neurons")).first.wait_for(timeout=30_000)
    page.get_by_text(f"clicked neuron {int(ids[rows[1]])}").first.wait_for(timeout=30_000)
    page.screenshot(path=str(tmp_path / "explorer_quick_clicks.png"))
    # a slow click (button held 0.5 s: BokehJS sends a press, then "pressup") selects too
    page.mouse.move(*_point(page, xy[a]))
    page.mouse.down()
    page.wait_for_timeout(500)
    page.mouse.up()
    page.get_by_text(re.compile(rf"Cluster {k} · {len(members)} neurons")).first.wait_for(timeout=30_000)
    page.get_by_text(f"clicked neuron {int(ids[a])}").first.wait_for(timeout=30_000)
    print(f"screenshots in {tmp_path}")
