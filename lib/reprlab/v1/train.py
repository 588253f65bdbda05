"""Fitting the digital twin: Poisson loss, Adam, validation-correlation early stopping.

Training follows the thesis' models (Ecker et al. 2019; Ustyuzhaninov et al. 2020/2022):
Poisson negative log-likelihood of the single-trial spike counts, Adam, early stopping on
the mean validation correlation with learning-rate decay (the best weights are restored at
every decay; training stops after ``lr_decay_steps`` decays without improvement), and
smoothness / sparsity / L1 regularisers (:mod:`reprlab.v1.cores`, :mod:`reprlab.v1.readouts`).

Several animals share one core. An epoch is one pass over the *distinct* training images
of all animals: images shown to several animals (identical pixels) go through the core once
per batch, and every animal's readout is applied to the trials that showed them. Readout
positions are initialised from the data (correlation of responses with local contrast
energy and luminance, :func:`estimate_rf_centers`).

Checkpoints (``out``) are written atomically after every epoch with the model, optimiser,
schedule and random-generator state; calling :func:`fit_twin` again with the same ``out``
resumes and gives the same result as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from reprlab._device import device as pick_device
from reprlab._device import seed_everything
from reprlab.io import load_checkpoint, save_checkpoint
from reprlab.scales import current_scale, pick
from reprlab.v1 import metrics
from reprlab.v1.model import CHECKPOINT_FORMAT, V1Twin, default_config

__all__ = [
    "PRESETS",
    "TwinData",
    "estimate_rf_centers",
    "evaluate_twin",
    "fit_twin",
    "poisson_loss",
    "twin_config",
]

TRAIN_FORMAT = "reprlab.v1.train/1"

#: Model and training sizes per scale. ``paper`` is the thesis' core (3 layers, 16 features x
#: 8 orientations, kernels 13, 5, 5, full resolution, dense factorised readout). ``default`` keeps
#: the thesis' depth, kernels and width (16 features x 8 orientations: 128-dimensional readouts;
#: receptive field 29 px with the 2 x 2 pooling) with a Gaussian readout, sized for ~15 min on two
#: free CPU cores: an epoch of 4,000 images costs ~100 s wall at 2 threads (compute-bound in the
#: core, so batch 32 buys twice the Adam steps of batch 64 for the same cost), at most 16 epochs with
#: two learning-rate decays (8 in practice). Measured on the default population against 8 features
#: (0.4x the fit time): test correlation 0.716 vs 0.699, and Spearman of the in silico suppression index
#: to the truth 0.44 vs 0.07 (the narrower core does not represent the surround; see the ch7 notebook).
#: Wider does not help further: 32 features (3x the time per epoch) gave suppression 0.40 vs 0.41 for 16
#: features trained 16 epochs, same measurement (``bench/results/v1_index_recovery_features32.json``).
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(
        features=4, num_rotations=8, kernel_sizes=[9, 5], downsample=1, pool=2, readout="gaussian",
        batch_size=32, lr=0.01, max_epochs=8, patience=2, lr_decay_steps=1, tolerance=1e-4,
    ),
    "default": dict(
        features=16, num_rotations=8, kernel_sizes=[13, 5, 5], downsample=1, pool=2, readout="gaussian",
        batch_size=32, lr=0.007, max_epochs=16, patience=1, lr_decay_steps=2, tolerance=5e-3,
    ),
    "paper": dict(
        features=16, num_rotations=8, kernel_sizes=[13, 5, 5], downsample=1, pool=1, readout="factorized",
        batch_size=64, lr=0.005, max_epochs=200, patience=5, lr_decay_steps=3, tolerance=1e-4,
    ),
}
#: Settings shared by all scales (override via ``fit_twin(..., **overrides)``).
COMMON: dict[str, Any] = dict(
    n_max=None, final_nonlinearity=True, nonlinearity="elu1", positive=False,
    init_sigma=0.1, smoothness=0.01, sparsity=1e-4, features_l1=1e-3, mask_l1=1e-3,
    lr_decay_factor=0.3, eval_batch_size=256, init_positions=True,
)


def poisson_loss(rates: torch.Tensor, counts: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean Poisson negative log-likelihood ``rate - y log(rate)`` (the ``log y!`` term dropped)."""
    return (rates - counts * torch.log(rates + eps)).mean()


# ---------------------------------------------------------------------------- data
def _image_key(img: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(img, dtype=np.float32).tobytes(), digest_size=16).digest()


class TwinData:
    """Datasets of several animals merged onto one table of distinct images.

    ``images`` (U, H, W) float32 holds every distinct image once; per animal, ``train`` /
    ``validation`` trials map to rows of ``images`` and ``test`` holds the repeats
    ``(I, R, N)`` with image rows ``test_images``.
    """

    def __init__(self, datasets: Sequence[Any]):
        datasets = list(datasets) if not hasattr(datasets, "responses") else [datasets]
        if not datasets:
            raise ValueError("fit_twin needs at least one V1Dataset, got an empty list")
        for ds in datasets:
            if not all(hasattr(ds, k) for k in ("images", "responses", "trial_image", "tiers", "animal")):
                raise ValueError(f"expected V1Dataset objects, got {type(ds).__name__}")
            if hasattr(ds, "validate"):
                ds.validate()
        names = [ds.animal for ds in datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"animal names must be unique across datasets, got {names}")
        shapes = {tuple(ds.images.shape[1:]) for ds in datasets}
        if len(shapes) != 1:
            raise ValueError(f"all datasets must share one image size, got {sorted(shapes)}")
        self.image_shape: tuple[int, int] = shapes.pop()  # type: ignore[assignment]
        self.datasets = datasets
        keys: dict[bytes, int] = {}
        rows: list[np.ndarray] = []
        self.animals: list[dict[str, Any]] = []
        for ds in datasets:
            local = np.empty(ds.n_images if hasattr(ds, "n_images") else len(ds.images), dtype=np.int64)
            for i, img in enumerate(ds.images):
                k = _image_key(img)
                if k not in keys:
                    keys[k] = len(rows)
                    rows.append(np.asarray(img, dtype=np.float32))
                local[i] = keys[k]
            entry: dict[str, Any] = {"name": ds.animal, "n_neurons": int(ds.responses.shape[1])}
            for tier in ("train", "validation"):
                m = np.asarray(ds.tiers) == tier
                entry[tier] = (local[np.asarray(ds.trial_image)[m]], np.asarray(ds.responses[m], np.float32))
            if len(entry["train"][0]) == 0:
                raise ValueError(f"animal {ds.animal!r}: the train tier is empty")
            if len(entry["validation"][0]) < 2:
                raise ValueError(
                    f"animal {ds.animal!r}: need at least 2 validation trials for early stopping, "
                    f"found {len(entry['validation'][0])}"
                )
            rep, test_local = ds.repeats_by_image("test", return_images=True)
            entry["test"] = np.asarray(rep, np.float32)
            entry["test_images"] = local[test_local]
            entry["neuron_ids"] = np.asarray(ds.neuron_ids)
            entry["groups"] = _families(ds)
            self.animals.append(entry)
        self.images = np.stack(rows).astype(np.float32)
        train_rows = np.unique(np.concatenate([a["train"][0] for a in self.animals]))
        self.train_rows = train_rows
        self.image_mean = float(self.images[train_rows].mean())
        self.image_std = float(self.images[train_rows].std()) or 1.0
        # per animal: train trials sorted by image row, CSR offsets over all rows
        U = len(self.images)
        for a in self.animals:
            rows_t, resp = a["train"]
            order = np.argsort(rows_t, kind="stable")
            a["train_sorted"] = (rows_t[order], resp[order])
            counts = np.bincount(rows_t, minlength=U)
            a["train_start"] = np.concatenate([[0], np.cumsum(counts)[:-1]])
            a["train_count"] = counts

    @property
    def n_neurons(self) -> int:
        return sum(a["n_neurons"] for a in self.animals)

    def fingerprint(self) -> str:
        """Hash of the data layout (animals, neurons, trial counts, image table)."""
        h = hashlib.sha256()
        for a in self.animals:
            h.update(a["name"].encode())
            h.update(np.asarray(a["neuron_ids"]).tobytes())
            h.update(np.asarray(a["train"][0]).tobytes())
            h.update(np.asarray(a["train"][1][: min(50, len(a["train"][1]))]).tobytes())
        h.update(self.images[: min(20, len(self.images))].tobytes())
        return h.hexdigest()[:16]

    def batch_trials(self, a: dict[str, Any], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training trials of animal ``a`` whose image is in ``rows``: (position in batch, trial)."""
        counts = a["train_count"][rows]
        if counts.sum() == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        pos = np.repeat(np.arange(len(rows)), counts)
        starts = np.repeat(a["train_start"][rows], counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return pos, starts + within


def _families(ds: Any) -> np.ndarray | None:
    meta = getattr(ds, "neuron_meta", None) or {}
    if "family" in meta:
        return np.asarray(meta["family"]).astype(str)
    truth = getattr(ds, "truth", None)
    if truth is not None and hasattr(truth, "family"):
        try:
            return np.asarray(truth.family).astype(str)
        except Exception:  # noqa: BLE001 - a stub population without families
            return None
    return None


# ---------------------------------------------------------------------------- RF init
def estimate_rf_centers(
    images: np.ndarray | torch.Tensor,
    responses: np.ndarray | torch.Tensor,
    grid_shape: tuple[int, int] | None = None,
    blur: float = 1.5,
) -> np.ndarray:
    """Rough receptive-field centres ``(N, 2)`` as input pixels ``(x, y)`` from single trials.

    Correlates each neuron's responses with two local image statistics on a coarse grid -
    local luminance and local contrast energy (squared deviation from a blurred copy) - and
    takes the softmax-weighted location of the summed squared correlations. Used only to
    initialise readout positions.
    """
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(responses), dtype=torch.float32)
    if x.dim() != 3 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need images (T, H, W) and responses (T, N), got {tuple(x.shape)}, {tuple(y.shape)}")
    T, H, W = x.shape
    gh, gw = grid_shape or (max(1, H // 2), max(1, W // 2))
    k = int(2 * math.ceil(2 * blur) + 1)
    g = torch.exp(-((torch.arange(k) - k // 2) ** 2) / (2 * blur**2))
    g = g / g.sum()

    def smooth(z: torch.Tensor) -> torch.Tensor:
        z = F.conv2d(F.pad(z[:, None], (k // 2, k // 2, 0, 0), mode="replicate"), g.view(1, 1, 1, k))
        z = F.conv2d(F.pad(z, (0, 0, k // 2, k // 2), mode="replicate"), g.view(1, 1, k, 1))
        return z[:, 0]

    maps = []
    for s in range(0, T, 1024):
        xb = x[s:s + 1024]
        lum = smooth(xb)
        energy = smooth((xb - lum) ** 2)
        both = torch.stack([lum, energy], 1)
        maps.append(F.adaptive_avg_pool2d(both, (gh, gw)).flatten(2))  # (t, 2, P)
    m = torch.cat(maps)  # (T, 2, P)
    m = (m - m.mean(0)) / m.std(0).clamp_min(1e-6)
    yz = (y - y.mean(0)) / y.std(0).clamp_min(1e-6)
    corr = torch.einsum("tkp,tn->knp", m, yz) / T  # (2, N, P)
    score = (corr**2).sum(0)  # (N, P)
    temp = score.amax(1, keepdim=True).clamp_min(1e-8) / 8.0
    wts = torch.softmax(score / temp, dim=1).view(-1, gh, gw)
    cy = (torch.arange(gh, dtype=torch.float32) + 0.5) * H / gh - 0.5
    cx = (torch.arange(gw, dtype=torch.float32) + 0.5) * W / gw - 0.5
    px = (wts.sum(1) * cx).sum(1)
    py = (wts.sum(2) * cy).sum(1)
    return torch.stack([px, py], 1).numpy()


# ---------------------------------------------------------------------------- config
def twin_config(data: TwinData, scale: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Merged training settings (scale preset + common + overrides), validated."""
    settings = {**COMMON, **pick(PRESETS, scale)}
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ValueError(f"unknown fit_twin settings {unknown}; known: {sorted(settings)}")
    settings.update(overrides)
    settings["scale"] = current_scale(scale)
    H, W = data.image_shape
    ds, pool = int(settings["downsample"]), int(settings["pool"])
    if ds < 1 or pool < 1 or H % (ds * pool) or W % (ds * pool):
        raise ValueError(f"downsample={ds} x pool={pool} must divide the image size {H}x{W}")
    return settings


def _model_config(data: TwinData, s: dict[str, Any]) -> dict[str, Any]:
    return default_config(
        [(a["name"], a["n_neurons"]) for a in data.animals],
        input_shape=data.image_shape,
        core=dict(features=s["features"], num_rotations=s["num_rotations"], kernel_sizes=list(s["kernel_sizes"]),
                  n_max=s["n_max"], final_nonlinearity=s["final_nonlinearity"], pool=int(s["pool"])),
        readout={"kind": s["readout"], "positive": s["positive"], "nonlinearity": s["nonlinearity"],
                 **({"init_sigma": s["init_sigma"]} if s["readout"] == "gaussian" else {})},
        downsample=int(s["downsample"]),
        image_mean=data.image_mean,
        image_std=data.image_std,
    )


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def _predict_rows(model: V1Twin, images: torch.Tensor, rows: np.ndarray, animals: Sequence[str],
                  batch_size: int) -> dict[str, np.ndarray]:
    """Eval-mode predictions of each animal's neurons for the image rows ``rows``."""
    was = model.training
    model.eval()
    out: dict[str, list[np.ndarray]] = {a: [] for a in animals}
    try:
        for s in range(0, len(rows), batch_size):
            feats = model._features(images[torch.as_tensor(rows[s:s + batch_size])])
            for a in animals:
                out[a].append(model.readout(a)(feats).cpu().numpy())
    finally:
        model.train(was)
    return {a: (np.concatenate(v) if v else np.zeros((0, model.n_neurons(a)), np.float32)) for a, v in out.items()}


def _validation_correlations(model: V1Twin, data: TwinData, images: torch.Tensor, batch_size: int) -> np.ndarray:
    rows = np.unique(np.concatenate([a["validation"][0] for a in data.animals]))
    lookup = np.full(len(data.images), -1, np.int64)
    lookup[rows] = np.arange(len(rows))
    preds = _predict_rows(model, images, rows, [a["name"] for a in data.animals], batch_size)
    corrs = []
    for a in data.animals:
        r_rows, resp = a["validation"]
        p = preds[a["name"]][lookup[r_rows]]
        corrs.append(metrics.correlation(p, resp, axis=0))
    return np.concatenate(corrs)


def evaluate_twin(model: V1Twin, data: TwinData | Sequence[Any], batch_size: int = 256) -> dict[str, Any]:
    """Test-set measures per neuron (all animals concatenated) and summaries per family.

    Returns ``{"per_neuron": {measure: (N,)}, "animal": (N,), "family": (N,) or None,
    "summary": {...}}``.
    """
    data = data if isinstance(data, TwinData) else TwinData(data)
    images = torch.as_tensor(data.images, device=model.device)
    per: dict[str, list[np.ndarray]] = {}
    animal_col, fam_col = [], []
    have_fam = all(a["groups"] is not None for a in data.animals)
    for a in data.animals:
        pred = _predict_rows(model, images, a["test_images"], [a["name"]], batch_size)[a["name"]]
        m = metrics.evaluate(pred, a["test"])
        for k, v in m.items():
            per.setdefault(k, []).append(v)
        animal_col.append(np.full(a["n_neurons"], a["name"]))
        if have_fam:
            fam_col.append(a["groups"])
    per_neuron = {k: np.concatenate(v) for k, v in per.items()}
    fam = np.concatenate(fam_col) if have_fam else None
    summary = metrics.summarize(per_neuron, fam)
    return {"per_neuron": per_neuron, "animal": np.concatenate(animal_col), "family": fam, "summary": summary}


# ---------------------------------------------------------------------------- fitting
def _rng_state(gen: torch.Generator) -> torch.Tensor:
    return gen.get_state()


def fit_twin(
    datasets: Sequence[Any],
    scale: str | None = None,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    callback: Callable[[int, float, dict], bool | None] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    evaluate: bool = True,
    **overrides: Any,
) -> tuple[V1Twin, dict[str, Any]]:
    """Fit one shared-core twin to the datasets (one per animal); return ``(model, report)``.

    ``out``: checkpoint path, written atomically after every epoch; if it exists (same data
    and settings) training resumes from it. ``callback(epoch, train_loss, state)`` is called
    after every epoch (``state`` holds the validation correlation and the model); returning
    True stops training (the best weights so far are kept). ``overrides`` change entries of
    :data:`PRESETS` / :data:`COMMON`. The model is returned in eval mode with the weights of
    the best validation epoch; ``report`` has timings, the training history and test metrics.
    """
    t_start = time.perf_counter()
    data = TwinData(datasets)
    s = twin_config(data, scale, **overrides)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    dev = pick_device(device)
    gen = seed_everything(seed)
    model_cfg = _model_config(data, s)
    model = V1Twin(model_cfg, generator=gen)
    fingerprint = data.fingerprint()
    settings_key = {k: v for k, v in s.items() if k not in ("eval_batch_size", "max_epochs")}

    images = torch.as_tensor(data.images)
    if s["init_positions"]:
        for a in data.animals:
            rows, resp = a["train"]
            n = min(len(rows), 20000)
            xy = estimate_rf_centers(data.images[rows[:n]], resp[:n])
            ro = model.readout(a["name"])
            ro.set_positions(model.input_px_to_feature_px(torch.as_tensor(xy)))
    for a in data.animals:
        model.readout(a["name"]).init_bias(torch.as_tensor(a["train"][1].mean(0)))
    model.to(dev)
    images = images.to(dev)

    opt = torch.optim.Adam(model.parameters(), lr=s["lr"])
    state: dict[str, Any] = dict(epoch=0, best_score=-math.inf, best_epoch=0, bad_epochs=0, decays=0,
                                 lr=s["lr"], history=[], stopped=False, seconds_per_epoch=[])
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ckpt = Path(out) if out is not None else None
    resumed = False
    if ckpt is not None and ckpt.exists():
        saved = load_checkpoint(ckpt, map_location="cpu")
        if saved.get("format") != TRAIN_FORMAT:
            raise ValueError(f"{ckpt} is not a twin training checkpoint (format {saved.get('format')!r})")
        if saved.get("fingerprint") != fingerprint or saved.get("settings_key") != settings_key or saved.get("seed") != seed:
            raise ValueError(
                f"{ckpt} was written for different data, settings or seed; remove it or choose another --out"
            )
        model.load_state_dict(saved["model"]["state_dict"])
        opt.load_state_dict(saved["optimizer"])
        best_state = {k: v.to(dev) for k, v in saved["best_state"].items()}
        state.update(saved["state"])
        gen.set_state(saved["generator"])
        resumed = True

    def write_checkpoint() -> None:
        if ckpt is None:
            return
        save_checkpoint(ckpt, {
            "format": TRAIN_FORMAT, "seed": seed, "fingerprint": fingerprint, "settings_key": settings_key,
            "settings": s,
            "model": {"format": CHECKPOINT_FORMAT, "config": model.config,
                      "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}},
            "best_state": {k: v.detach().cpu() for k, v in best_state.items()},
            "optimizer": opt.state_dict(), "state": state, "generator": _rng_state(gen),
        })

    for group in opt.param_groups:
        group["lr"] = state["lr"]
    bs = int(s["batch_size"])
    train_rows = data.train_rows
    names = [a["name"] for a in data.animals]
    gaussian = s["readout"] == "gaussian"
    reg_kw = dict(smoothness=s["smoothness"], sparsity=s["sparsity"], features_l1=s["features_l1"], mask_l1=s["mask_l1"])
    n_steps = math.ceil(len(train_rows) / bs)

    interrupted = False
    while not state["stopped"] and state["epoch"] < s["max_epochs"]:
        t_epoch = time.perf_counter()
        model.train()
        perm = train_rows[torch.randperm(len(train_rows), generator=gen).numpy()]
        total, count = 0.0, 0
        bar = tqdm(range(n_steps), desc=f"twin epoch {state['epoch'] + 1}", disable=not progress, leave=False)
        for step in bar:
            rows = perm[step * bs:(step + 1) * bs]
            feats = model._features(images[torch.as_tensor(rows, device=dev)])
            loss_sum, entries = feats.new_zeros(()), 0
            for a in data.animals:
                pos, trials = data.batch_trials(a, rows)
                ro = model.readout(a["name"])
                noise = torch.randn(ro.n_neurons, 2, generator=gen).to(dev) if gaussian else None
                if len(pos) == 0:
                    continue
                rates = ro(feats, noise)[torch.as_tensor(pos, device=dev)]
                counts = torch.as_tensor(a["train_sorted"][1][trials], device=dev)
                loss_sum = loss_sum + poisson_loss(rates, counts) * counts.numel()
                entries += counts.numel()
            loss = loss_sum / max(entries, 1) + model.regularizer(**reg_kw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.constrain()
            total += float(loss.detach()) * len(rows)
            count += len(rows)
            if progress:
                bar.set_postfix(loss=f"{total / count:.4f}")
        train_loss = total / max(count, 1)
        val_corr = _validation_correlations(model, data, images, int(s["eval_batch_size"]))
        score = float(np.nanmean(val_corr))
        state["epoch"] += 1
        # the best weights are always kept; an epoch counts as "bad" (towards lr decay / stopping)
        # unless it improves the best validation correlation by more than ``tolerance``
        gain = score - state["best_score"]
        if gain > 0:
            state.update(best_score=score, best_epoch=state["epoch"])
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if gain > s["tolerance"]:
            state["bad_epochs"] = 0
        else:
            state["bad_epochs"] += 1
            if state["bad_epochs"] >= s["patience"]:
                if state["decays"] >= s["lr_decay_steps"]:
                    state["stopped"] = True
                else:
                    model.load_state_dict(best_state)
                    state["decays"] += 1
                    state["bad_epochs"] = 0
                    state["lr"] = state["lr"] * s["lr_decay_factor"]
                    for group in opt.param_groups:
                        group["lr"] = state["lr"]
        seconds = time.perf_counter() - t_epoch
        state["seconds_per_epoch"].append(seconds)
        state["history"].append({"epoch": state["epoch"], "train_loss": train_loss, "val_correlation": score,
                                 "lr": opt.param_groups[0]["lr"], "seconds": seconds})
        if progress:
            tqdm.write(f"epoch {state['epoch']}: loss {train_loss:.4f} val corr {score:.4f} "
                       f"lr {opt.param_groups[0]['lr']:.2g} ({seconds:.1f}s)", file=sys.stderr)
        write_checkpoint()
        if callback is not None and callback(state["epoch"], train_loss, {"val_correlation": score, "model": model,
                                                                           "history": state["history"]}):
            interrupted = True  # not saved: calling fit_twin again with the same out resumes
            break

    model.load_state_dict(best_state)
    model.eval()
    spe = state["seconds_per_epoch"]
    report: dict[str, Any] = {
        "scale": s["scale"],
        "seed": seed,
        "device": str(dev),
        "resumed": resumed,
        "interrupted": interrupted,
        "converged": bool(state["stopped"]),
        "n_animals": len(names),
        "n_neurons": data.n_neurons,
        "n_train_images": int(len(train_rows)),
        "n_train_trials": int(sum(len(a["train"][0]) for a in data.animals)),
        "steps_per_epoch": n_steps,
        "epochs": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_val_correlation": state["best_score"],
        "seconds_per_epoch": float(np.median(spe)) if spe else float("nan"),
        "seconds_per_step": float(np.median(spe)) / max(n_steps, 1) if spe else float("nan"),
        "history": state["history"],
        "settings": s,
    }
    if evaluate:
        ev = evaluate_twin(model, data, int(s["eval_batch_size"]))
        report["test"] = ev["summary"]
    report["seconds_total"] = time.perf_counter() - t_start
    return model, report
