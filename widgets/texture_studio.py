"""Texture studio (thesis ch. 3): ``panel serve widgets/texture_studio.py [--args ...]``.

Options after ``--args``: ``--texture NAME --size PX --maps N --iters N --seed N``. Unknown
options (e.g. ``--twin PATH``, passed by ``make serve`` to every app it serves) are ignored.
The component itself lives in :mod:`reprlab.apps.texture_studio` and also runs in JupyterLab.
"""

from __future__ import annotations

import argparse
import sys

import panel as pn
from reprlab.apps.texture_studio import DEFAULTS, TextureStudio


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the app's options from ``argv``, ignoring options meant for other apps."""
    parser = argparse.ArgumentParser(prog="texture_studio", add_help=False)
    parser.add_argument("--texture", default=None)
    parser.add_argument("--size", type=int, default=DEFAULTS["image_size"])
    parser.add_argument("--maps", type=int, default=DEFAULTS["maps_per_scale"])
    parser.add_argument("--iters", type=int, default=DEFAULTS["iters"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    args, _unknown = parser.parse_known_args(argv)
    return args


def build(argv: list[str]) -> pn.viewable.Viewable:
    """The studio layout configured from ``argv``."""
    args = parse_args(argv)
    studio = TextureStudio(
        texture=args.texture, image_size=args.size, maps_per_scale=args.maps,
        iters=args.iters, seed=args.seed,
    )
    return studio.panel()


if __name__.startswith("bokeh_app") or __name__ == "__main__":
    pn.extension()
    build(sys.argv[1:]).servable(title="reprlab · texture studio")
