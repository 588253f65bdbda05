"""Simulated V1 recordings: one :class:`~reprlab.v1.data.V1Dataset` per animal.

Mirrors the thesis' dataset (digital-twin Methods and Table 1): natural images shown once each
for training/validation and a test set of ~100 images x 10 repeats; several animals (scans)
record different neurons. Here every animal records a disjoint subset of one ground-truth
population (:func:`reprlab.v1.population.sample_population`), so truths are comparable across
animals, and all animals see the same images (like the 4,692 images in the intersection of the
real scans). Trial order is shuffled per animal; spike noise is independent per animal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from reprlab.scales import current_scale, pick
from reprlab.v1.data import IMAGE_SPACE, V1Dataset

#: Sizes per scale. ``n_neurons`` is the total over animals; ``paper`` follows Table 1 of the
#: clustering paper (7 animals, ~28k neurons recorded, ~5,000 training images, 100 x 10 test).
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(n_animals=2, n_neurons=150, n_train_images=600, n_validation_images=100,
                  n_test_images=20, n_repeats=10),
    "default": dict(n_animals=3, n_neurons=2100, n_train_images=4000, n_validation_images=500,
                    n_test_images=100, n_repeats=10),
    "paper": dict(n_animals=7, n_neurons=28000, n_train_images=5000, n_validation_images=500,
                  n_test_images=100, n_repeats=10),
}


def _retinotopy(center: np.ndarray, image_shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Fake cortical coordinates (µm): a noisy linear retinotopic map plus depth (L2/3-L4)."""
    H, W = image_shape
    x = 1200.0 * center[:, 0] / W + 60.0 * rng.standard_normal(len(center))
    y = 700.0 * center[:, 1] / H + 60.0 * rng.standard_normal(len(center))
    z = rng.uniform(180.0, 420.0, len(center))
    return np.stack([x, y, z], 1).astype(np.float32)


def simulate_dataset(
    scale: str | None = None,
    seed: int = 0,
    n_animals: int | None = None,
    n_neurons: int | None = None,
    n_train_images: int | None = None,
    image_shape: tuple[int, int] = (36, 64),
    n_validation_images: int | None = None,
    n_test_images: int | None = None,
    n_repeats: int | None = None,
    family_weights: Mapping[str, float] | None = None,
    mean_rate: float = 1.0,
    noise: str = "poisson",
    device: torch.device | str | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> list[V1Dataset]:
    """Simulate one :class:`V1Dataset` per animal from one ground-truth population.

    Args:
        scale: 'smoke' | 'default' | 'paper' (``$REPRLAB_SCALE`` if None), see :data:`PRESETS`.
        seed: seeds the population, the images and the spike noise.
        n_animals, n_neurons (total over animals, split as evenly as possible),
        n_train_images, n_validation_images, n_test_images, n_repeats: override the preset.
        image_shape: ``(H, W)`` of the images.
        family_weights, mean_rate, noise: passed to
            :func:`~reprlab.v1.population.sample_population`.
        device: where rates are computed (default CPU; results are always numpy on the CPU).
        progress: optional ``progress(stage, seconds)`` called after each stage.

    Returns:
        ``n_animals`` datasets named ``animal1``..; each carries ``truth`` (its neurons'
        :class:`~reprlab.v1.population.Population`), ``neuron_meta`` with
        ``cell_motor_coordinates`` and the ``family`` label (copied from the truth for
        reporting), and ``info`` (scale, seed, sizes, timings).
    """
    from reprlab.v1.population import sample_population
    from reprlab.v1.stimuli import natural_images

    name = current_scale(scale)
    overrides = {k: v for k, v in dict(
        n_animals=n_animals, n_neurons=n_neurons, n_train_images=n_train_images,
        n_validation_images=n_validation_images, n_test_images=n_test_images, n_repeats=n_repeats,
    ).items() if v is not None}
    cfg = pick(PRESETS, name, **overrides)
    for key in ("n_animals", "n_neurons", "n_train_images", "n_test_images", "n_repeats"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
    if int(cfg["n_validation_images"]) < 0:
        raise ValueError(f"n_validation_images must be >= 0, got {cfg['n_validation_images']}")
    if cfg["n_neurons"] < cfg["n_animals"]:
        raise ValueError(f"need at least one neuron per animal: n_neurons={cfg['n_neurons']} < n_animals={cfg['n_animals']}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    timings: dict[str, float] = {}

    def stage(label: str, t0: float) -> None:
        timings[label] = round(time.perf_counter() - t0, 3)
        if progress is not None:
            progress(label, timings[label])

    n_tr, n_va, n_te, n_rep = (int(cfg[k]) for k in ("n_train_images", "n_validation_images", "n_test_images", "n_repeats"))
    t0 = time.perf_counter()
    images = natural_images(n_tr + n_va + n_te, image_shape, seed=seed)
    stage("images", t0)

    t0 = time.perf_counter()
    population = sample_population(int(cfg["n_neurons"]), image_shape, seed=seed,
                                   family_weights=family_weights, mean_rate=mean_rate, noise=noise)
    stage("population", t0)

    t0 = time.perf_counter()
    rates = population.rate(torch.from_numpy(images).to(dev)).cpu()
    stage("rates", t0)

    rng = np.random.default_rng(seed + 1)
    owner = rng.permutation(np.arange(population.n_neurons) % int(cfg["n_animals"]))
    tr_img = np.arange(n_tr)
    va_img = np.arange(n_tr, n_tr + n_va)
    te_img = np.arange(n_tr + n_va, n_tr + n_va + n_te)
    families = population.family

    t0 = time.perf_counter()
    datasets: list[V1Dataset] = []
    for a in range(int(cfg["n_animals"])):
        idx = np.flatnonzero(owner == a)
        trial_image = np.concatenate([tr_img, va_img, np.repeat(te_img, n_rep)])
        tiers = np.array(["train"] * n_tr + ["validation"] * n_va + ["test"] * (n_te * n_rep))
        order = rng.permutation(len(trial_image))
        trial_image, tiers = trial_image[order], tiers[order]
        gen = torch.Generator().manual_seed(int(seed) * 1000 + a + 1)
        trial_rates = rates[torch.as_tensor(trial_image)][:, torch.as_tensor(idx)]
        spikes = population.spikes(trial_rates, generator=gen).numpy().astype(np.float32)
        truth = population.subset(idx)
        datasets.append(V1Dataset(
            images=images,
            responses=spikes,
            trial_image=trial_image,
            tiers=tiers,
            neuron_ids=truth.neuron_ids.numpy(),
            animal=f"animal{a + 1}",
            neuron_meta={
                "cell_motor_coordinates": _retinotopy(truth.center.numpy(), image_shape, rng),
                "family": families[idx],
            },
            truth=truth,
            info={
                "source": "reprlab.v1.simulate",
                "scale": name,
                "seed": int(seed),
                "image_space": IMAGE_SPACE,
                "n_train_images": n_tr,
                "n_validation_images": n_va,
                "n_test_images": n_te,
                "n_repeats": n_rep,
                "noise": noise,
                "mean_rate": mean_rate,
            },
        ))
    stage("trials", t0)
    for ds in datasets:
        ds.info["timings_seconds"] = dict(timings)
    return datasets
