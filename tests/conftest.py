"""Shared fixtures: scale, seeded generators and the real-browser app harness.

Browser tests use Debian's chromium (installed by ``make browser``, part of ``make test``)
through Playwright with ``executable_path``; nothing is downloaded at run time. Without
chromium they skip with the reason, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


#: JS for the twin explorer page: page coordinates of embedding point (x, y); null until drawn
EMBEDDING_POINT_JS = """([x, y]) => {
  if (!window.Bokeh || !Bokeh.index) return null;
  for (const v of Bokeh.index.all_views()) {
    const t = v.model && v.model.title;
    if (t && typeof t.text === 'string' && t.text.startsWith('Functional embedding') && v.frame) {
      const r = v.el.getBoundingClientRect();
      return [r.left + v.frame.x_scale.compute(x), r.top + v.frame.y_scale.compute(y)];
    }
  }
  return null;
}"""


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread for a whole module (``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``): small tensors are dominated by OpenMP
    thread synchronisation on a busy 2-core machine."""
    from reprlab import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(autouse=True, scope="session")
def _smoke_scale() -> None:
    os.environ.setdefault("REPRLAB_SCALE", "smoke")


def chromium_executable() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = chromium_executable()
    if path is None:
        reason = "Debian chromium is not installed (make browser installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; browser tests may not be skipped under CI=true")
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def serve_app(tmp_path: Path):
    """Start ``panel serve APP --args ...`` on a free localhost port; yield a function -> URL."""
    procs: list[subprocess.Popen] = []

    def start(app: str | Path, *app_args: str, timeout: float = 120.0) -> str:
        port = free_port()
        app_path = Path(app)
        if not app_path.is_absolute():
            app_path = ROOT / app_path
        cmd = [
            sys.executable, "-m", "panel", "serve", str(app_path),
            "--address", "127.0.0.1", "--port", str(port),
            "--allow-websocket-origin", f"127.0.0.1:{port}",
        ]
        if app_args:
            cmd += ["--args", *app_args]
        log = open(tmp_path / f"panel_{port}.log", "w")
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}/{app_path.stem}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"panel serve exited early:\n{(tmp_path / log.name).read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        return url
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"panel serve did not answer on {url} within {timeout}s")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def browser_page(chromium_path: str) -> Iterator:
    """A Playwright page in headless Debian chromium at 1366x768."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        try:
            yield page
        finally:
            browser.close()
