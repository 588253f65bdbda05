"""Twin explorer (thesis ch. 6-7): ``panel serve widgets/twin_explorer.py [--args --twin PATH]``.

Options after ``--args``: ``--twin PATH`` (a twin bundle folder, default ``data/twin_default``;
relative paths are tried against the working directory, then the repository root). Unknown
options (meant for other apps served alongside, e.g. by ``make serve``) are ignored. A missing or
unusable bundle shows a message in the page. Serve on localhost (``make serve`` passes
``--address 127.0.0.1``); ``python widgets/twin_explorer.py`` serves on 127.0.0.1 itself.
The component lives in :mod:`reprlab.apps.twin_explorer` and also runs in JupyterLab.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import panel as pn
from reprlab.apps.twin_explorer import explorer_or_message

DEFAULT_TWIN = "data/twin_default"
ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the app's options from ``argv``, ignoring options meant for other apps."""
    parser = argparse.ArgumentParser(prog="twin_explorer", add_help=False)
    parser.add_argument("--twin", default=DEFAULT_TWIN)
    parser.add_argument("--port", type=int, default=5006)
    args, _unknown = parser.parse_known_args(argv)
    return args


def resolve(path: str) -> Path:
    """``path`` as given if it exists (or is absolute), else relative to the repository root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists() or not (ROOT / p).exists():
        return p
    return ROOT / p


def build(argv: list[str]) -> pn.viewable.Viewable:
    """The explorer layout (or a page with the reason it cannot be shown) from ``argv``."""
    args = parse_args(argv)
    return explorer_or_message(resolve(args.twin))


if __name__.startswith("bokeh_app"):
    pn.extension("tabulator")
    build(sys.argv[1:]).servable(title="reprlab · twin explorer")
elif __name__ == "__main__":
    pn.extension("tabulator")
    port = parse_args(sys.argv[1:]).port
    pn.serve({"twin_explorer": lambda: build(sys.argv[1:])}, address="127.0.0.1", port=port, show=False,
             websocket_origin=[f"127.0.0.1:{port}", f"localhost:{port}"], title="reprlab · twin explorer")
