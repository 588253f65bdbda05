"""Device and seed helpers: every heavy call in reprlab takes ``device=``."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def device(prefer: str | torch.device | None = None) -> torch.device:
    """Return the torch device to compute on: CUDA > MPS > CPU.

    ``prefer`` (or the environment variable ``REPRLAB_DEVICE``) overrides the choice,
    e.g. ``"cpu"`` or ``"cuda:1"``. Asking for CUDA on a machine without it is an error.
    """
    choice = prefer if prefer is not None else os.environ.get("REPRLAB_DEVICE")
    if choice is not None:
        dev = torch.device(choice)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r} requested but CUDA is not available here")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {str(dev)!r} requested but MPS is not available here")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU ``torch.Generator`` seeded with ``seed``."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
