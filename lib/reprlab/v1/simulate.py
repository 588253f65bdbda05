"""Simulated V1 recordings: one :class:`~reprlab.v1.data.V1Dataset` per animal (API stub)."""

from __future__ import annotations

from reprlab.v1.data import V1Dataset


def simulate_dataset(
    scale: str | None = None,
    seed: int = 0,
    n_animals: int | None = None,
    n_neurons: int | None = None,
    n_train_images: int | None = None,
    image_shape: tuple[int, int] = (36, 64),
) -> list[V1Dataset]:
    """Simulate one dataset per animal from one ground-truth population (not implemented yet)."""
    raise NotImplementedError
