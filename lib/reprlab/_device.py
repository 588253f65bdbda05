"""Device and seed helpers: every heavy call in reprlab takes ``device=``."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

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


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch on ``n`` intra-op CPU threads inside the block, restoring the old count after
    (also on error); ``None`` leaves the count alone. Tiny tensors run faster on one thread:
    OpenMP threads spin-waiting for each other dominate on a busy CPU."""
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"thread count must be a positive int or None, got {n!r}")
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
