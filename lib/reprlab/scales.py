"""Named scale presets: ``smoke`` (CI, seconds) | ``default`` (laptop CPU, minutes) | ``paper``.

The scale is read from ``REPRLAB_SCALE`` unless given explicitly. Each chapter keeps
its own table of sizes per scale and calls :func:`pick` on it, e.g.::

    SIZES = {"smoke": dict(iters=20), "default": dict(iters=500), "paper": dict(iters=2000)}
    cfg = pick(SIZES)            # uses REPRLAB_SCALE, 'default' when unset
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

SCALES: tuple[str, ...] = ("smoke", "default", "paper")
ENV_VAR = "REPRLAB_SCALE"

T = TypeVar("T")


def current_scale(scale: str | None = None) -> str:
    """Return the validated scale name: ``scale`` if given, else ``$REPRLAB_SCALE``, else 'default'."""
    name = scale if scale is not None else os.environ.get(ENV_VAR, "default")
    name = str(name).strip().lower()
    if name not in SCALES:
        source = "argument" if scale is not None else f"${ENV_VAR}"
        raise ValueError(f"scale from {source} must be one of {SCALES}, got {name!r}")
    return name


def pick(presets: dict[str, T], scale: str | None = None, **overrides: Any) -> T:
    """Return ``presets[current_scale(scale)]``; dict presets are copied and updated by ``overrides``."""
    missing = [s for s in SCALES if s not in presets]
    if missing:
        raise ValueError(f"scale presets must define {SCALES}; missing {missing}")
    value = presets[current_scale(scale)]
    if isinstance(value, dict):
        value = {**value, **overrides}
    elif overrides:
        raise ValueError("overrides are only supported for dict presets")
    return value
