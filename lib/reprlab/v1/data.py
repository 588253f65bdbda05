"""V1 dataset container and readers/writers for the formats labs use.

:class:`V1Dataset` holds one scan (one animal): the distinct images, the single-trial responses,
which image each trial showed, the trial tiers (train / validation / test), neuron ids and
metadata, and, for simulated data, the ground-truth :class:`~reprlab.v1.population.Population`.

Formats
-------
* **Sensorium-style folder** (:func:`write_sensorium` / :func:`read_sensorium`)::

      data/images/<trial>.npy       (1, H, W) float32, the image shown on that trial
      data/responses/<trial>.npy    (n_neurons,) float32 spike counts
      meta/neurons/unit_ids.npy     (n_neurons,) int64
      meta/neurons/<key>.npy        any per-neuron metadata (first axis n_neurons)
      meta/trials/tiers.npy         (n_trials,) str: 'train' | 'validation' | 'test'
      meta/trials/frame_image_id.npy (n_trials,) int64: image index shown on each trial
      meta/info.json                animal, image space, provenance
      meta/truth/<field>.npy        ground-truth population parameters (simulated data only)

  ``<trial>`` runs 0..n_trials-1. A folder is written to a temporary sibling and renamed into
  place, so a failure never leaves a partial folder.
* **NWB** (:func:`write_nwb` / :func:`read_nwb`) through pynwb: distinct images as an
  ``ImageSeries`` stimulus template, responses as a ``TimeSeries`` in processing module
  ``responses`` (one row per trial), trials table with ``tier`` and ``image_index`` columns,
  neuron metadata as a ``DynamicTable`` and the ground truth as scratch arrays.

Image space: ``images`` are float32 luminance deviation from mean grey in [-0.5, 0.5]
(see :mod:`reprlab.v1.stimuli`); they are *not* z-scored — models normalise their inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from reprlab.io import atomic_save_npy, atomic_write_json, load_npy

if TYPE_CHECKING:  # pragma: no cover
    from reprlab.v1.population import Population

TIERS: tuple[str, ...] = ("train", "validation", "test")
DATA_SCHEMA_VERSION = 1

__all__ = [
    "TIERS",
    "TierSplit",
    "V1Dataset",
    "read_nwb",
    "read_sensorium",
    "write_nwb",
    "write_sensorium",
]


class TierSplit(NamedTuple):
    """Trials of one tier: ``images`` (n, H, W) shown per trial, ``responses`` (n, n_neurons),
    ``image_index`` (n,) indices into :attr:`V1Dataset.images`, ``trial_index`` (n,)."""

    images: np.ndarray
    responses: np.ndarray
    image_index: np.ndarray
    trial_index: np.ndarray


@dataclass
class V1Dataset:
    """One scan (one animal) of single-trial responses to images.

    Attributes:
        images: float32 ``(n_images, H, W)`` distinct images, luminance deviation from mean grey
            in [-0.5, 0.5] (not z-scored; the model normalises).
        responses: float32 ``(n_trials, n_neurons)`` spike counts (or deconvolved activity).
        trial_image: int64 ``(n_trials,)`` index into ``images`` of the image shown per trial.
        tiers: str ``(n_trials,)`` in {'train', 'validation', 'test'}. Test images are shown
            repeatedly (e.g. 100 images x 10 repeats); train/validation images once.
        neuron_ids: int64 ``(n_neurons,)`` unique ids (unique across animals for simulated data).
        animal: name of the animal / scan.
        neuron_meta: per-neuron arrays, first axis ``n_neurons`` (e.g. ``cell_motor_coordinates``
            (n, 3); simulated data also carries ``family``, ``center``, ``orientation``).
        truth: the ground-truth population restricted to these neurons (simulated data), or None.
        info: JSON-able dataset description (image space, seed, scale, provenance).
    """

    images: np.ndarray
    responses: np.ndarray
    trial_image: np.ndarray
    tiers: np.ndarray
    neuron_ids: np.ndarray
    animal: str = "animal"
    neuron_meta: dict[str, np.ndarray] = field(default_factory=dict)
    truth: Population | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.float32)
        self.responses = np.asarray(self.responses, dtype=np.float32)
        self.trial_image = np.asarray(self.trial_image, dtype=np.int64)
        self.tiers = np.asarray(self.tiers).astype(str)
        self.neuron_ids = np.asarray(self.neuron_ids, dtype=np.int64)
        self.neuron_meta = {str(k): np.asarray(v) for k, v in dict(self.neuron_meta).items()}
        self.animal = str(self.animal)
        self.validate()

    # ------------------------------------------------------------------ shape helpers
    @property
    def n_neurons(self) -> int:
        return int(self.responses.shape[1])

    @property
    def n_trials(self) -> int:
        return int(self.responses.shape[0])

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int]:
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    # ------------------------------------------------------------------ validation
    def validate(self) -> V1Dataset:
        """Check shapes, dtypes, index ranges, tiers and finiteness; raise ValueError naming the
        field and what was expected vs found. Returns ``self``."""
        if self.images.ndim != 3:
            raise ValueError(f"images: expected (n_images, H, W), found shape {self.images.shape}")
        if self.responses.ndim != 2:
            raise ValueError(f"responses: expected (n_trials, n_neurons), found shape {self.responses.shape}")
        n_t, n_n = self.responses.shape
        if n_t == 0 or n_n == 0:
            raise ValueError(f"responses: expected at least one trial and one neuron, found shape {self.responses.shape}")
        if self.trial_image.shape != (n_t,):
            raise ValueError(f"trial_image: expected shape ({n_t},) (one per trial), found {self.trial_image.shape}")
        if self.tiers.shape != (n_t,):
            raise ValueError(f"tiers: expected shape ({n_t},) (one per trial), found {self.tiers.shape}")
        if self.neuron_ids.shape != (n_n,):
            raise ValueError(f"neuron_ids: expected shape ({n_n},) (one per neuron), found {self.neuron_ids.shape}")
        if len(np.unique(self.neuron_ids)) != n_n:
            raise ValueError("neuron_ids: expected unique ids, found duplicates")
        if self.trial_image.min() < 0 or self.trial_image.max() >= self.n_images:
            raise ValueError(
                f"trial_image: expected indices in [0, {self.n_images}), found range "
                f"[{self.trial_image.min()}, {self.trial_image.max()}]"
            )
        bad = sorted(set(np.unique(self.tiers)) - set(TIERS))
        if bad:
            raise ValueError(f"tiers: expected values in {TIERS}, found {bad}")
        for tier in ("train", "test"):
            if not (self.tiers == tier).any():
                raise ValueError(f"tiers: the {tier!r} tier is empty; expected at least one trial")
        if not np.isfinite(self.images).all():
            raise ValueError("images: found NaN or inf values")
        if not np.isfinite(self.responses).all():
            raise ValueError(f"responses: found {int((~np.isfinite(self.responses)).sum())} NaN or inf values")
        for key, val in self.neuron_meta.items():
            if val.ndim == 0 or val.shape[0] != n_n:
                raise ValueError(f"neuron_meta[{key!r}]: expected first axis {n_n} (neurons), found shape {val.shape}")
        if self.truth is not None and len(self.truth) != n_n:
            raise ValueError(f"truth: expected a population of {n_n} neurons, found {len(self.truth)}")
        return self

    # ------------------------------------------------------------------ tiers
    def tier_mask(self, tier: str) -> np.ndarray:
        """Boolean ``(n_trials,)`` mask of the trials in ``tier``."""
        if tier not in TIERS:
            raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
        return self.tiers == tier

    def split(self, tier: str) -> TierSplit:
        """Images shown per trial, responses, image and trial indices of the trials in ``tier``."""
        idx = np.flatnonzero(self.tier_mask(tier))
        img_idx = self.trial_image[idx]
        return TierSplit(self.images[img_idx], self.responses[idx], img_idx, idx)

    def repeats_by_image(self, tier: str = "test", return_images: bool = False):
        """Responses to repeated images as ``(n_images_in_tier, n_repeats, n_neurons)``.

        Images are ordered by their index in :attr:`images`; repeats by trial order. Raises
        ValueError if images in the tier were shown a different number of times. With
        ``return_images=True`` also returns the ``(n_images_in_tier,)`` image indices.
        """
        idx = np.flatnonzero(self.tier_mask(tier))
        if idx.size == 0:
            raise ValueError(f"tier {tier!r} has no trials")
        img = self.trial_image[idx]
        uniq, counts = np.unique(img, return_counts=True)
        if (counts != counts[0]).any():
            raise ValueError(
                f"tier {tier!r}: expected every image to be repeated equally often, found repeat "
                f"counts from {counts.min()} to {counts.max()}"
            )
        order = np.lexsort((idx, img))  # by image, then by trial order
        out = self.responses[idx[order]].reshape(len(uniq), int(counts[0]), self.n_neurons)
        return (out, uniq) if return_images else out

    def subset_neurons(self, idx: np.ndarray) -> V1Dataset:
        """A dataset with only the neurons ``idx`` (indices or boolean mask)."""
        idx = np.arange(self.n_neurons)[np.asarray(idx)]
        return V1Dataset(
            images=self.images,
            responses=self.responses[:, idx],
            trial_image=self.trial_image,
            tiers=self.tiers,
            neuron_ids=self.neuron_ids[idx],
            animal=self.animal,
            neuron_meta={k: v[idx] for k, v in self.neuron_meta.items()},
            truth=None if self.truth is None else self.truth.subset(idx),
            info=dict(self.info),
        )

    def summary(self) -> dict[str, Any]:
        """JSON-able summary: sizes per tier, repeats, response statistics."""
        out: dict[str, Any] = {
            "animal": self.animal,
            "n_neurons": self.n_neurons,
            "n_images": self.n_images,
            "image_shape": list(self.image_shape),
            "n_trials": self.n_trials,
        }
        for tier in TIERS:
            m = self.tiers == tier
            out[f"n_trials_{tier}"] = int(m.sum())
            out[f"n_images_{tier}"] = int(len(np.unique(self.trial_image[m])))
        out["mean_response"] = float(self.responses.mean())
        out["has_truth"] = self.truth is not None
        return out


# ---------------------------------------------------------------------------- Sensorium folders
def write_sensorium(ds: V1Dataset, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``ds`` as a Sensorium-style folder (layout in the module docstring), atomically."""
    raise NotImplementedError


def read_sensorium(folder: str | os.PathLike) -> V1Dataset:
    """Read a Sensorium-style folder into a :class:`V1Dataset`.

    Raises FileNotFoundError / ValueError naming the offending file and the problem (missing
    files, shape mismatches, NaN responses, unknown or empty tiers).
    """
    raise NotImplementedError


# ---------------------------------------------------------------------------- NWB
def write_nwb(ds: V1Dataset, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``ds`` to one NWB file via pynwb, atomically."""
    raise NotImplementedError


def read_nwb(path: str | os.PathLike) -> V1Dataset:
    """Read a file written by :func:`write_nwb` (or with the same structure)."""
    raise NotImplementedError


_ = (json, shutil, tempfile, Mapping, atomic_save_npy, atomic_write_json, load_npy)
