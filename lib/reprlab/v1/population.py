"""Ground-truth simulated V1 population with known cell families (API; implementation follows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

FAMILIES: tuple[str, ...] = (
    "simple", "simple_ss", "simple_coi", "simple_ss_coi",
    "complex", "complex_ss", "complex_coi", "complex_ss_coi",
    "dog_on", "dog_off", "corner",
)


@dataclass
class Population:
    """Ground-truth neurons; every field is a tensor with first axis ``n_neurons``.

    ``family_code`` indexes :data:`FAMILIES`; ``family`` gives the names. ``center`` (n, 2) is
    ``(x, y)`` in pixels, ``orientation`` in [0, π) radians (stimuli convention; 0 for
    unoriented DoG cells, see ``oriented``), ``size`` is eq. (1)'s σ of the RF (pixels),
    ``spatial_frequency`` cycles/pixel, ``gain`` spikes per trial scale.
    """

    image_shape: tuple[int, int]
    family_code: torch.Tensor
    center: torch.Tensor
    orientation: torch.Tensor
    size: torch.Tensor
    spatial_frequency: torch.Tensor
    phase: torch.Tensor
    gain: torch.Tensor

    def __len__(self) -> int:
        return int(self.family_code.shape[0])

    @property
    def family(self) -> np.ndarray:
        return np.asarray(FAMILIES)[self.family_code.cpu().numpy()]

    @property
    def phase_invariant(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def surround_suppressed(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def cross_orientation_inhibited(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def oriented(self) -> torch.Tensor:
        raise NotImplementedError

    def rate(self, stimuli: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Noiseless rates ``(B, n_neurons)`` for stimuli ``(B, H, W)`` (stimulus space)."""
        raise NotImplementedError

    def spikes(self, rates: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Poisson spike counts with mean ``rates``."""
        raise NotImplementedError

    def subset(self, idx: Sequence[int] | np.ndarray | torch.Tensor) -> Population:
        raise NotImplementedError


def sample_population(
    n_neurons: int,
    image_shape: tuple[int, int] = (36, 64),
    seed: int = 0,
    family_weights: Mapping[str, float] | None = None,
) -> Population:
    """Sample a population (not implemented yet)."""
    raise NotImplementedError
