"""The twin bundle: everything chapters 6-7 compute, in one versioned artifact.

``build_twin(config)`` runs simulate -> fit -> align/cluster -> embed -> optimal stimuli ->
in silico experiments -> analyses -> verification against the ground truth and writes a bundle
(``reprlab.io.write_bundle``, kind ``"twin"``); ``load_twin(path)`` reads it back as a
:class:`Twin`. The twin explorer app and the chapter-7 notebook only ever read a :class:`Twin`.

Bundle layout (arrays are ``.npy``, documents ``.json``; N neurons, K clusters, H x W images):

=============================  =====================  =========================================
name                           shape / type           meaning
=============================  =====================  =========================================
neurons/id                     (N,) int64             neuron id (unique within the bundle)
neurons/animal                 (N,) int64             index into ``meta.animals``
neurons/cluster                (N,) int64             cluster label in [0, K)
neurons/embedding              (N, 2) float32         t-SNE coordinates of the aligned readouts
neurons/test_corr              (N,) float32           single-trial test correlation of the twin
neurons/angle                  (N,) float32           alignment angle (radians)
neurons/rf_center              (N, 2) float32         receptive-field centre (x, y) in pixels
neurons/family                 (N,) int64             true family index into ``meta.families`` (-1 = none)
neurons/glm_test_corr          (N,) float32           test correlation of the GLM baseline (NaN if absent)
indices/<name>                 (N,) float32           in silico index per neuron, own optimal stimuli
cluster_indices/<name>         (N,) float32           the same index measured with the cluster's stimuli
truth_indices/<name>           (N,) float32           the same index measured on the true neuron (NaN = not measured)
mei/neuron                     (N, H, W) float16      per-neuron MEI
mei/cluster                    (K, H, W) float32      per-cluster MEI (canonical position/orientation)
mei/neuron_response            (N,) float32           twin rate to the own MEI
mei/cluster_response           (N,) float32           twin rate to the cluster MEI (best angle, at the RF)
gabor/neuron                   (N, P) float32         optimal Gabor parameters (``meta.gabor_params``)
gabor/cluster                  (K, P) float32         cluster optimal Gabor parameters (canonical frame)
gabor/neuron_response          (N,) float32           rate to the own optimal Gabor
gabor/cluster_response         (N,) float32           rate to the cluster optimal Gabor
dog/neuron                     (N, Q) float32         optimal DoG parameters (``meta.dog_params``)
dog/cluster                    (K, Q) float32         cluster optimal DoG parameters
tuning/<exp>                   (N, ...) float16       tuning curve per neuron for each experiment
tuning/<exp>_axis_<i>          (n_i,) float32         values of the i-th stimulus axis of <exp>
cluster_tuning/<exp>           (N, ...) float16       the same curves with the cluster's stimuli
verification/selected_gabors   (G, P) float32         the greedy "in vivo" Gabor set (RF-relative centre 0)
verification/drive             (N,) float32           best fraction of the optimal-Gabor rate over that set
verification/corr              (N,) float32           twin vs "in vivo" tuning-curve correlation
verification/oracle            (N,) float32           oracle correlation of the "in vivo" curves
=============================  =====================  =========================================

Documents: ``meta`` (animals, families, indices, gabor_params, dog_params, experiments with
axis names/units, image_shape, scale, seed), ``clusters`` (list per cluster: size, mean test
correlation, mean index values, KS test per index, code of the combinatorial table), ``analysis``
(KS summary, correlations, combinatorial table, stimulus selection, thesis checks),
``report`` (every figure the CLI prints: fit, timing, checks, verification).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprlab.scales import current_scale, pick

BUNDLE_KIND = "twin"
TWIN_SCHEMA = 1

__all__ = ["BUNDLE_KIND", "PRESETS", "Twin", "build_twin", "load_twin", "twin_build_config"]

#: Build sizes per scale (model and data sizes come from ``simulate`` / ``train`` presets).
PRESETS: dict[str, dict[str, Any]] = {
    # "smoke" is sized for CI (tests + notebook): a tiny population, two short epochs
    "smoke": dict(n_clusters=4, perplexity=10.0, n_select=5, verify_sizes=(4.0, 8.0, 16.0), n_repeats=4,
                  n_verify=24, tile_step=4, glm=True, align_betas=3, align_epochs=40,
                  simulate={"n_neurons": 80, "n_train_images": 300},
                  fit={"max_epochs": 2}, glm_options={"alphas": [0.3, 1.0, 3.0], "max_iter": 30}),
    # "default": the default simulated population (3 animals, 2,100 neurons, 4,000 training images)
    # and the default twin fit (``train.PRESETS['default']``); few GLM penalties and a subset of
    # neurons for the "in vivo" verification keep the build within an hour on a 2-core CPU
    "default": dict(n_clusters=20, perplexity=30.0, n_select=20, verify_sizes=(3.0, 5.0, 8.5, 14.0, 24.0),
                    n_repeats=10, n_verify=200, tile_step=4, glm=True, align_betas=6, align_epochs=150,
                    glm_options={"alphas": [0.1, 0.17, 0.3, 0.5, 0.9, 1.6, 2.8, 5.0], "max_iter": 40}),
    "paper": dict(n_clusters=50, perplexity=30.0, n_select=20, verify_sizes=(3.0, 5.0, 8.5, 14.0, 24.0),
                  n_repeats=10, n_verify=None, tile_step=2, glm=True, align_betas=20, align_epochs=1000),
}


def twin_build_config(scale: str | None = None, seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """The full JSON-able build configuration for ``scale`` (presets + ``overrides``)."""
    s = current_scale(scale)
    cfg = {"scale": s, "seed": int(seed), **pick(PRESETS, s)}
    unknown = set(overrides) - set(cfg) - {"grid", "dog_grid", "experiments", "mei", "fit", "simulate", "glm_options"}
    if unknown:
        raise ValueError(f"unknown build options {sorted(unknown)}; expected keys of twin_build_config()")
    cfg.update(overrides)
    return cfg


@dataclass
class Twin:
    """A loaded twin bundle (read-only arrays + documents); see the module docstring."""

    path: Path | None
    neurons: dict[str, np.ndarray]
    indices: dict[str, np.ndarray]
    mei: dict[str, np.ndarray]
    gabor: dict[str, np.ndarray]
    dog: dict[str, np.ndarray]
    tuning: dict[str, np.ndarray]
    meta: dict[str, Any]
    clusters: list[dict[str, Any]]
    analysis: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    cluster_indices: dict[str, np.ndarray] = field(default_factory=dict)
    truth_indices: dict[str, np.ndarray] = field(default_factory=dict)
    cluster_tuning: dict[str, np.ndarray] = field(default_factory=dict)
    verification: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_neurons(self) -> int:
        return int(self.neurons["id"].shape[0])

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)

    def tuning_axes(self, exp: str) -> list[np.ndarray]:
        """Axis values of experiment ``exp`` (``tuning/<exp>_axis_<i>``)."""
        axes, i = [], 0
        while f"{exp}_axis_{i}" in self.tuning:
            axes.append(self.tuning[f"{exp}_axis_{i}"])
            i += 1
        return axes


# =========================================================================== loading
_GROUPS = ("neurons", "indices", "mei", "gabor", "dog", "tuning", "cluster_indices", "truth_indices",
           "cluster_tuning", "verification")
_REQUIRED = ("neurons/id", "neurons/animal", "neurons/cluster", "neurons/embedding", "neurons/rf_center",
             "mei/neuron", "mei/cluster", "gabor/neuron", "gabor/cluster", "dog/neuron", "dog/cluster")


def load_twin(path: str | os.PathLike, verify: bool = False) -> Twin:
    """Read a bundle written by :func:`build_twin`; raises FileNotFoundError / ValueError
    naming what is missing or inconsistent. ``verify`` checks every file's SHA-256."""
    from reprlab.io import read_bundle

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no twin bundle at {p} (build one with `python -m reprlab v1 twin --out {p}`)")
    b = read_bundle(p, kind=BUNDLE_KIND, verify=verify)
    missing = [n for n in _REQUIRED if not b.has(n)] + [d for d in ("meta", "clusters") if not b.has(d)]
    if missing:
        raise ValueError(f"twin bundle {p} is missing {missing}")
    groups: dict[str, dict[str, np.ndarray]] = {g: {} for g in _GROUPS}
    for name in b.names():
        g, _, rest = name.partition("/")
        if g in groups and rest and f"{name}.npy" in b.manifest["files"]:
            groups[g][rest] = b.array(name)
    meta = b.document("meta")
    clusters = b.document("clusters")
    N = groups["neurons"]["id"].shape[0]
    for g in ("neurons", "indices", "cluster_indices", "truth_indices"):
        for k, v in groups[g].items():
            if v.shape[0] != N:
                raise ValueError(f"twin bundle {p}: {g}/{k} has {v.shape[0]} rows, expected N = {N}")
    K = len(clusters)
    lab = groups["neurons"]["cluster"]
    if N and (lab.min() < 0 or lab.max() >= K):
        raise ValueError(f"twin bundle {p}: cluster labels outside [0, {K})")
    for g in ("mei", "gabor", "dog"):
        if groups[g]["cluster"].shape[0] != K:
            raise ValueError(f"twin bundle {p}: {g}/cluster has {groups[g]['cluster'].shape[0]} rows, expected K = {K}")
        if groups[g]["neuron"].shape[0] != N:
            raise ValueError(f"twin bundle {p}: {g}/neuron has {groups[g]['neuron'].shape[0]} rows, expected N = {N}")
    return Twin(path=p, neurons=groups["neurons"], indices=groups["indices"], mei=groups["mei"],
                gabor=groups["gabor"], dog=groups["dog"], tuning=groups["tuning"], meta=meta, clusters=clusters,
                analysis=b.document("analysis") if b.has("analysis") else {},
                report=b.document("report") if b.has("report") else {},
                cluster_indices=groups["cluster_indices"], truth_indices=groups["truth_indices"],
                cluster_tuning=groups["cluster_tuning"], verification=groups["verification"])


# =========================================================================== building
def _align_cluster_embed(W: np.ndarray, cfg: dict, seed: int, progress: bool) -> dict[str, Any]:
    """Rotation alignment (chapter 6), k-means clustering and a t-SNE embedding."""
    from sklearn.cluster import KMeans

    from reprlab.v1.align import RotationAligner

    N, Fd, O = W.shape
    X = W.reshape(N, Fd * O)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-8)
    betas = tuple(float(b) for b in np.logspace(-3, 1, int(cfg["align_betas"])))
    aligner = RotationAligner(n_orientations=O, betas=betas, n_init=1, max_epochs=int(cfg["align_epochs"]),
                              random_state=seed, progress=progress)
    aligned = aligner.fit_transform(X)
    aligned = np.asarray(aligned).reshape(N, -1)
    K = int(min(cfg["n_clusters"], N))
    km = KMeans(n_clusters=K, n_init=10, random_state=seed).fit(aligned)
    emb = _embed(aligned, float(cfg["perplexity"]), seed)
    return {"aligned": aligned, "angles": np.asarray(aligner.angles_, dtype=np.float32), "labels": km.labels_,
            "embedding": emb, "alignment_loss": float(getattr(aligner, "alignment_loss_", float("nan")))}


def _embed(X: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    try:
        from reprlab.v1 import cluster as _cl

        if hasattr(_cl, "embed"):
            return np.asarray(_cl.embed(X, perplexity=perplexity, random_state=seed), dtype=np.float32)
    except Exception:  # noqa: BLE001 - fall back to openTSNE directly
        pass
    from openTSNE import TSNE

    perp = float(min(perplexity, max(2.0, (len(X) - 1) / 3.0)))
    emb = TSNE(perplexity=perp, random_state=seed, n_jobs=1, verbose=False).fit(X)
    return np.asarray(emb, dtype=np.float32)


def _cluster_mei_images(view: Any, mres: Any, labels: np.ndarray, n_max: int) -> np.ndarray:
    """Each neuron's cluster MEI rotated to its best angle and placed on its RF (full images)."""
    from reprlab.v1.hermite import HermiteBasis
    from reprlab.v1.mei import rotate_patch_coefficients

    s = view.patch_size
    basis = HermiteBasis((s, s), n_max, sigma=float(mres.extra["sigma"]))
    beta = torch.as_tensor(mres.extra["coefficients"], dtype=torch.float32)[torch.as_tensor(labels)]
    coeffs = rotate_patch_coefficients(basis, beta, torch.as_tensor(mres.extra["angle"], dtype=torch.float32))
    patches = basis.synthesize(coeffs).clamp(-0.5, 0.5)
    return view.paste(patches, torch.arange(view.n_neurons)).numpy()


def _verification(view: Any, truth_model: Any, population: Any, gab: Any, cfg: dict, seed: int,
                  progress: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Fig. 5: greedy suboptimal Gabors, tiled "in vivo" size tuning on the truth, twin vs truth."""
    from reprlab.v1 import analysis as an
    from reprlab.v1 import insilico as ins

    grid = cfg["_grid"]
    N = view.n_neurons
    # candidates "in the centre": each neuron's RF centre, absolute orientations, full contrast
    shared = grid.shared()
    shared = shared[shared[:, 2] == shared[:, 2].max()]
    J = grid.orientation_substeps
    O = view.n_rotations
    subs = np.arange(J) * (2 * np.pi / O) / J
    s = view.bank_shape(0)[0]
    cc = view.bank_center(0)
    rows = np.array([[cc, cc, r[0], r[1], r[2], subs[j], r[3]] for r in shared for j in range(J)])
    feats = view.bank(ins.render_gabors(rows, (s, s)))[..., 0, 0]  # (M, F, O)
    resp = view.read_bank(feats[..., None]).cpu().numpy()[:, :, 0, :]  # (M, O, N)
    M = len(rows)
    cand = np.zeros((M * O, 7))
    for k in range(O):
        cand[k::O] = rows
        cand[k::O, 5] = rows[:, 5] + k * 2 * np.pi / O
    cand[:, :2] = 0.0
    R_all = resp.reshape(M * O, N).T  # (N, C), candidate c = m*O + k
    opt = np.asarray(gab.response, dtype=np.float64)
    sel = an.greedy_gabor_selection(R_all, opt, fraction=0.5, n_select=int(cfg["n_select"]))
    fractions = np.linspace(0.0, 1.0, 21)
    coverage = {str(n): an.coverage_curve(R_all, opt, sel["selected"][:n], fractions).tolist()
                for n in (1, min(10, len(sel["selected"])), len(sel["selected"]))}
    G = ins.canonical_gabor(cand[sel["selected"]]).numpy()
    sizes = np.asarray(cfg["verify_sizes"], dtype=np.float64)
    S = len(sizes)
    # tiled screen locations: each neuron sees the tile nearest its (twin-estimated) RF centre
    H, W = view.image_shape
    step = float(cfg["tile_step"])
    loc = np.round(view.centers.numpy() / step) * step
    loc[:, 0] = np.clip(loc[:, 0], 0, W - 1)
    loc[:, 1] = np.clip(loc[:, 1], 0, H - 1)
    rng = np.random.default_rng(seed)
    n_ver = N if cfg.get("n_verify") is None else int(min(N, cfg["n_verify"]))
    vidx = np.sort(rng.choice(N, n_ver, replace=False))
    P = np.zeros((n_ver, len(G), S, 7))
    P[:] = G[None, :, None, :]
    P[:, :, :, 0] = loc[vidx, None, None, 0]
    P[:, :, :, 1] = loc[vidx, None, None, 1]
    P[:, :, :, 2] = sizes[None, None, :]
    P[:, :, :, 4] = 1.0
    Pf = torch.as_tensor(P.reshape(-1, 7), dtype=torch.float32)
    nb = torch.as_tensor(vidx).repeat_interleave(len(G) * S)
    twin_curves = view.diag_gabors(Pf, nb).reshape(n_ver, len(G) * S).numpy()
    true_rates = truth_model.diag_gabors(Pf, nb).reshape(n_ver, len(G) * S)
    gen = torch.Generator().manual_seed(seed + 7)
    trials = torch.stack([population.spikes(true_rates, generator=gen) for _ in range(int(cfg["n_repeats"]))]).numpy()
    drive_all = (R_all[vidx][:, sel["selected"]] / np.maximum(opt[vidx, None], 1e-12))
    subsets = {}
    for thr in (0.0, 0.25, 0.5, 0.75):
        m = drive_all.max(1) >= thr
        subsets[f"drive>={thr:g}"] = an.oracle_fraction(twin_curves, trials, m)
    corr = an.tuning_curve_correlation(twin_curves, trials)
    orc = an.oracle_correlation(trials)
    noiseless = float(np.nanmean(an._row_corr(twin_curves, true_rates.numpy())))
    # "mouse - optimal": in vivo curve of the neuron's best selected Gabor vs twin optimal-Gabor curve
    best_g = drive_all.argmax(1)
    tv = trials.reshape(trials.shape[0], n_ver, len(G), S)[:, np.arange(n_ver), best_g]  # (R, n, S)
    Popt = np.repeat(np.asarray(gab.params)[vidx][:, None, :], S, 1)
    Popt[:, :, 2] = sizes[None, :]
    Popt[:, :, 4] = 1.0
    opt_curves = view.diag_gabors(torch.as_tensor(Popt.reshape(-1, 7), dtype=torch.float32),
                                  torch.as_tensor(vidx).repeat_interleave(S)).reshape(n_ver, S).numpy()
    sub_curves = twin_curves.reshape(n_ver, len(G), S)
    mouse_opt = {}
    mouse_model_best = {}
    for thr in (0.0, 0.5):
        m = drive_all.max(1) >= thr
        mouse_opt[f"drive>={thr:g}"] = an.oracle_fraction(opt_curves, tv, m)
        mouse_model_best[f"drive>={thr:g}"] = an.oracle_fraction(sub_curves[np.arange(n_ver), best_g], tv, m)
    subopt = an.suboptimal_tuning_similarity(sub_curves, opt_curves, drive_all)
    report = {
        "n_neurons_verified": n_ver, "n_selected_gabors": len(G), "sizes": sizes.tolist(),
        "n_repeats": int(cfg["n_repeats"]), "tile_step_px": step,
        "greedy_coverage_at_50pct": sel["covered"], "coverage_curves": {"fractions": fractions.tolist(), **coverage},
        "mouse_model_all_stimuli": subsets,
        "mouse_model_best_gabor": mouse_model_best,
        "mouse_optimal_best_gabor": mouse_opt,
        "twin_vs_noiseless_truth_corr": noiseless,
        "suboptimal_vs_optimal_tuning": subopt,
        "thesis": {"fraction_of_oracle": 0.70, "coverage_20_gabors_50pct": 0.75},
    }
    arrays = {"selected_gabors": G.astype(np.float32)}
    full_drive = np.full(N, np.nan, np.float32)
    full_drive[vidx] = drive_all.max(1)
    c_full = np.full(N, np.nan, np.float32)
    c_full[vidx] = corr
    o_full = np.full(N, np.nan, np.float32)
    o_full[vidx] = orc
    arrays.update(drive=full_drive, corr=c_full, oracle=o_full)
    return report, {"arrays": arrays, "vidx": vidx}


def _truth_indices(truth_model: Any, population: Any, vidx: np.ndarray, exp_cfg: Any, progress: bool,
                   return_params: bool = False) -> dict[str, np.ndarray]:
    """The same Gabor experiments on the true neurons, with optimal Gabors found by a local grid
    search around each neuron's mapped RF parameters (as an experimenter would, after RF mapping).

    Gabor-family neurons: sizes 0.5-3 x, frequencies 0.8-1.25 x their RF's, orientations ±15°,
    8 phases. Neurons without a preferred frequency (DoG and corner cells, ``spatial_frequency``
    0): the frequencies and sizes of the default Gabor grid at 8 orientations and 8 phases, at
    the RF centre (they used to get a 0.01 cycles/px "Gabor", i.e. a blob, whose indices did not
    match what the twin's pipeline measures on the same truth). Then one refinement round.
    ``return_params`` adds the optimal Gabors as ``"params"`` ``(len(vidx), 7)``."""
    from reprlab.v1 import insilico as ins

    pop = population
    vidx = np.asarray(vidx)
    c = pop.center.cpu().numpy()[vidx]
    ori = pop.orientation.cpu().numpy()[vidx]
    sf = pop.spatial_frequency.cpu().numpy()[vidx]
    size = pop.size.cpu().numpy()[vidx]
    phases = np.arange(8) * 2 * np.pi / 8
    local = np.stack(np.meshgrid([0.5, 0.75, 1.0, 1.5, 2.0, 3.0], [0.8, 1.0, 1.25], [-np.pi / 12, 0.0, np.pi / 12],
                                 phases, indexing="ij"), -1).reshape(-1, 4)
    grid = ins.gabor_grid("default")
    broad = np.stack(np.meshgrid(grid.sizes, grid.spatial_frequencies, np.arange(8) * np.pi / 8, phases,
                                 indexing="ij"), -1).reshape(-1, 4)
    n = len(vidx)
    params = torch.zeros(n, 7)
    best_r = torch.zeros(n)
    for rows, g, mapped in ((np.flatnonzero(sf > 0), local, True), (np.flatnonzero(sf <= 0), broad, False)):
        if not len(rows):
            continue
        C = len(g)
        P = np.zeros((len(rows), C, 7))
        P[:, :, 0] = c[rows, None, 0]
        P[:, :, 1] = c[rows, None, 1]
        P[:, :, 4] = 1.0
        P[:, :, 6] = g[None, :, 3]
        if mapped:
            P[:, :, 2] = size[rows, None] * g[None, :, 0]
            P[:, :, 3] = sf[rows, None] * g[None, :, 1]
            P[:, :, 5] = ori[rows, None] + g[None, :, 2]
        else:
            P[:, :, 2] = g[None, :, 0]
            P[:, :, 3] = g[None, :, 1]
            P[:, :, 5] = g[None, :, 2]
        r = truth_model.diag_gabors(torch.as_tensor(P.reshape(-1, 7), dtype=torch.float32),
                                    torch.as_tensor(vidx[rows]).repeat_interleave(C)).reshape(len(rows), C)
        best = r.argmax(1).numpy()
        params[rows] = torch.as_tensor(P[np.arange(len(rows)), best], dtype=torch.float32)
        best_r[rows] = r.max(1).values
    sub = ins.PopulationModel(pop.subset(vidx))
    params, _, _ = ins._refine(sub, params, best_r, torch.arange(n), 1, ins._GABOR_STEPS, sub.diag_gabors,
                               ins._clip_gabor, None)
    params = ins.canonical_gabor(params).numpy()
    res = ins.run_experiments(sub, params, config=exp_cfg, progress=progress)
    return {**res["indices"], "params": params} if return_params else res["indices"]


def build_twin(config: dict[str, Any] | None = None, out: str | os.PathLike | None = None, progress: bool = False,
               callback: Callable[[int, float, dict], Any] | None = None,
               work_dir: str | os.PathLike | None = None) -> tuple[Twin, dict[str, Any]]:
    """Run the whole chapter-7 pipeline and (if ``out``) write the bundle. Returns ``(twin, report)``.

    ``config`` is :func:`twin_build_config` output (or a dict of overrides with ``scale``/``seed``).
    ``callback(stage, seconds, report)`` is called after each stage (return True to stop early,
    raising RuntimeError). ``work_dir`` keeps the training checkpoint and the fitted model, so an
    interrupted build resumes and a rebuild with the same config skips the fit."""
    from reprlab.v1 import analysis as an
    from reprlab.v1 import insilico as ins
    from reprlab.v1 import mei as mei_mod
    from reprlab.v1.population import FAMILIES
    from reprlab.v1.simulate import simulate_dataset
    from reprlab.v1.train import evaluate_twin

    cfg = dict(config or {})
    if "n_clusters" not in cfg:
        cfg = twin_build_config(cfg.pop("scale", None), cfg.pop("seed", 0), **cfg)
    scale, seed = cfg["scale"], int(cfg["seed"])
    grid = ins.gabor_grid(scale, **cfg.get("grid", {}))
    dgrid = ins.dog_grid(scale, **cfg.get("dog_grid", {}))
    exp_cfg = ins.experiment_config(scale, **cfg.get("experiments", {}))
    mcfg = mei_mod.mei_config(scale, seed=seed, **cfg.get("mei", {}))
    cfg["_grid"] = grid
    timing: dict[str, float] = {}
    report: dict[str, Any] = {"scale": scale, "seed": seed}
    t_all = time.perf_counter()
    stage_i = [0]

    def done(stage: str, t0: float) -> None:
        timing[stage] = round(time.perf_counter() - t0, 2)
        if callback is not None and callback(stage_i[0], timing[stage], {"stage": stage, "timing": timing}):
            raise RuntimeError(f"build_twin stopped by the callback after stage {stage!r}")
        stage_i[0] += 1

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    datasets = simulate_dataset(scale=scale, seed=seed, **cfg.get("simulate", {}))
    done("simulate", t0)

    t0 = time.perf_counter()
    model, fit_report = _fit_or_load(datasets, scale, seed, progress, cfg.get("fit", {}), work_dir)
    ev = evaluate_twin(model, datasets)
    test_corr = np.asarray(ev["per_neuron"]["test_correlation"], dtype=np.float32)
    report["fit"] = {k: fit_report.get(k) for k in ("epochs", "best_epoch", "best_val_correlation", "n_neurons",
                                                    "seconds_total", "test")}
    done("fit", t0)

    glm_corr = np.full(len(test_corr), np.nan, np.float32)
    if cfg.get("glm", True):
        t0 = time.perf_counter()
        try:
            from reprlab.v1.glm import fit_glm_baseline

            g = fit_glm_baseline(datasets, scale=scale, progress=progress, **cfg.get("glm_options", {}))
            glm_corr = np.asarray(g["per_neuron"]["test_correlation"], dtype=np.float32)
            report["glm"] = {"median_test_correlation": float(np.nanmedian(glm_corr))}
        except Exception as err:  # noqa: BLE001 - the GLM is optional for the bundle
            report["glm"] = {"error": f"{type(err).__name__}: {err}"}
        done("glm", t0)

    view = ins.EquivariantModel.from_twin(model)
    N = view.n_neurons
    animals = [ds.animal for ds in datasets]
    animal_idx = np.concatenate([np.full(ds.n_neurons, i) for i, ds in enumerate(datasets)])
    ids = np.concatenate([ds.neuron_ids for ds in datasets]).astype(np.int64)

    t0 = time.perf_counter()
    ac = _align_cluster_embed(view.weights.cpu().numpy(), cfg, seed, progress)
    labels = ac["labels"].astype(np.int64)
    K = int(labels.max()) + 1
    done("align_cluster_embed", t0)

    t0 = time.perf_counter()
    gab = ins.optimal_gabors(view, grid, progress=progress)
    report["optimal_gabors"] = gab.stats
    done("optimal_gabors", t0)
    t0 = time.perf_counter()
    dg = ins.optimal_dogs(view, dgrid, progress=progress)
    done("optimal_dogs", t0)
    t0 = time.perf_counter()
    if "norm" not in cfg.get("mei", {}):
        # MEI energy budget = the median energy of the neurons' optimal Gabors (comparable contrast)
        gimg = ins.render_gabors(torch.as_tensor(gab.params[:512]), view.image_shape)
        mcfg.norm = float(gimg.flatten(1).norm(dim=1).median())
    nm = mei_mod.neuron_meis(view, config=mcfg, progress=progress)
    done("neuron_meis", t0)
    t0 = time.perf_counter()
    cgab = ins.cluster_optimal_gabors(view, labels, gab.params, grid, progress=progress)
    cdog = ins.cluster_optimal_dogs(view, labels, dg.params, dgrid, progress=progress)
    cm = mei_mod.cluster_meis(view, labels, mcfg, progress=progress)
    done("cluster_stimuli", t0)

    t0 = time.perf_counter()
    exp_n = ins.run_experiments(view, gab.params, dogs=dg.params, meis=nm.images, config=exp_cfg, progress=progress)
    done("experiments_neuron", t0)
    t0 = time.perf_counter()
    cmei_imgs = _cluster_mei_images(view, cm, labels, mcfg.n_max)
    exp_c = ins.run_experiments(view, ins.cluster_gabor_params(cgab.params, labels, gab.params),
                                dogs=ins.cluster_dog_params(cdog.params, labels, dg.params), meis=cmei_imgs,
                                config=exp_cfg, progress=progress)
    done("experiments_cluster", t0)
    nonlin = ins.nonlinearity_index(test_corr, glm_corr).astype(np.float32)
    exp_n["indices"]["nonlinearity"] = nonlin
    exp_c["indices"]["nonlinearity"] = nonlin

    # ------------------------------------------------------------------ analyses
    t0 = time.perf_counter()
    props = ["orientation", "phase", "suppression", "plaid", "gabor_vs_dog", "gabor_vs_mei", "dog_vs_mei",
             "nonlinearity"]
    cidx = {k: exp_c["indices"][k] for k in props if k in exp_c["indices"]}
    ks = an.ks_tests(cidx, labels, alpha=0.01)
    means = an.cluster_means(cidx, labels)
    pop_mean = {k: float(np.nanmean(v)) for k, v in cidx.items()}
    gabor_like = means["gabor_vs_mei"] > pop_mean["gabor_vs_mei"]
    sizes = np.bincount(labels, minlength=K)
    corrs = an.property_correlations(means, gabor_like)
    corrs_n = an.property_correlations({k: exp_n["indices"][k] for k in props if k in exp_n["indices"]},
                                       method="spearman")
    comb = an.combinatorial_table(means, pop_mean, gabor_like, sizes)
    si_ci = an.spearman_table({"x": exp_n["indices"]["suppression"]}, {"x": exp_n["indices"]["contrast"]})["x"]
    si_ci_p = _pearson(exp_n["indices"]["suppression"], exp_n["indices"]["contrast"])
    own_g = np.maximum(gab.response, 1e-9)
    own_m = np.maximum(nm.response, 1e-9)
    checks = {
        "cluster_gabor_over_own_gabor": {"ours_median": float(np.median(cgab.stats["per_neuron"] / own_g)),
                                         "ours_mean": float(np.mean(cgab.stats["per_neuron"] / own_g)),
                                         "thesis": 0.87},
        "cluster_mei_over_own_mei": {"ours_median": float(np.median(cm.extra["per_neuron"] / own_m)),
                                     "ours_mean": float(np.mean(cm.extra["per_neuron"] / own_m)), "thesis": 0.60},
        "suppression_vs_contrast_index": {"ours_pearson": si_ci_p, "ours_spearman": si_ci["rho"], "thesis": 0.95},
        "mei_over_optimal_gabor": {"ours_median": float(np.median(nm.response / own_g))},
    }
    done("analysis", t0)

    # ------------------------------------------------------------------ verification
    t0 = time.perf_counter()
    from reprlab.v1.population import Population

    pops = [ds.truth for ds in datasets]
    truth_arrays: dict[str, np.ndarray] = {}
    verification: dict[str, Any] = {}
    ver_arrays: dict[str, np.ndarray] = {}
    families = np.full(N, -1, np.int64)
    if all(p is not None for p in pops):
        population = _concat_populations(pops, Population)
        families = population.family_code.cpu().numpy().astype(np.int64)
        truth_model = ins.PopulationModel(population)
        verification, extra = _verification(view, truth_model, population, gab, cfg, seed, progress)
        ver_arrays = extra["arrays"]
        vidx = extra["vidx"]
        tind = _truth_indices(truth_model, population, vidx, exp_cfg, progress)
        for k, v in tind.items():
            a = np.full(N, np.nan, np.float32)
            a[vidx] = v
            truth_arrays[k] = a
        names = ["phase", "suppression", "plaid", "orientation", "contrast"]
        verification["spearman_twin_vs_truth"] = an.spearman_table(
            {k: exp_n["indices"][k][vidx] for k in names}, {k: tind[k] for k in names})
        verification["spearman_targets"] = {"phase": 0.8, "suppression": 0.8, "plaid": 0.8}
        verification["combinatorial"] = _truth_combinations(population, labels, comb, exp_n["indices"], gabor_like)
    done("verification", t0)
    report["timing_seconds"] = timing
    report["seconds_total"] = round(time.perf_counter() - t_all, 2)

    clusters = []
    for k in range(K):
        m = labels == k
        row = {"cluster": k, "size": int(m.sum()), "mean_test_corr": float(np.nanmean(test_corr[m])) if m.any() else None,
               "gabor_like": bool(gabor_like[k]), "code": int(comb["code"][k]),
               "means": {n: (None if not np.isfinite(v[k]) else float(v[k])) for n, v in means.items()},
               "ks": {n: ks["per_cluster"][k].get(n) for n in cidx} if k < len(ks["per_cluster"]) else {},
               "gabor_response": float(cgab.response[k]), "mei_response": float(cm.response[k])}
        if families.min() >= 0:
            fam_counts = np.bincount(families[m], minlength=len(FAMILIES))
            row["true_family_counts"] = {FAMILIES[i]: int(c) for i, c in enumerate(fam_counts) if c}
        clusters.append(row)
    analysis = {"ks": {k: v for k, v in ks.items() if k != "per_cluster"}, "correlations_clusters": corrs,
                "correlations_neurons_spearman": corrs_n, "combinatorial": _jsonable_comb(comb),
                "population_means": pop_mean, "checks": checks,
                "greedy_selection": {k: verification.get(k) for k in ("greedy_coverage_at_50pct", "coverage_curves")},
                "suboptimal_vs_optimal_tuning": verification.get("suboptimal_vs_optimal_tuning")}
    report.update({"n_neurons": N, "n_clusters": K, "n_animals": len(animals),
                   "median_test_corr": float(np.nanmedian(test_corr)), "checks": checks,
                   "ks": analysis["ks"], "combinatorial": {"n_combinations_present": comb["n_combinations_present"],
                                                           "table": [{k: r[k] for k in ("name", "n_clusters", "n_neurons")}
                                                                     for r in comb["table"]]},
                   "correlations_gabor_like": [{"x": r["x"], "y": r["y"], **(r.get("gabor_like") or {})}
                                               for r in corrs],
                   "verification": verification})
    meta = {
        "schema": TWIN_SCHEMA, "animals": animals, "families": list(FAMILIES), "scale": scale, "seed": seed,
        "indices": sorted(exp_n["indices"]), "gabor_params": list(ins.GABOR_PARAMS), "dog_params": list(ins.DOG_PARAMS),
        "image_shape": list(view.image_shape), "mei_norm": mcfg.norm,
        "experiments": {
            "orientation": {"axes": ["orientation offset"], "units": ["rad"]},
            "phase": {"axes": ["phase offset"], "units": ["rad"]},
            "size_contrast": {"axes": ["contrast", "size factor"], "units": ["Michelson", "x optimal size"]},
            "plaid": {"axes": ["preferred contrast", "orthogonal contrast"], "units": ["Michelson", "Michelson"]},
            "energy": {"axes": ["stimulus (Gabor, DoG, MEI)", "energy"], "units": ["", "L2 norm"]},
        },
        "config": {k: v for k, v in cfg.items() if not k.startswith("_")},
    }
    arrays: dict[str, np.ndarray] = {
        "neurons/id": ids, "neurons/animal": animal_idx.astype(np.int64), "neurons/cluster": labels,
        "neurons/embedding": ac["embedding"].astype(np.float32), "neurons/test_corr": test_corr,
        "neurons/angle": ac["angles"].astype(np.float32), "neurons/rf_center": view.centers.numpy().astype(np.float32),
        "neurons/family": families, "neurons/glm_test_corr": glm_corr,
        "mei/neuron": nm.images.astype(np.float16), "mei/cluster": cm.images.astype(np.float32),
        "mei/neuron_response": nm.response.astype(np.float32),
        "mei/cluster_response": np.asarray(cm.extra["per_neuron"], np.float32),
        "gabor/neuron": gab.params.astype(np.float32), "gabor/cluster": cgab.params.astype(np.float32),
        "gabor/neuron_response": gab.response.astype(np.float32),
        "gabor/cluster_response": np.asarray(cgab.stats["per_neuron"], np.float32),
        "dog/neuron": dg.params.astype(np.float32), "dog/cluster": cdog.params.astype(np.float32),
    }
    for k, v in exp_n["indices"].items():
        arrays[f"indices/{k}"] = np.asarray(v, np.float32)
    for k, v in exp_c["indices"].items():
        arrays[f"cluster_indices/{k}"] = np.asarray(v, np.float32)
    for k, v in truth_arrays.items():
        arrays[f"truth_indices/{k}"] = v
    for k, v in exp_n["tuning"].items():
        arrays[f"tuning/{k}"] = np.asarray(v, np.float32 if "_axis_" in k else np.float16)
    for k, v in exp_c["tuning"].items():
        if "_axis_" not in k:
            arrays[f"cluster_tuning/{k}"] = np.asarray(v, np.float16)
    for k, v in ver_arrays.items():
        arrays[f"verification/{k}"] = np.asarray(v, np.float32)
    documents = {"meta": meta, "clusters": clusters, "analysis": analysis, "report": report}
    from reprlab.io import to_jsonable

    documents = to_jsonable(documents)
    if out is not None:
        from reprlab.io import write_bundle

        write_bundle(out, BUNDLE_KIND, arrays=arrays, documents=documents, config=meta["config"])
        twin = load_twin(out)
    else:
        groups: dict[str, dict[str, np.ndarray]] = {g: {} for g in _GROUPS}
        for name, arr in arrays.items():
            g, _, rest = name.partition("/")
            groups[g][rest] = arr
        twin = Twin(path=None, meta=documents["meta"], clusters=documents["clusters"], analysis=documents["analysis"],
                    report=documents["report"], **groups)
    return twin, documents["report"]


def _fit_or_load(datasets: list, scale: str, seed: int, progress: bool, overrides: dict,
                 work_dir: str | os.PathLike | None) -> tuple[Any, dict]:
    from reprlab.v1.model import V1Twin
    from reprlab.v1.train import fit_twin

    if work_dir is None:
        return fit_twin(datasets, scale=scale, seed=seed, progress=progress, **overrides)
    from reprlab.io import atomic_write_json, to_jsonable

    wd = Path(work_dir)
    wd.mkdir(parents=True, exist_ok=True)
    tag = f"{scale}-{seed}-" + "-".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    tag = "".join(ch if ch.isalnum() or ch in "-=." else "_" for ch in tag)
    path = wd / f"model-{tag}.pt"
    rep_path = wd / f"model-{tag}.json"
    if path.exists() and rep_path.exists():
        import json

        return V1Twin.load(path), json.loads(rep_path.read_text())
    model, rep = fit_twin(datasets, scale=scale, seed=seed, progress=progress, out=wd / f"fit-{tag}.ckpt", **overrides)
    model.save(path)
    atomic_write_json(rep_path, to_jsonable({k: v for k, v in rep.items() if k != "history"}))
    return model, rep


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return None
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _jsonable_comb(comb: dict) -> dict:
    return {"code": [int(c) for c in comb["code"]], "table": comb["table"],
            "n_combinations_present": comb["n_combinations_present"], "thresholds": comb["thresholds"]}


def _concat_populations(pops: list, cls: Any) -> Any:
    """One population of all animals' true neurons, in bundle order."""
    if len(pops) == 1:
        return pops[0]
    arrays = [p.to_arrays() for p in pops]
    fields = set(cls._tensor_fields()) | {"family"}
    merged = {k: np.concatenate([a[k] for a in arrays]) if k in fields else arrays[0][k] for k in arrays[0]}
    return cls.from_arrays(merged)


def _truth_combinations(population: Any, labels: np.ndarray, comb: dict, twin_indices: dict,
                        gabor_like: np.ndarray) -> dict[str, Any]:
    """Which of the 8 combinations the truth contains, and which the twin's table recovers."""
    from reprlab.v1 import analysis as an

    gl = population.gabor_like.cpu().numpy().astype(bool) if hasattr(population, "gabor_like") else \
        population.oriented.cpu().numpy().astype(bool)
    pi = population.phase_invariant.cpu().numpy().astype(bool)
    ss = population.surround_suppressed.cpu().numpy().astype(bool)
    coi = population.cross_orientation_inhibited.cpu().numpy().astype(bool)
    code_true = pi.astype(int) + 2 * ss.astype(int) + 4 * coi.astype(int)
    counts = np.bincount(code_true[gl], minlength=8)
    truth_present = [int(c) for c in range(8) if counts[c] >= max(1, 0.01 * gl.sum())]
    twin_present = [int(r["code"]) for r in comb["table"] if r["n_clusters"] > 0]
    # per cluster: the truth's majority combination among its Gabor-family neurons
    K = int(labels.max()) + 1
    agree, n_cmp = 0, 0
    per_cluster = []
    for k in range(K):
        m = (labels == k) & gl
        maj = int(np.bincount(code_true[m], minlength=8).argmax()) if m.any() else -1
        tw = int(comb["code"][k])
        per_cluster.append({"cluster": k, "truth_majority": maj, "twin_code": tw,
                            "purity": float((code_true[m] == maj).mean()) if m.any() else None})
        if tw >= 0 and maj >= 0:
            n_cmp += 1
            agree += int(tw == maj)
    # per neuron: binarised twin indices (population-mean threshold) vs true flags, Gabor families
    bal = {}
    for name, flag, key, low in (("phase_invariant", pi, "phase", True), ("suppressed", ss, "suppression", False),
                                 ("coi", coi, "plaid", False)):
        v = np.asarray(twin_indices[key], dtype=np.float64)
        thr = np.nanmean(v)
        pred = v < thr if low else v > thr
        y, p = flag[gl], pred[gl]
        tpr = float((p & y).sum() / max(y.sum(), 1))
        tnr = float((~p & ~y).sum() / max((~y).sum(), 1))
        bal[name] = {"balanced_accuracy": 0.5 * (tpr + tnr), "n_true": int(y.sum()), "n": int(len(y))}
    return {"truth_combinations": [an.combination_name(bool(c & 1), bool(c & 2), bool(c & 4)) for c in truth_present],
            "truth_codes": truth_present, "truth_counts": counts.tolist(), "twin_codes": twin_present,
            "recovered": sorted(set(truth_present) & set(twin_present)),
            "n_recovered": len(set(truth_present) & set(twin_present)), "n_truth": len(truth_present),
            "cluster_agreement": {"n_agree": agree, "n_compared": n_cmp}, "per_cluster": per_cluster,
            "neuron_binarisation": bal, "gabor_like_clusters": int(np.asarray(gabor_like).sum())}


_ = math
