"""Diagnostics: what limits the recovery of the in silico indices (chapter 7, Spearman vs truth).

Separates the measurement pipeline from the twin, on the neurons of the bundle's verification
set (same selection rule as :func:`reprlab.v1.twin._verification`):

* ``truth_pipeline``: the ground truth run through exactly the twin's pipeline as if it were the
  twin (``optimal_gabors`` grid search + refinement from the RF centre, then the in silico
  experiments) - :class:`reprlab.v1.insilico.PopulationModel` is a response model like the twin;
* ``truth_reference``: the "true" indices of the bundle (:func:`reprlab.v1.twin._truth_indices`:
  an experimenter's local search around the mapped RF, then the same experiments);
* ``planted``: the population's parameters (surround strength, COI strength, 1 - phase
  sensitivity) - what the indices are meant to rank.

With ``--model`` (a twin fitted to ``--data``, ``python -m reprlab v1 fit``) also:

* ``twin_pipeline``: the twin through the same pipeline; Spearman vs both truths;
* ``same_stimuli``: twin and truth on *identical* stimuli (the truth's optimal Gabors at the
  experiment's sizes): suppression index from identical size series, size-curve correlation per
  family - isolates the twin's surround from differences in the optimal Gabor;
* ``natural_probe``: :func:`reprlab.v1.insilico.natural_surround_probe` on held-out natural images
  for twin and truth, per family (is the surround learned on the training distribution?);
* ``reach``: fraction of each suppressed neuron's surround pool beyond the core's receptive
  field radius; ``truth_aperture``: the truth seen only through that field (an upper bound for
  any twin of the architecture);
* ``surround_in_prediction`` (``..._gabor_mixtures``): on new natural images (on new Gabor
  mixtures), does the twin predict the suppressed neurons or the same neurons without their surround?
* ``feature_probe``: do the core's features (at the RF, and averaged over rings around it)
  linearly predict the truth's log rate with its surround better than without?
* ``verification``: the bundle's Fig. 5 tuning-curve fraction of oracle (``twin._verification``);
  ``neuron_codes``: binarised indices vs the true family flags (neuron-level 8-way code).

Usage (the results in ``bench/results``: ``v1_index_recovery.json`` default data and twin,
``..._noiseless.json`` a twin fitted to the noise-free copy, ``..._legacy_surround.json`` the
population's former log-Gabor surround, ``..._modulated.json`` a twin fitted to a copy whose
training images are half contrast-modulated, ``..._parametric.json`` one fitted to a copy with a
quarter of its training images replaced by Gabor mixtures)::

    python -m reprlab v1 simulate --scale default --out D
    python -m reprlab v1 fit D --out M --threads 1 --no-glm        # optional (the twin parts)
    python bench/bench_v1_index_recovery.py --data D [--model M] [--n-truth 60] [--work W]
    python bench/bench_v1_index_recovery.py --write-noiseless D D0   # then fit D0 -> M0
    python bench/bench_v1_index_recovery.py --data D --model M0 --parts twin,features \
        --out bench/results/v1_index_recovery_noiseless.json
    python bench/bench_v1_index_recovery.py --legacy-surround --parts truth,aperture --n-truth 30 \
        --out bench/results/v1_index_recovery_legacy_surround.json
    python bench/bench_v1_index_recovery.py --write-modulated D DM
    python -m reprlab v1 fit DM --out MM --scale default --threads 2 --no-glm
    python bench/bench_v1_index_recovery.py --data DM --model MM --parts twin,verification \
        --out bench/results/v1_index_recovery_modulated.json
    python bench/bench_v1_index_recovery.py --write-parametric D DP
    python -m reprlab v1 fit DP --out MP --scale default --threads 2 --no-glm
    python bench/bench_v1_index_recovery.py --data DP --model MP --parts twin,verification \
        --out bench/results/v1_index_recovery_parametric.json

Prints JSON (and writes ``--out``, default ``bench/results/v1_index_recovery.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

INDEX_KEYS = ("phase", "suppression", "plaid", "contrast", "orientation")


def _spearman(a: dict, b: dict, mask: np.ndarray | None = None) -> dict:
    from reprlab.v1 import analysis as an

    keys = [k for k in INDEX_KEYS if k in a and k in b]
    m = slice(None) if mask is None else mask
    return {k: v["rho"] for k, v in an.spearman_table({k: np.asarray(a[k])[m] for k in keys},
                                                      {k: np.asarray(b[k])[m] for k in keys}).items()}


def _groups(pop) -> dict[str, np.ndarray]:
    fam = pop.family
    gl = pop.gabor_like.numpy()
    return {"all": np.ones(len(fam), bool), "gabor_like": gl}


def _planted(pop) -> dict[str, np.ndarray]:
    return {"suppression": pop.surround_strength.numpy().astype(np.float64),
            "plaid": pop.coi_strength.numpy().astype(np.float64),
            "phase": pop.phase_sensitivity.numpy().astype(np.float64)}


def _per_family(values: np.ndarray, fam: np.ndarray) -> dict[str, float]:
    return {f: float(np.nanmedian(values[fam == f])) for f in sorted(set(fam))}


def surround_reach(pop, radius: float) -> np.ndarray:
    """Fraction of each neuron's surround annulus weight (``G(s_out) - G(s_in)``, unbounded
    plane) beyond ``radius`` pixels of the RF centre; NaN for neurons without a surround."""
    s_in = pop.size.numpy().astype(np.float64) / 2
    s_out = s_in * pop.surround_ratio.numpy()
    num = s_out**2 * np.exp(-radius**2 / (2 * s_out**2)) - s_in**2 * np.exp(-radius**2 / (2 * s_in**2))
    frac = num / np.maximum(s_out**2 - s_in**2, 1e-12)
    return np.where(pop.surround_suppressed.numpy(), frac, np.nan)


def _ridge_cv_r2(X: np.ndarray, y: np.ndarray, alpha: float = 1.0, folds: int = 5) -> float:
    """5-fold cross-validated R^2 of ridge regression (standardised X, intercept)."""
    n = len(y)
    pred = np.zeros(n)
    part = np.arange(n) % folds
    for k in range(folds):
        tr, te = part != k, part == k
        mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-6
        A = (X[tr] - mu) / sd
        w = np.linalg.solve(A.T @ A + alpha * len(A) * np.eye(A.shape[1]), A.T @ (y[tr] - y[tr].mean()))
        pred[te] = ((X[te] - mu) / sd) @ w + y[tr].mean()
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def feature_probe(model, sub, images: np.ndarray, rings: tuple = ((2, 4), (4, 7))) -> dict[str, np.ndarray]:
    """Do the twin core's features carry the surround? Per neuron, cross-validated ridge R^2 of the
    truth's noise-free log rate on natural images from the core features at the neuron's RF
    (``centre``) vs those plus the features averaged over rings of feature pixels around it
    (``centre_rings``; signed weights, i.e. a subtractive surround a point readout cannot form).
    Also the same for the neuron without its surround (``nosur_*``)."""
    import dataclasses

    x = torch.as_tensor(images)
    with torch.no_grad():
        feats = torch.cat([model.core_features(x[s:s + 128]) for s in range(0, len(x), 128)])
    B, Fd, O, h, w = feats.shape
    feats = feats.reshape(B, Fd * O, h, w).numpy()
    pos = model.input_px_to_feature_px(sub.center.float()).numpy()
    nosur = dataclasses.replace(sub, surround_strength=torch.zeros(len(sub)), _cache={})
    y_all = np.log(sub.rate(x).numpy() + 1e-3)
    y_ns = np.log(nosur.rate(x).numpy() + 1e-3)
    yy, xx = np.mgrid[0:h, 0:w]
    out = {k: np.zeros(len(sub)) for k in ("centre", "centre_rings", "nosur_centre", "nosur_centre_rings")}
    for i in range(len(sub)):
        cx, cy = pos[i]
        d = np.hypot(xx - cx, yy - cy)
        ix, iy = int(np.clip(round(cx), 0, w - 1)), int(np.clip(round(cy), 0, h - 1))
        Xc = feats[:, :, iy, ix]
        Xr = [feats[:, :, (d >= a) & (d < b)].mean(-1) for a, b in rings]
        Xcr = np.concatenate([Xc, *Xr], 1)
        out["centre"][i] = _ridge_cv_r2(Xc, y_all[:, i])
        out["centre_rings"][i] = _ridge_cv_r2(Xcr, y_all[:, i])
        out["nosur_centre"][i] = _ridge_cv_r2(Xc, y_ns[:, i])
        out["nosur_centre_rings"][i] = _ridge_cv_r2(Xcr, y_ns[:, i])
    return out


def use_legacy_surround() -> None:
    """Install the surround energy bank of the population before this diagnosis (log-Gabor
    filters, ~0.7 octave std, bands 0.05-0.23 cycles/px), to measure the pipeline on that truth."""
    import math

    from reprlab.v1 import population as P

    P.ENERGY_BANDS = (0.05, 0.075, 0.11, 0.16, 0.23)
    P._BANK_CACHE.clear()

    def bank(bi: int, PH: int, PW: int, device: torch.device) -> torch.Tensor:
        fy = torch.fft.fftfreq(PH, device=device)[:, None].expand(PH, PW)
        fx = torch.fft.fftfreq(PW, device=device)[None, :].expand(PH, PW)
        f = torch.sqrt(fx**2 + fy**2)
        radial = torch.exp(-torch.log(f.clamp_min(1e-6) / P.ENERGY_BANDS[bi]) ** 2 / (2 * 0.5**2))
        radial[0, 0] = 0.0
        ang = torch.atan2(fy, fx)
        sd = 0.6 * math.pi / P.N_ENERGY_ORIENTATIONS
        out = []
        for o in range(P.N_ENERGY_ORIENTATIONS):
            th = math.pi * o / P.N_ENERGY_ORIENTATIONS
            mu = math.atan2(math.cos(th), -math.sin(th))
            d = torch.remainder(ang - mu + math.pi, 2 * math.pi) - math.pi
            out.append(radial * torch.exp(-d**2 / (2 * sd**2)))
        return torch.stack(out).to(torch.complex64)

    P._oriented_bank = bank


def write_noiseless(src: str, dst: str) -> dict:
    """Copy simulated Sensorium folder(s) ``src`` to ``dst`` with every response replaced by the
    true rate (no spike noise): a twin fitted to it shows what the architecture and training
    learn when noise is not the limit (``--write-noiseless SRC DST``)."""
    import dataclasses

    from reprlab.v1.cli import _read_folders
    from reprlab.v1.data import write_sensorium

    out = []
    for ds in _read_folders(Path(src)):
        rates = ds.truth.rate(torch.as_tensor(ds.images)).numpy()  # (images, neurons)
        clean = dataclasses.replace(ds, responses=rates[ds.trial_image].astype(np.float32))
        write_sensorium(clean, Path(dst) / ds.animal, overwrite=True)
        out.append({"animal": ds.animal, "n_trials": int(len(ds.trial_image))})
    return {"noiseless_copy": dst, "animals": out}


def contrast_envelopes(n: int, shape: tuple[int, int], rng: np.random.Generator,
                       sigma_px: tuple[float, float] = (4.0, 12.0), steepness: float = 4.0) -> np.ndarray:
    """``n`` smooth random contrast envelopes in (0, 1): a logistic of blurred white noise (blur
    std log-uniform in ``sigma_px``, z-scored, times ``steepness``), so an image multiplied by one
    keeps its content in some regions and is grey in others."""
    from scipy.ndimage import gaussian_filter

    out = np.empty((n,) + tuple(shape))
    for k in range(n):
        sigma = float(np.exp(rng.uniform(np.log(sigma_px[0]), np.log(sigma_px[1]))))
        field = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
        out[k] = 1.0 / (1.0 + np.exp(-steepness * (field - field.mean()) / field.std()))
    return out


def _choose_images(src: str, fraction: float, seed: int):
    """Read simulated folder(s) ``src`` (one shared image set) and draw a ``fraction`` of its
    training/validation images: (datasets, images, fit image indices, chosen indices, rng)."""
    from reprlab.v1.cli import _read_folders

    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    datasets = _read_folders(Path(src))
    images = datasets[0].images
    if any(ds.images.shape != images.shape or not np.array_equal(ds.images, images) for ds in datasets):
        raise ValueError(f"all animals in {src} must share one image set (a simulated dataset)")
    fit_images = np.unique(datasets[0].trial_image[datasets[0].tiers != "test"])
    rng = np.random.default_rng(seed)
    chosen = fit_images[rng.random(len(fit_images)) < fraction]
    return datasets, images, fit_images, chosen, rng


def _write_with_images(datasets, new: np.ndarray, dst: str, seed: int, info_key: str, info: dict) -> list[dict]:
    """Write ``datasets`` to ``dst`` with images ``new``: responses re-drawn from the truth
    (Poisson at the new rates; unchanged images get new draws too), ``info[info_key] = info``."""
    import dataclasses

    from reprlab.v1.data import write_sensorium

    out = []
    for a, ds in enumerate(datasets):
        rates = ds.truth.rate(torch.as_tensor(new)).numpy()  # (images, neurons)
        gen = torch.Generator().manual_seed(seed * 1000 + a + 1)
        spikes = ds.truth.spikes(torch.as_tensor(rates[ds.trial_image]), generator=gen).numpy()
        copy = dataclasses.replace(ds, images=new, responses=spikes.astype(np.float32), info={**ds.info, info_key: info})
        write_sensorium(copy, Path(dst) / ds.animal, overwrite=True)
        out.append({"animal": ds.animal, "n_trials": int(len(ds.trial_image))})
    return out


def write_contrast_modulated(src: str, dst: str, fraction: float = 0.5, seed: int = 0) -> dict:
    """Copy simulated folder(s) ``src`` to ``dst`` with a ``fraction`` of the training and
    validation images multiplied by :func:`contrast_envelopes` (RMS contrast kept), responses
    re-drawn from the truth (Poisson, same rates elsewhere); test images unchanged. Centre and
    surround contrast then vary independently across images: does a twin learn the surround when
    natural images decorrelate it from the centre? (``--write-modulated SRC DST``)."""
    datasets, images, fit_images, chosen, rng = _choose_images(src, fraction, seed)
    new = images.astype(np.float64)
    env = contrast_envelopes(len(chosen), images.shape[1:], rng)
    mod = new[chosen] * env
    mod -= mod.mean(axis=(1, 2), keepdims=True)
    mod *= new[chosen].std(axis=(1, 2), keepdims=True) / np.maximum(mod.std(axis=(1, 2), keepdims=True), 1e-6)
    new[chosen] = mod
    new = np.clip(new, -0.5, 0.5).astype(np.float32)
    info = {"fraction": fraction, "seed": seed, "n_images": int(len(chosen))}
    out = _write_with_images(datasets, new, dst, seed, "contrast_modulated", info)
    return {"modulated_copy": dst, "n_modulated_images": int(len(chosen)), "n_fit_images": int(len(fit_images)),
            "animals": out}


def gabor_mixtures(n: int, shape: tuple[int, int], rng: np.random.Generator, max_patches: int = 3,
                   plaid_fraction: float = 0.3) -> np.ndarray:
    """``n`` images of 1..``max_patches`` Gabor patches (eq. (1) of the Methods; a ``plaid_fraction``
    of them plaids) at uniform positions, with log-uniform sizes (σ 3-40 px) and spatial
    frequencies (0.03-0.2 cycles/px) and uniform orientation, phase and contrast (0.2-1), summed
    and clipped to [-0.5, 0.5]. Patches of every size around every position drive centres and
    surrounds (and orthogonal components) independently - the parametric stimuli of option (ii)."""
    from reprlab.v1 import stimuli as stim

    out = np.zeros((n,) + tuple(shape))
    h, w = shape
    for k in range(n):
        for _ in range(int(rng.integers(1, max_patches + 1))):
            args = (rng.uniform(0, w), rng.uniform(0, h), float(np.exp(rng.uniform(np.log(3), np.log(40)))),
                    float(np.exp(rng.uniform(np.log(0.03), np.log(0.2)))), rng.uniform(0, np.pi),
                    rng.uniform(0, 2 * np.pi))
            contrast = rng.uniform(0.2, 1.0)
            if rng.random() < plaid_fraction:
                img = stim.plaid(*args, contrast=contrast / 2, contrast_orthogonal=rng.uniform(0.1, 0.5), shape=shape)
            else:
                img = stim.gabor(*args, contrast=contrast, shape=shape)
            out[k] += img.numpy()
    return np.clip(out, -0.5, 0.5)


def write_parametric(src: str, dst: str, fraction: float = 0.25, seed: int = 0) -> dict:
    """Copy simulated folder(s) ``src`` to ``dst`` with a ``fraction`` of the training and
    validation images replaced by :func:`gabor_mixtures`, responses re-drawn from the truth; test
    images unchanged (``--write-parametric SRC DST``). Not the thesis' protocol (natural images
    only): it measures whether parametric stimuli in training let a twin learn the surround."""
    datasets, images, fit_images, chosen, rng = _choose_images(src, fraction, seed)
    new = images.copy()
    new[chosen] = gabor_mixtures(len(chosen), images.shape[1:], rng).astype(np.float32)
    info = {"fraction": fraction, "seed": seed, "n_images": int(len(chosen)), "stimuli": "gabor_mixtures"}
    out = _write_with_images(datasets, new, dst, seed, "parametric", info)
    return {"parametric_copy": dst, "n_parametric_images": int(len(chosen)), "n_fit_images": int(len(fit_images)),
            "animals": out}


DEFAULT_PARTS = "truth,aperture,twin,verification,features"  # the twin parts run only with --model


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="simulated Sensorium folder(s) (default: simulate in memory)")
    ap.add_argument("--model", default=None, help="twin fitted to --data (enables the twin part)")
    ap.add_argument("--scale", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-verify", type=int, default=200)
    ap.add_argument("--n-truth", type=int, default=60,
                    help="neurons (of the verification set) for the slow truth-through-pipeline run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parts", default=DEFAULT_PARTS,
                    help="comma list: truth, aperture (truth through the core field), twin and verification (need --model)")
    ap.add_argument("--aperture", type=float, default=14.0,
                    help="aperture half-width (px) without --model (default: the default core's 14 px)")
    ap.add_argument("--legacy-surround", action="store_true",
                    help="simulate with the population's former log-Gabor surround bank (before/after figures)")
    ap.add_argument("--work", default=None, help="cache folder for the slow truth runs (npz per part)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "v1_index_recovery.json"))
    ap.add_argument("--write-noiseless", nargs=2, metavar=("SRC", "DST"), default=None,
                    help="only write a noise-free copy of simulated folder(s) SRC to DST and exit")
    ap.add_argument("--write-modulated", nargs=2, metavar=("SRC", "DST"), default=None,
                    help="only write a copy of SRC with half the training images contrast-modulated and exit")
    ap.add_argument("--write-parametric", nargs=2, metavar=("SRC", "DST"), default=None,
                    help="only write a copy of SRC with a quarter of the training images Gabor mixtures and exit")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    known = set(DEFAULT_PARTS.split(","))
    if parts - known:
        ap.error(f"--parts: unknown {sorted(parts - known)}; expected a comma list of {sorted(known)}")
    if parts & {"verification", "features"} and "twin" not in parts:
        ap.error("--parts verification and features run inside the twin part: include twin")
    if parts & {"twin", "verification", "features"} and not args.model and args.parts != DEFAULT_PARTS:
        ap.error("--parts twin, verification and features need --model (a twin fitted to --data)")
    torch.set_num_threads(args.threads)
    if args.write_noiseless or args.write_modulated or args.write_parametric:
        if args.write_noiseless:
            rep = write_noiseless(*args.write_noiseless)
        elif args.write_modulated:
            rep = write_contrast_modulated(*args.write_modulated, seed=args.seed)
        else:
            rep = write_parametric(*args.write_parametric, seed=args.seed)
        print(json.dumps(rep, indent=2))
        return rep

    from reprlab.v1 import insilico as ins
    from reprlab.v1.population import Population
    from reprlab.v1.twin import _concat_populations, _truth_indices

    t_all = time.perf_counter()
    if args.legacy_surround:
        if args.data:
            raise ValueError("--legacy-surround simulates in memory: drop --data")
        use_legacy_surround()
    if args.data:
        from reprlab.v1.cli import _read_folders

        datasets = _read_folders(Path(args.data))
    else:
        from reprlab.v1.simulate import simulate_dataset

        datasets = simulate_dataset(scale=args.scale, seed=args.seed)
    pop = _concat_populations([ds.truth for ds in datasets], Population)
    N = len(pop)
    rng = np.random.default_rng(args.seed)  # the bundle's verification subset (twin._verification)
    vidx = np.sort(rng.choice(N, min(N, args.n_verify), replace=False))
    sub = pop.subset(vidx)
    fam = sub.family
    groups = _groups(sub)
    exp_cfg = ins.experiment_config(args.scale)
    grid = ins.gabor_grid(args.scale)
    truth = ins.PopulationModel(pop)
    report: dict = {"scale": args.scale, "seed": args.seed, "n_verify": len(vidx), "data": args.data,
                    "legacy_surround": bool(args.legacy_surround),
                    "model": args.model, "threads": args.threads,
                    "size_factors": list(exp_cfg.size_factors), "grid_sizes": list(grid.sizes)}
    timing = {}

    work = Path(args.work) if args.work else None
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)

    def cached(name: str, fn):
        """Run ``fn() -> dict of arrays`` once per work dir (the truth runs take ~10 s/neuron)."""
        f = None if work is None else work / f"{name}-{args.scale}-{args.seed}-{len(vidx)}.npz"
        if f is not None and f.exists():
            with np.load(f) as z:
                return {k: z[k] for k in z.files}
        t0 = time.perf_counter()
        out = {k: np.asarray(v) for k, v in fn().items()}
        timing[name] = time.perf_counter() - t0
        if f is not None:
            np.savez(f, **out)
        return out

    ref = cached("reference", lambda: _truth_indices(truth, pop, vidx, exp_cfg, False, return_params=True))
    planted = _planted(sub)
    true_size = sub.size.numpy()
    gl = groups["gabor_like"]
    report["truth_reference"] = {
        "suppression_per_family": _per_family(np.asarray(ref["suppression"]), fam),
        "plaid_per_family": _per_family(np.asarray(ref["plaid"]), fam),
        "vs_planted": {k: _spearman({k: ref[k]}, {k: planted[k]}, gl).get(k) for k in planted},
    }
    # the truth through the twin's whole pipeline (grid search from the RF centre): ~10 CPU-s per
    # neuron, so on the first n_truth neurons of the verification set (a random subset)
    nt = min(len(vidx), args.n_truth)
    tsel = np.arange(nt)

    def pipeline(model, neurons) -> dict:
        g = ins.optimal_gabors(model, grid, neurons=neurons)
        r = ins.run_experiments(model, g.params, neurons=neurons, config=exp_cfg)
        return {**r["indices"], "params": g.params, "size_contrast": r["tuning"]["size_contrast"]}

    if "truth" in parts:
        tp = cached(f"truth_pipeline{nt}", lambda: pipeline(truth, vidx[tsel]))
        ref_t = {k: np.asarray(v)[tsel] for k, v in ref.items()}
        fam_t, groups_t = fam[tsel], {g: m[tsel] for g, m in groups.items()}
        report["truth_pipeline"] = {
            "n_neurons": nt,
            "spearman_vs_reference": {g: _spearman(tp, ref_t, m) for g, m in groups_t.items()},
            "vs_planted": {k: _spearman({k: tp[k]}, {k: planted[k][tsel]}, gl[tsel]).get(k) for k in planted},
            "optimal_size_over_rf_size": _per_family(tp["params"][:, 2] / true_size[tsel], fam_t),
            "optimal_sf_over_rf_sf": _per_family(
                tp["params"][:, 3] / np.maximum(sub.spatial_frequency.numpy()[tsel], 1e-6), fam_t),
            "optimal_centre_error_px": _per_family(np.hypot(*(tp["params"][:, :2] - sub.center.numpy()[tsel]).T), fam_t),
            "suppression_per_family": _per_family(tp["suppression"], fam_t),
            "reference_suppression_per_family": _per_family(ref_t["suppression"], fam_t),
            "plaid_per_family": _per_family(tp["plaid"], fam_t),
            "reference_plaid_per_family": _per_family(ref_t["plaid"], fam_t),
        }
    half_width = float(args.aperture)
    view = None
    if args.model:
        from reprlab.v1.model import V1Twin

        view = ins.EquivariantModel.from_twin(V1Twin.load(args.model))
        half_width = view.half_width
    reach = surround_reach(sub, half_width)
    report["reach"] = {"radius_px": half_width,
                       "fraction_beyond_quantiles_10_50_90": np.nanquantile(reach, [0.1, 0.5, 0.9]).tolist()}
    if "aperture" in parts:
        def aperture_run() -> dict:
            r = ins.run_experiments(ins.ApertureModel(truth, half_width), ref["params"], neurons=vidx, config=exp_cfg)
            return {**r["indices"], "size_contrast": r["tuning"]["size_contrast"]}

        ap = cached(f"aperture{half_width:g}", aperture_run)
        report["truth_aperture"] = {
            "note": f"the truth seeing only a square of half-width {half_width:g} px around its RF centre "
                    "(the core's receptive field), on the reference's optimal Gabors: what a perfectly fitted "
                    "twin of this architecture would measure",
            "spearman_vs_reference": {g: _spearman(ap, ref, m) for g, m in groups.items()},
            "suppression_per_family": _per_family(ap["suppression"], fam),
            "reference_suppression_per_family": _per_family(np.asarray(ref["suppression"]), fam),
        }

    if view is not None and "twin" in parts:
        t0 = time.perf_counter()
        wp = pipeline(view, vidx)
        timing["twin_pipeline"] = time.perf_counter() - t0
        wpi = wp
        wg_params = wp["params"]
        report["twin_pipeline"] = {
            "spearman_vs_reference": {g: _spearman(wpi, ref, m) for g, m in groups.items()},
            "vs_planted": {k: _spearman({k: wpi[k]}, {k: planted[k]}, gl).get(k) for k in planted},
            "optimal_size_over_rf_size": _per_family(wg_params[:, 2] / true_size, fam),
            "optimal_sf_over_rf_sf": _per_family(wg_params[:, 3] / np.maximum(sub.spatial_frequency.numpy(), 1e-6), fam),
            "optimal_centre_error_px": _per_family(np.hypot(*(wg_params[:, :2] - sub.center.numpy()).T), fam),
            "suppression_per_family": _per_family(wpi["suppression"], fam),
            "plaid_per_family": _per_family(wpi["plaid"], fam),
        }
        if "verification" in parts:
            # the bundle's Fig. 5 verification (twin._verification) and Spearman table, on all neurons
            from reprlab.v1.twin import _verification, twin_build_config

            cfg = twin_build_config(args.scale, args.seed)
            cfg["_grid"] = grid
            t0 = time.perf_counter()
            gab_all = ins.optimal_gabors(view, grid)
            ver, extra = _verification(view, truth, pop, gab_all, cfg, args.seed, False)
            exp_all = ins.run_experiments(view, gab_all.params[extra["vidx"]], neurons=extra["vidx"], config=exp_cfg)
            timing["verification"] = time.perf_counter() - t0
            same = np.array_equal(extra["vidx"], vidx)
            report["verification"] = {
                "tuning_curves_fraction_of_oracle": ver["mouse_model_all_stimuli"]["drive>=0"],
                "twin_vs_noiseless_truth_corr": ver["twin_vs_noiseless_truth_corr"],
                "spearman_twin_vs_truth": _spearman(exp_all["indices"], ref) if same else None,
            }
        if "features" in parts:
            from reprlab.v1.model import V1Twin
            from reprlab.v1.stimuli import natural_images as _nat

            t0 = time.perf_counter()
            fp = feature_probe(V1Twin.load(args.model), sub, _nat(2000, pop.image_shape, seed=args.seed + 777))
            timing["feature_probe"] = time.perf_counter() - t0
            ssm = sub.surround_suppressed.numpy() & gl
            report["feature_probe"] = {
                "note": "CV ridge R^2 of the truth's noise-free log rate from core features at the RF (centre) and "
                        "plus rings around it (2-4, 4-7 feature px); medians over suppressed / other Gabor neurons",
                **{f"{k}_suppressed": float(np.median(v[ssm])) for k, v in fp.items()},
                **{f"{k}_other_gabor": float(np.median(v[gl & ~ssm])) for k, v in fp.items()},
            }
        # neuron-level combinatorial code: binarised indices (above/below the mean over the
        # verification set, as analysis.combinatorial_table does for clusters) vs the true flags
        flags = {"phase": sub.phase_invariant.numpy(), "suppression": sub.surround_suppressed.numpy(),
                 "plaid": sub.cross_orientation_inhibited.numpy()}
        code_true = flags["phase"] * 1 + flags["suppression"] * 2 + flags["plaid"] * 4
        codes = {}
        for name, ind in (("twin", wpi), ("reference", ref)):
            b = {k: (np.asarray(ind[k]) < np.nanmean(ind[k])) if k == "phase" else
                 (np.asarray(ind[k]) > np.nanmean(ind[k])) for k in flags}
            code = b["phase"] * 1 + b["suppression"] * 2 + b["plaid"] * 4
            bal = {}
            for k in flags:
                y, p = flags[k][gl], b[k][gl]
                bal[k] = 0.5 * (float((p & y).sum() / max(y.sum(), 1)) + float((~p & ~y).sum() / max((~y).sum(), 1)))
            codes[name] = {"balanced_accuracy": bal, "code_agreement": float((code[gl] == code_true[gl]).mean()),
                           "counts": np.bincount(code[gl], minlength=8).tolist()}
        codes["truth_counts"] = np.bincount(code_true[gl], minlength=8).tolist()
        report["neuron_codes"] = codes
        # identical stimuli: the reference's optimal Gabors, shown to both
        t0 = time.perf_counter()
        ws = ins.run_experiments(view, ref["params"], neurons=vidx, config=exp_cfg)
        timing["twin_same_stimuli"] = time.perf_counter() - t0
        from reprlab.v1.analysis import _row_corr

        c_tw = ws["tuning"]["size_contrast"][:, -1, :]
        tr_same = ins.run_experiments(truth, ref["params"], neurons=vidx, config=exp_cfg)
        c_tr = tr_same["tuning"]["size_contrast"][:, -1, :]
        report["same_stimuli"] = {
            "note": "twin and truth on the reference's optimal Gabors (identical stimuli)",
            "spearman": {g: _spearman(ws["indices"], ref, m) for g, m in groups.items()},
            "size_curve_corr_top_contrast_per_family": _per_family(_row_corr(c_tw, c_tr), fam),
            "twin_suppression_per_family": _per_family(ws["indices"]["suppression"], fam),
            "truth_suppression_per_family": _per_family(np.asarray(ref["suppression"]), fam),
        }
        # natural-image surround probe
        from reprlab.v1.stimuli import natural_images

        imgs = natural_images(64, pop.image_shape, seed=args.seed + 424242)
        # does the twin predict the neuron with its surround, or the same neuron without it?
        import dataclasses

        nosur = dataclasses.replace(sub, surround_strength=torch.zeros(len(sub)), _cache={})
        ssm = sub.surround_suppressed.numpy()

        def surround_in_prediction(test_imgs: torch.Tensor, what: str) -> dict:
            r_twin = view.responses(test_imgs).numpy()[:, vidx].T
            r_true, r_nosur = sub.rate(test_imgs).numpy().T, nosur.rate(test_imgs).numpy().T
            c_true, c_nosur, c_tn = _row_corr(r_twin, r_true), _row_corr(r_twin, r_nosur), _row_corr(r_true, r_nosur)
            return {
                "note": f"suppressed neurons, 256 new {what}: corr(twin, truth) vs corr(twin, the same truth "
                        "neuron without its surround); corr(truth, truth without surround)^2 ~ share of rate "
                        "variance not due to the surround",
                "twin_vs_truth_median": float(np.median(c_true[ssm])),
                "twin_vs_truth_without_surround_median": float(np.median(c_nosur[ssm])),
                "fraction_closer_to_no_surround": float(np.mean(c_nosur[ssm] > c_true[ssm])),
                "truth_vs_truth_without_surround_median": float(np.median(c_tn[ssm])),
                "surround_share_of_rate_variance_median": float(np.median(1 - c_tn[ssm] ** 2)),
            }

        report["surround_in_prediction"] = surround_in_prediction(
            torch.as_tensor(natural_images(256, pop.image_shape, seed=args.seed + 31337)), "natural images")
        mixtures = gabor_mixtures(256, pop.image_shape, np.random.default_rng(args.seed + 777)).astype(np.float32)
        report["surround_in_prediction_gabor_mixtures"] = surround_in_prediction(
            torch.as_tensor(mixtures), "Gabor mixtures (gabor_mixtures, the --write-parametric stimuli)")
        factors = np.array([0.5, 1.0, 1.5, 2.0, 3.0])
        radii = true_size[:, None] * factors[None]
        t0 = time.perf_counter()
        pr_truth = ins.natural_surround_probe(truth, imgs, radii, neurons=vidx)
        pr_twin = ins.natural_surround_probe(view, imgs, radii, neurons=vidx, centers=sub.center.numpy())
        timing["natural_probe"] = time.perf_counter() - t0
        report["natural_probe"] = {
            "radius_factors_of_rf_size": factors.tolist(),
            "truth_median_per_family": {f: np.median(pr_truth[fam == f], 0).tolist() for f in sorted(set(fam))},
            "twin_median_per_family": {f: np.median(pr_twin[fam == f], 0).tolist() for f in sorted(set(fam))},
        }
    report["timing_seconds"] = timing
    report["seconds_total"] = time.perf_counter() - t_all
    report["load_average_1min"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps(report, indent=2, default=float))
    return report


if __name__ == "__main__":
    main()
