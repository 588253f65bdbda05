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

from reprlab.io import atomic_write_json, load_npy

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
            (n, 3); simulated data also carries the true ``family`` label for reporting).
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
        bad = sorted({str(t) for t in np.unique(self.tiers)} - set(TIERS))
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
_INFO = "meta/info.json"
IMAGE_SPACE = "luminance deviation from mean grey in [-0.5, 0.5]"


def _safe_key(key: str) -> str:
    if not key or "/" in key or "\\" in key or key.startswith("."):
        raise ValueError(f"neuron_meta key {key!r} cannot be used as a file name")
    return key


def _npsave(path: Path, arr: np.ndarray) -> None:
    arr = np.asarray(arr)
    if arr.dtype == object:
        raise ValueError(f"cannot save an object array to {path}: expected numeric or str dtype")
    np.save(path, arr, allow_pickle=False)


def _replace_dir(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the finished temporary folder ``tmp`` to ``target`` (old target removed last)."""
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(target, backup)
        os.replace(tmp, target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(tmp, target)


def write_sensorium(ds: V1Dataset, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``ds`` as a Sensorium-style folder (layout in the module docstring), atomically.

    Everything is written into a temporary sibling folder which is renamed into place at the
    end; on any error the temporary folder is removed and ``folder`` is untouched. Raises
    FileExistsError if ``folder`` exists and ``overwrite`` is False.
    """
    ds.validate()
    target = Path(folder)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    keys = [_safe_key(k) for k in ds.neuron_meta]
    if "unit_ids" in keys:
        raise ValueError("neuron_meta may not use the reserved key 'unit_ids'")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for sub in ("data/images", "data/responses", "meta/neurons", "meta/trials"):
            (tmp / sub).mkdir(parents=True)
        for t in range(ds.n_trials):
            _npsave(tmp / "data/images" / f"{t}.npy", ds.images[ds.trial_image[t]][None])
            _npsave(tmp / "data/responses" / f"{t}.npy", ds.responses[t])
        _npsave(tmp / "meta/neurons/unit_ids.npy", ds.neuron_ids)
        for k, v in ds.neuron_meta.items():
            _npsave(tmp / "meta/neurons" / f"{k}.npy", v)
        _npsave(tmp / "meta/trials/tiers.npy", ds.tiers.astype("<U10"))
        _npsave(tmp / "meta/trials/frame_image_id.npy", ds.trial_image)
        _npsave(tmp / "meta/trials/trial_idx.npy", np.arange(ds.n_trials, dtype=np.int64))
        if ds.truth is not None:
            (tmp / "meta/truth").mkdir()
            for k, v in ds.truth.to_arrays().items():
                _npsave(tmp / "meta/truth" / f"{k}.npy", v)
        info = {
            "schema_version": DATA_SCHEMA_VERSION,
            "format": "reprlab-sensorium",
            "animal": ds.animal,
            "image_space": IMAGE_SPACE,
            "image_shape": list(ds.image_shape),
            "n_trials": ds.n_trials,
            "n_neurons": ds.n_neurons,
            "info": ds.info,
        }
        atomic_write_json(tmp / _INFO, info)
        _replace_dir(tmp, target, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _trial_files(folder: Path, sub: str) -> dict[int, Path]:
    d = folder / sub
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: expected a folder of per-trial .npy files, found nothing")
    out: dict[int, Path] = {}
    for p in d.iterdir():
        if p.suffix != ".npy" or p.name.startswith("."):
            continue
        try:
            out[int(p.stem)] = p
        except ValueError:
            raise ValueError(f"{p}: expected trial files named <integer>.npy, found {p.name!r}") from None
    if not out:
        raise ValueError(f"{d}: expected per-trial .npy files, found none")
    return out


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: required file is missing")
    return load_npy(path)


def _convert_foreign_images(images: np.ndarray, note: dict[str, Any]) -> np.ndarray:
    """Bring images of a foreign folder (e.g. uint8 0..255) into the stimulus space."""
    lo, hi = float(images.min()), float(images.max())
    if lo >= -0.5 - 1e-6 and hi <= 0.5 + 1e-6:
        return images
    if lo >= 0 and hi <= 1.0 + 1e-6:
        note["image_conversion"] = "x - 0.5 (input range [0, 1])"
        return images - 0.5
    if lo >= 0 and hi <= 255.0 + 1e-6:
        note["image_conversion"] = "x / 255 - 0.5 (input range [0, 255])"
        return images / 255.0 - 0.5
    note["image_conversion"] = f"min-max to [-0.5, 0.5] (input range [{lo:.4g}, {hi:.4g}])"
    return (images - lo) / max(hi - lo, 1e-12) - 0.5


def read_sensorium(
    folder: str | os.PathLike, tier_map: Mapping[str, str | None] | None = None
) -> V1Dataset:
    """Read a Sensorium-style folder into a :class:`V1Dataset`.

    Trials are ``data/images/<t>.npy`` ((1, H, W) or (H, W)) and ``data/responses/<t>.npy``
    ((n_neurons,)), ``t = 0..n_trials-1``. Images shown on several trials are identified by
    ``meta/trials/frame_image_id.npy`` when present, otherwise by identical content. Folders
    not written by reprlab (no ``meta/info.json``) have their images mapped into the stimulus
    space ([0, 255] or [0, 1] -> [-0.5, 0.5]); the conversion is recorded in ``info``.
    ``tier_map`` renames foreign tier names (e.g. ``{'final_test': None}`` drops those trials).

    Raises FileNotFoundError / ValueError naming the offending file and the problem (missing
    files, shape mismatches, NaN responses, unknown or empty tiers).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: expected a Sensorium-style dataset folder, found nothing")
    img_files = _trial_files(root, "data/images")
    resp_files = _trial_files(root, "data/responses")
    n_trials = max(max(img_files), max(resp_files)) + 1
    for name, files in (("data/images", img_files), ("data/responses", resp_files)):
        missing = sorted(set(range(n_trials)) - set(files))
        if missing:
            raise FileNotFoundError(
                f"{root / name / f'{missing[0]}.npy'}: file is missing ({len(missing)} of "
                f"{n_trials} trials missing in {name})"
            )
    info_path = root / _INFO
    info: dict[str, Any] = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{info_path}: not valid JSON ({err})") from err
    tiers_path = root / "meta/trials/tiers.npy"
    tiers = _load(tiers_path).astype(str)
    if tiers.shape != (n_trials,):
        raise ValueError(f"{tiers_path}: expected shape ({n_trials},) (one tier per trial), found {tiers.shape}")
    ids_path = root / "meta/neurons/unit_ids.npy"
    neuron_ids = _load(ids_path)
    if neuron_ids.ndim != 1:
        raise ValueError(f"{ids_path}: expected a 1-D array of unit ids, found shape {neuron_ids.shape}")
    n_neurons = neuron_ids.shape[0]

    responses = np.empty((n_trials, n_neurons), np.float32)
    for t in range(n_trials):
        r = load_npy(resp_files[t])
        if r.shape != (n_neurons,):
            raise ValueError(
                f"{resp_files[t]}: expected shape ({n_neurons},) (one value per unit in "
                f"{ids_path.name}), found {r.shape}"
            )
        if not np.issubdtype(r.dtype, np.number):
            raise ValueError(f"{resp_files[t]}: expected numeric responses, found dtype {r.dtype}")
        bad = ~np.isfinite(r)
        if bad.any():
            raise ValueError(f"{resp_files[t]}: {int(bad.sum())} responses are NaN or inf")
        responses[t] = r
    first = load_npy(img_files[0])
    img_shape = first.shape[-2:]
    frames = np.empty((n_trials, *img_shape), np.float32)
    for t in range(n_trials):
        im = load_npy(img_files[t]) if t else first
        if im.ndim == 3 and im.shape[0] == 1:
            im = im[0]
        if im.shape != img_shape:
            raise ValueError(f"{img_files[t]}: expected an image of shape {tuple(img_shape)} "
                             f"(like trial 0), found {im.shape}")
        frames[t] = im
    if not np.isfinite(frames).all():
        bad_t = int(np.flatnonzero(~np.isfinite(frames).all(axis=(1, 2)))[0])
        raise ValueError(f"{img_files[bad_t]}: image contains NaN or inf values")

    fid_path = root / "meta/trials/frame_image_id.npy"
    if fid_path.is_file():
        fid = load_npy(fid_path)
        if fid.shape != (n_trials,):
            raise ValueError(f"{fid_path}: expected shape ({n_trials},), found {fid.shape}")
    else:  # identify repeated images by content
        keys = [frames[t].tobytes() for t in range(n_trials)]
        lookup: dict[bytes, int] = {}
        fid = np.array([lookup.setdefault(k, len(lookup)) for k in keys], np.int64)
    uniq, first_trial, trial_image = np.unique(fid, return_index=True, return_inverse=True)
    images = frames[first_trial]

    # tiers: map foreign names, drop trials whose tier maps to None
    keep = np.ones(n_trials, bool)
    if tier_map:
        mapped = tiers.copy()
        for src, dst in tier_map.items():
            sel = tiers == src
            if dst is None:
                keep &= ~sel
            else:
                mapped[sel] = dst
        tiers = mapped
    unknown = sorted({str(t) for t in np.unique(tiers[keep])} - set(TIERS))
    if unknown:
        raise ValueError(f"{tiers_path}: unknown tier names {unknown}; expected {TIERS} "
                         f"(use tier_map to rename or drop them)")
    for tier in ("train", "test"):
        if not (tiers[keep] == tier).any():
            raise ValueError(f"{tiers_path}: the {tier!r} tier is empty; expected at least one trial")

    meta: dict[str, np.ndarray] = {}
    for p in sorted((root / "meta/neurons").glob("*.npy")):
        if p.name == "unit_ids.npy" or p.name.startswith("."):
            continue
        arr = load_npy(p)
        if arr.ndim == 0 or arr.shape[0] != n_neurons:
            raise ValueError(f"{p}: expected first axis {n_neurons} (one row per unit), found shape {arr.shape}")
        meta[p.stem] = arr

    truth = None
    truth_dir = root / "meta/truth"
    if truth_dir.is_dir():
        from reprlab.v1.population import Population

        arrays = {p.stem: load_npy(p) for p in truth_dir.glob("*.npy")}
        try:
            truth = Population.from_arrays(arrays)
        except ValueError as err:
            raise ValueError(f"{truth_dir}: {err}") from err

    note: dict[str, Any] = dict(info.get("info", {}))
    if not info:
        images = _convert_foreign_images(images, note)
        note["source_folder"] = str(root)
    ds_images = images.astype(np.float32)
    idx = np.flatnonzero(keep)
    used, new_trial_image = np.unique(trial_image[idx], return_inverse=True)
    try:
        return V1Dataset(
            images=ds_images[used],
            responses=responses[idx],
            trial_image=new_trial_image,
            tiers=tiers[idx],
            neuron_ids=neuron_ids,
            animal=str(info.get("animal", root.name)),
            neuron_meta=meta,
            truth=truth,
            info=note,
        )
    except ValueError as err:
        raise ValueError(f"{root}: {err}") from err


# ---------------------------------------------------------------------------- NWB
def write_nwb(ds: V1Dataset, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``ds`` to one NWB file via pynwb, atomically (temporary file + rename).

    Layout: stimulus template ``ImageSeries`` ``images`` (n_images, H, W); trials table with
    columns ``tier`` and ``image_index`` (one row per trial, 1 s apart); processing module
    ``responses`` holding ``TimeSeries`` ``responses`` (n_trials, n_neurons) at the trial start
    times and ``DynamicTable`` ``neurons`` (``unit_id`` + 1-D/2-D neuron metadata); ground-truth
    population arrays as scratch data ``truth/<field>``; ``info`` as JSON scratch text.
    """
    from datetime import datetime, timezone

    from hdmf.common import DynamicTable, VectorData
    from pynwb import NWBHDF5IO, NWBFile, ProcessingModule, TimeSeries
    from pynwb.core import ScratchData
    from pynwb.image import ImageSeries

    from reprlab.io import atomic_path

    ds.validate()
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    keys = [_safe_key(k) for k in ds.neuron_meta]
    nwb = NWBFile(
        session_description=f"reprlab V1 dataset ({ds.animal})",
        identifier=f"reprlab-{ds.animal}-{ds.n_trials}x{ds.n_neurons}",
        session_start_time=datetime(2000, 1, 1, tzinfo=timezone.utc),
        subject=None,
    )
    nwb.add_stimulus_template(ImageSeries(
        name="images", data=ds.images, unit="luminance deviation from mean grey",
        starting_time=0.0, rate=1.0, description=IMAGE_SPACE,
    ))
    nwb.add_trial_column("tier", "train | validation | test")
    nwb.add_trial_column("image_index", "index into stimulus template 'images'")
    for t in range(ds.n_trials):
        nwb.add_trial(start_time=float(t), stop_time=float(t) + 0.5,
                      tier=str(ds.tiers[t]), image_index=int(ds.trial_image[t]))
    mod = ProcessingModule(name="responses", description="single-trial responses per neuron")
    nwb.add_processing_module(mod)
    mod.add(TimeSeries(name="responses", data=ds.responses, unit="spikes",
                       timestamps=np.arange(ds.n_trials, dtype=np.float64),
                       description="rows: trials (trials table order); columns: neurons (table 'neurons')"))
    cols = [VectorData(name="unit_id", description="unit id", data=ds.neuron_ids)]
    for k in keys:
        v = ds.neuron_meta[k]
        if v.ndim > 2:
            raise ValueError(f"neuron_meta[{k!r}]: NWB export supports 1-D or 2-D arrays, found shape {v.shape}")
        cols.append(VectorData(name=k, description=f"neuron metadata {k}", data=_h5(v)))
    mod.add(DynamicTable(name="neurons", description="one row per neuron (column order of responses)", columns=cols))
    if ds.truth is not None:
        for k, v in ds.truth.to_arrays().items():
            nwb.add_scratch(ScratchData(name=f"truth_{k}", data=_h5(v), description=f"ground truth {k}"))
    nwb.add_scratch(ScratchData(name="info_json", data=json.dumps({"animal": ds.animal, "info": ds.info}, default=str),
                                description="reprlab dataset info (JSON)"))
    with atomic_path(target, suffix=".nwb") as tmp:
        tmp.unlink(missing_ok=True)
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
    return target


def read_nwb(path: str | os.PathLike) -> V1Dataset:
    """Read a file written by :func:`write_nwb` (or an NWB file with the same structure)."""
    from pynwb import NWBHDF5IO

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: expected an NWB file, found nothing")
    try:
        io = NWBHDF5IO(str(p), "r", load_namespaces=True)
        nwb = io.read()
    except Exception as err:  # noqa: BLE001 - h5py/pynwb raise many types for bad files
        raise ValueError(f"{p}: not a readable NWB file ({err})") from err
    try:
        if "images" not in nwb.stimulus_template:
            raise ValueError(f"{p}: stimulus template 'images' is missing")
        images = np.asarray(nwb.stimulus_template["images"].data[:], dtype=np.float32)
        if nwb.trials is None:
            raise ValueError(f"{p}: trials table is missing")
        trials = nwb.trials
        for col in ("tier", "image_index"):
            if col not in trials.colnames:
                raise ValueError(f"{p}: trials table has no column {col!r}")
        tiers = np.asarray(trials["tier"].data[:]).astype(str)
        trial_image = np.asarray(trials["image_index"].data[:], dtype=np.int64)
        if "responses" not in nwb.processing:
            raise ValueError(f"{p}: processing module 'responses' is missing")
        mod = nwb.processing["responses"]
        for name in ("responses", "neurons"):
            if name not in mod.data_interfaces:
                raise ValueError(f"{p}: processing/responses/{name} is missing")
        responses = np.asarray(mod["responses"].data[:], dtype=np.float32)
        table = mod["neurons"]
        neuron_ids = np.asarray(table["unit_id"].data[:], dtype=np.int64)
        meta = {c: np.asarray(table[c].data[:]) for c in table.colnames if c != "unit_id"}
        meta = {k: (v.astype(str) if v.dtype.kind in "OS" else v) for k, v in meta.items()}
        scratch = dict(nwb.scratch)
        info: dict[str, Any] = {}
        animal = p.stem
        if "info_json" in scratch:
            doc = json.loads(_scalar_text(scratch["info_json"].data))
            info, animal = doc.get("info", {}), doc.get("animal", animal)
        truth_arrays = {k[len("truth_"):]: _as_array(v.data) for k, v in scratch.items() if k.startswith("truth_")}
    finally:
        io.close()
    if responses.shape[0] != trial_image.shape[0]:
        raise ValueError(f"{p}: responses have {responses.shape[0]} rows but the trials table has "
                         f"{trial_image.shape[0]} trials")
    if responses.ndim != 2 or responses.shape[1] != neuron_ids.shape[0]:
        raise ValueError(f"{p}: responses shape {responses.shape} does not match {neuron_ids.shape[0]} neurons")
    truth = None
    if truth_arrays:
        from reprlab.v1.population import Population

        truth = Population.from_arrays(truth_arrays)
    try:
        return V1Dataset(images=images, responses=responses, trial_image=trial_image, tiers=tiers,
                         neuron_ids=neuron_ids, animal=animal, neuron_meta=meta, truth=truth, info=info)
    except ValueError as err:
        raise ValueError(f"{p}: {err}") from err


def _h5(v: np.ndarray) -> Any:
    """numpy unicode arrays become Python str / lists of str (HDF5 has no UTF-32 type)."""
    v = np.asarray(v)
    return v.tolist() if v.dtype.kind == "U" else v


def _scalar_text(data: Any) -> str:
    if isinstance(data, bytes):
        return data.decode()
    if hasattr(data, "shape") and getattr(data, "shape", None) == ():
        v = data[()]
        return v.decode() if isinstance(v, bytes) else str(v)
    return str(data)


def _as_array(data: Any) -> np.ndarray:
    a = np.asarray(data[()] if hasattr(data, "shape") else data)
    if a.dtype.kind in "OS":
        a = a.astype(str)
    return a
