"""A structurally valid twin bundle for UI tests and development of the twin explorer.

THIS IS A UI FIXTURE, NOT SCIENCE. :func:`write_twin_fixture` writes a bundle with the layout
documented in :mod:`reprlab.v1.twin` (``reprlab.io.write_bundle`` kind ``"twin"``) filled with
*structured synthetic values*: clusters are Gaussian blobs in the embedding, MEIs are Gabors
(``reprlab.v1.stimuli.gabor``) or DoGs with a cluster-specific orientation / frequency plus
per-neuron jitter, tuning curves are smooth textbook shapes whose modulation depends on the
cluster, and the indices and KS results are computed from those made-up values. Nothing here is
fitted or measured; it only exists so the explorer can be built and tested before (or without)
``python -m reprlab v1 twin`` has produced ``data/twin_default``.

Usage::

    from twin_bundle_fixture import write_twin_fixture   # tests/ is on sys.path under pytest
    path = write_twin_fixture(tmp_path / "twin", n_neurons=600, n_clusters=8)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

FIXTURE_NOTE = "UI fixture (tests/twin_bundle_fixture.py): synthetic structured values, not a twin"
INDEX_NAMES = ("orientation", "phase", "f2_f0_phase", "suppression", "contrast", "plaid",
               "gabor_vs_dog", "gabor_vs_mei", "dog_vs_mei", "nonlinearity")
KS_PROPERTIES = ("orientation", "phase", "suppression", "plaid", "gabor_vs_dog", "gabor_vs_mei",
                 "dog_vs_mei", "nonlinearity")
GABOR_PARAMS = ("center_x", "center_y", "size", "spatial_frequency", "contrast", "orientation", "phase")
DOG_PARAMS = ("center_x", "center_y", "sigma_center", "sigma_surround", "contrast_center",
              "contrast_surround")
FAMILIES = ("simple", "simple_ss", "simple_coi", "simple_ss_coi", "complex", "complex_ss",
            "complex_coi", "complex_ss_coi", "dog_on", "dog_off", "corner")
EXPERIMENTS = {
    "orientation": {"axes": ["orientation offset"], "units": ["rad"]},
    "phase": {"axes": ["phase offset"], "units": ["rad"]},
    "size_contrast": {"axes": ["contrast", "size factor"], "units": ["Michelson", "x optimal size"]},
    "plaid": {"axes": ["preferred contrast", "orthogonal contrast"], "units": ["Michelson", "Michelson"]},
    "energy": {"axes": ["stimulus (Gabor, DoG, MEI)", "energy"], "units": ["", "L2 norm"]},
}


def _combination_name(code: int) -> str:
    parts = [n for n, bit in (("phase-invariant", 1), ("suppressed", 2), ("COI", 4)) if code & bit]
    return " + ".join(parts) if parts else "none"


def make_twin_arrays(n_neurons: int = 600, n_clusters: int = 8, n_animals: int = 3,
                     image_shape: tuple[int, int] = (36, 64), seed: int = 0,
                     truth: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and documents of a synthetic twin bundle (UI fixture; see the module docstring)."""
    import torch
    from reprlab.v1 import stimuli as stim

    if n_neurons < 2 * n_clusters or n_clusters < 2:
        raise ValueError(f"need n_clusters >= 2 and n_neurons >= 2 * n_clusters, got {n_neurons}, {n_clusters}")
    rng = np.random.default_rng(seed)
    N, K = int(n_neurons), int(n_clusters)
    H, W = (int(s) for s in image_shape)

    # --- cluster prototypes ------------------------------------------------------------------
    weights = rng.dirichlet(np.full(K, 4.0))
    labels = np.concatenate([np.arange(K), rng.choice(K, N - K, p=weights)])
    rng.shuffle(labels)
    is_dog = np.zeros(K, bool)
    is_dog[rng.choice(K, max(1, K // 6), replace=False)] = True
    proto = {
        "orientation": rng.uniform(0, math.pi, K), "sf": rng.uniform(0.06, 0.16, K),
        "size": rng.uniform(7, 14, K), "phase": rng.uniform(0, 2 * math.pi, K),
        "phase_mod": rng.uniform(0.05, 0.95, K), "suppression": rng.uniform(0.05, 0.8, K),
        "coi": rng.uniform(0.0, 0.7, K), "ori_width": rng.uniform(0.25, 0.8, K),
    }
    angle_c = rng.uniform(0, 2 * math.pi, K)
    radius = np.sqrt(rng.uniform(0.15, 1.0, K)) * 40
    centres = np.stack([radius * np.cos(angle_c), radius * np.sin(angle_c)], 1)
    embedding = centres[labels] + rng.normal(0, 3.0, (N, 2)) * (1 + weights[labels] * K / 4)[:, None] ** 0.5

    def jitter(name: str, scale: float) -> np.ndarray:
        return proto[name][labels] + rng.normal(0, scale, N)

    animal = rng.integers(0, n_animals, N)
    test_corr = np.clip(rng.beta(5, 4, N) * 0.9, 0.02, 0.95)
    rf = np.stack([rng.uniform(0.25 * W, 0.75 * W, N), rng.uniform(0.25 * H, 0.75 * H, N)], 1)
    angle = rng.uniform(0, 2 * math.pi, N)
    ori = np.mod(jitter("orientation", 0.05) + angle, math.pi)
    sf = np.clip(jitter("sf", 0.01), 0.03, 0.3)
    size = np.clip(jitter("size", 1.0), 3.0, 30.0)
    phase = np.mod(jitter("phase", 0.3), 2 * math.pi)
    phase_mod = np.clip(jitter("phase_mod", 0.06), 0.0, 1.0)
    supp = np.clip(jitter("suppression", 0.06), 0.0, 1.0)
    coi = np.clip(jitter("coi", 0.06), 0.0, 1.0)
    ori_width = np.clip(jitter("ori_width", 0.05), 0.15, 1.2)

    # --- optimal Gabors / DoGs and MEIs ----------------------------------------------------
    gab_n = np.stack([rf[:, 0], rf[:, 1], size, sf, np.ones(N), ori, phase], 1).astype(np.float32)
    gab_c = np.stack([np.full(K, (W - 1) / 2), np.full(K, (H - 1) / 2), proto["size"], proto["sf"],
                      np.ones(K), proto["orientation"], proto["phase"]], 1).astype(np.float32)
    s_cen = np.clip(size / 4, 1.0, None)
    dog_n = np.stack([rf[:, 0], rf[:, 1], s_cen, 2.5 * s_cen, np.where(rng.random(N) < 0.5, 0.5, -0.5),
                      np.full(N, 0.4)], 1).astype(np.float32)
    dog_c = np.stack([np.full(K, (W - 1) / 2), np.full(K, (H - 1) / 2), proto["size"] / 4, proto["size"] / 1.6,
                      np.where(rng.random(K) < 0.5, 0.5, -0.5), np.full(K, 0.4)], 1).astype(np.float32)
    meis = np.empty((N, H, W), np.float16)
    for lo in range(0, N, 2048):
        sl = slice(lo, min(N, lo + 2048))
        g = stim.gabor(*(torch.as_tensor(gab_n[sl, i]) for i in (0, 1, 2, 3, 5, 6)), contrast=0.9, shape=(H, W))
        d = stim.dog(*(torch.as_tensor(dog_n[sl, i]) for i in range(6)), shape=(H, W))
        dog_like = torch.as_tensor(is_dog[labels[sl]])[:, None, None]
        img = torch.where(dog_like, d, g).numpy() + rng.normal(0, 0.02, (sl.stop - lo, H, W))
        meis[sl] = np.clip(img, -0.5, 0.5).astype(np.float16)
    cg = stim.gabor(*(torch.as_tensor(gab_c[:, i]) for i in (0, 1, 2, 3, 5, 6)), contrast=0.9, shape=(H, W))
    cd = stim.dog(*(torch.as_tensor(dog_c[:, i]) for i in range(6)), shape=(H, W))
    gab_c[:, :2] = 0.0  # cluster stimuli are stored in the canonical, RF-relative frame (as build_twin does)
    dog_c[:, :2] = 0.0
    mei_c = torch.where(torch.as_tensor(is_dog)[:, None, None], cd, cg).numpy().astype(np.float32)

    # --- tuning curves (smooth shapes; rates in spikes per bin) ---------------------------------
    gain = rng.gamma(4.0, 0.5, N)
    o_ax = np.arange(8) * math.pi / 8
    p_ax = np.arange(8) * 2 * math.pi / 8
    c_ax = np.array([0.25, 0.5, 1.0])
    s_ax = np.array([0.5, 1.0, 2.0, 4.0])
    pl_ax = np.array([0.0, 0.25, 0.5])
    e_ax = np.array([1.0, 3.0])

    def curves(g: np.ndarray, noise: float) -> dict[str, np.ndarray]:
        dtheta = np.angle(np.exp(2j * o_ax))[None, :] / 2
        ori_c = g[:, None] * (0.1 + np.exp(-(dtheta ** 2) / (2 * ori_width[:, None] ** 2)))
        ph_c = g[:, None] * (1 + phase_mod[:, None] * np.cos(p_ax)[None, :]) / 2
        cr = c_ax ** 2 / (c_ax ** 2 + 0.25 ** 2)
        sr = s_ax ** 2 / (1 + s_ax ** 2) * (1 - supp[:, None] * np.clip(s_ax - 1, 0, None) / 3)
        sc_c = g[:, None, None] * cr[None, :, None] * sr[:, None, :]
        pref = pl_ax ** 2 / (pl_ax ** 2 + 0.2 ** 2)
        mask = 1 - coi[:, None, None] * (pl_ax / pl_ax.max())[None, None, :]
        pl_c = g[:, None, None] * (0.05 + pref[None, :, None]) * mask
        en = g[:, None, None] * np.stack([np.full(N, 0.8), np.where(is_dog[labels], 1.0, 0.5),
                                          np.full(N, 1.1)], 1)[:, :, None] * (e_ax / e_ax.max())[None, None, :]
        out = {"orientation": ori_c, "phase": ph_c, "size_contrast": sc_c, "plaid": pl_c, "energy": en}
        return {k: np.clip(v * (1 + rng.normal(0, noise, v.shape)), 0, None) for k, v in out.items()}

    own, clus = curves(gain, 0.05), curves(gain * 0.85, 0.08)

    def indices(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        f = np.fft.rfft(c["orientation"], axis=1)
        pf = np.fft.rfft(c["phase"], axis=1)
        f0 = np.maximum(np.abs(pf[:, 0]), 1e-9)
        sc = c["size_contrast"]
        top = sc[:, -1]
        low = sc[:, 0]
        pl = c["plaid"]
        en = c["energy"][:, :, -1]
        return {
            "orientation": np.abs(f[:, 2 if f.shape[1] > 2 else 1]) / np.maximum(np.abs(f[:, 0]), 1e-9),
            "phase": 2 * np.abs(pf[:, 1]) / f0, "f2_f0_phase": 2 * np.abs(pf[:, 2]) / f0,
            "suppression": 1 - top[:, -1] / np.maximum(top.max(1), 1e-9),
            "contrast": 1 - low.argmax(1) / max(1, low.shape[1] - 1) * 0.5 - 0.5 * top.argmax(1) / max(1, top.shape[1] - 1),
            "plaid": 1 - pl[:, -1, -1] / np.maximum(pl[:, -1, 0], 1e-9),
            "gabor_vs_dog": en[:, 0] / np.maximum(en[:, 1], 1e-9),
            "gabor_vs_mei": en[:, 0] / np.maximum(en[:, 2], 1e-9),
            "dog_vs_mei": en[:, 1] / np.maximum(en[:, 2], 1e-9),
            "nonlinearity": np.clip(test_corr - test_corr * rng.uniform(0.5, 0.9, N), 0, None),
        }

    ind_n, ind_c = indices(own), indices(clus)
    arrays: dict[str, np.ndarray] = {
        "neurons/id": (np.arange(N) + 10_000).astype(np.int64),
        "neurons/animal": animal.astype(np.int64),
        "neurons/cluster": labels.astype(np.int64),
        "neurons/embedding": embedding.astype(np.float32),
        "neurons/test_corr": test_corr.astype(np.float32),
        "neurons/angle": angle.astype(np.float32),
        "neurons/rf_center": rf.astype(np.float32),
        "neurons/family": np.full(N, -1, np.int64),
        "neurons/glm_test_corr": (test_corr * rng.uniform(0.4, 0.9, N)).astype(np.float32),
        "mei/neuron": meis, "mei/cluster": mei_c,
        "mei/neuron_response": (gain * 1.3).astype(np.float32),
        "mei/cluster_response": (gain * 0.8).astype(np.float32),
        "gabor/neuron": gab_n, "gabor/cluster": gab_c,
        "gabor/neuron_response": gain.astype(np.float32),
        "gabor/cluster_response": (gain * 0.87).astype(np.float32),
        "dog/neuron": dog_n, "dog/cluster": dog_c,
    }
    for name in INDEX_NAMES:
        arrays[f"indices/{name}"] = ind_n[name].astype(np.float32)
        arrays[f"cluster_indices/{name}"] = ind_c[name].astype(np.float32)
    if truth:
        fam = np.where(is_dog[labels], 8 + (dog_n[:, 4] < 0), (phase_mod < 0.5) * 4 + (supp > 0.4) * 1
                       + (coi > 0.35) * 2)
        arrays["neurons/family"] = fam.astype(np.int64)
        measured = rng.random(N) < 0.5
        for name in ("phase", "suppression", "plaid", "orientation", "contrast"):
            t = ind_n[name] + rng.normal(0, 0.1 * np.nanstd(ind_n[name]) + 1e-6, N)
            arrays[f"truth_indices/{name}"] = np.where(measured, t, np.nan).astype(np.float32)
    axes = {"orientation": [o_ax], "phase": [p_ax], "size_contrast": [c_ax, s_ax], "plaid": [pl_ax, pl_ax],
            "energy": [np.arange(3.0), e_ax]}
    for exp, ax in axes.items():
        arrays[f"tuning/{exp}"] = own[exp].astype(np.float16)
        arrays[f"cluster_tuning/{exp}"] = clus[exp].astype(np.float16)
        for i, a in enumerate(ax):
            arrays[f"tuning/{exp}_axis_{i}"] = np.asarray(a, np.float32)

    # --- documents: cluster summaries, KS tests, combinatorial code -------------------------------
    from scipy import stats

    means = {p: np.array([np.nanmean(ind_c[p][labels == k]) for k in range(K)]) for p in KS_PROPERTIES}
    pop_mean = {p: float(np.nanmean(ind_c[p])) for p in KS_PROPERTIES}
    gabor_like = ~is_dog
    code = np.where(gabor_like, (means["phase"] < pop_mean["phase"]) * 1
                    + (means["suppression"] > pop_mean["suppression"]) * 2
                    + (means["plaid"] > pop_mean["plaid"]) * 4, -1).astype(int)
    sizes = np.bincount(labels, minlength=K)
    clusters = []
    for k in range(K):
        m = labels == k
        ks = {}
        for p in KS_PROPERTIES:
            r = stats.ks_2samp(ind_c[p][m], ind_c[p])
            ks[p] = {"statistic": float(r.statistic), "p": float(r.pvalue), "significant": bool(r.pvalue < 0.01)}
        row = {"cluster": k, "size": int(sizes[k]), "mean_test_corr": float(test_corr[m].mean()),
               "gabor_like": bool(gabor_like[k]), "code": int(code[k]),
               "means": {p: float(means[p][k]) for p in KS_PROPERTIES}, "ks": ks,
               "gabor_response": float(gain[m].mean() * 0.87), "mei_response": float(gain[m].mean() * 0.8)}
        if truth:
            fc = np.bincount(arrays["neurons/family"][m], minlength=len(FAMILIES))
            row["true_family_counts"] = {FAMILIES[i]: int(c) for i, c in enumerate(fc) if c}
        clusters.append(row)
    table = []
    for c in range(8):
        sel = np.flatnonzero(code == c)
        table.append({"code": c, "phase_invariant": bool(c & 1), "suppressed": bool(c & 2), "coi": bool(c & 4),
                      "name": _combination_name(c), "n_clusters": int(len(sel)), "n_neurons": int(sizes[sel].sum()),
                      "clusters": sel.tolist()})
    n_sig = sum(any(v["significant"] for v in c["ks"].values()) for c in clusters)
    analysis = {
        "note": FIXTURE_NOTE,
        "ks": {"alpha": 0.01, "properties": list(KS_PROPERTIES), "n_clusters_tested": K, "n_significant_any": n_sig},
        "combinatorial": {"code": code.tolist(), "table": table,
                          "n_combinations_present": int(sum(r["n_clusters"] > 0 for r in table)),
                          "thresholds": {p: pop_mean[p] for p in ("phase", "suppression", "plaid")}},
        "population_means": pop_mean,
    }
    meta = {"schema": 1, "animals": [f"fixture-animal-{i}" for i in range(n_animals)], "families": list(FAMILIES),
            "scale": "fixture", "seed": int(seed), "indices": sorted(INDEX_NAMES), "gabor_params": list(GABOR_PARAMS),
            "dog_params": list(DOG_PARAMS), "image_shape": [H, W], "experiments": EXPERIMENTS, "note": FIXTURE_NOTE}
    report = {"note": FIXTURE_NOTE, "n_neurons": N, "n_clusters": K}
    documents = {"meta": meta, "clusters": clusters, "analysis": analysis, "report": report}
    return arrays, documents


def write_twin_fixture(path: str | Path, n_neurons: int = 600, n_clusters: int = 8, n_animals: int = 3,
                       image_shape: tuple[int, int] = (36, 64), seed: int = 0, truth: bool = True) -> Path:
    """Write a synthetic twin bundle (UI fixture, not science) at ``path`` and return the path."""
    from reprlab.io import write_bundle

    arrays, documents = make_twin_arrays(n_neurons, n_clusters, n_animals, image_shape, seed, truth)
    return write_bundle(path, "twin", arrays=arrays, documents=documents,
                        config={"fixture": True, "n_neurons": n_neurons, "n_clusters": n_clusters, "seed": seed,
                                "note": FIXTURE_NOTE})


if __name__ == "__main__":  # python tests/twin_bundle_fixture.py OUT [N] [K]
    import sys

    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/twin_fixture"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 600
    k = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    print(write_twin_fixture(out, n_neurons=n, n_clusters=k))
