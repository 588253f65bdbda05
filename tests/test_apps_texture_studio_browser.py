"""Texture studio in headless Chromium: served by ``panel serve``, Start changes the image."""

from __future__ import annotations

import re
import time

import pytest


def _iteration(page) -> int:
    text = page.get_by_text(re.compile(r"Iteration \d+")).first.inner_text(timeout=10_000)
    return int(re.search(r"Iteration\s+(\d+)", text).group(1))


@pytest.mark.browser
def test_start_in_browser_changes_the_synthesis(serve_app, browser_page, tmp_path):
    # --twin is what `make serve` passes to every app; the studio must ignore it.
    url = serve_app(
        "widgets/texture_studio.py",
        "--twin", "data/twin_default", "--size", "64", "--maps", "8", "--iters", "400",
    )
    page = browser_page
    t0 = time.monotonic()
    page.goto(url)
    start = page.get_by_role("button", name="Start")
    start.wait_for(timeout=60_000)
    plot = page.locator(".bk-Canvas").nth(1)  # reference, synthesis, loss: in that order
    plot.wait_for(timeout=60_000)
    print(f"time to first render: {time.monotonic() - t0:.2f} s")
    # a bad upload is reported in the page, not as a traceback
    page.locator("input[type=file]").set_input_files(
        files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image"}]
    )
    error = page.get_by_text(re.compile(r"Could not use upload"))
    error.first.wait_for(timeout=20_000)
    assert "notes.png" in error.first.inner_text()
    assert page.get_by_text("Traceback").count() == 0
    page.screenshot(path=str(tmp_path / "studio_bad_upload.png"))

    page.wait_for_timeout(500)
    before = plot.screenshot()
    page.screenshot(path=str(tmp_path / "studio_before.png"))

    start.click()
    deadline = time.monotonic() + 90
    step = 0
    while time.monotonic() < deadline:
        step = _iteration(page)
        if step >= 3:
            break
        page.wait_for_timeout(300)
    assert step >= 3, "the step counter did not advance in the page"
    page.wait_for_timeout(600)
    after = plot.screenshot()
    page.screenshot(path=str(tmp_path / "studio_running.png"))
    assert after != before, "the synthesis image did not change"

    page.get_by_role("button", name="Stop").click()
    page.get_by_text(re.compile(r"Stopped after \d+ iterations")).first.wait_for(timeout=20_000)
    page.screenshot(path=str(tmp_path / "studio_stopped.png"))
    print(f"screenshots in {tmp_path}")
