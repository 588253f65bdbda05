"""Analyses of in silico experiments (digital-twin paper, Results and Figs. 3-5).

* :func:`ks_tests` - per property, two-sided Kolmogorov-Smirnov test of each cluster against the
  population (α = 0.01), with the random-label baseline the paper quotes.
* :func:`cluster_means` / :func:`property_correlations` - cluster-average indices and their
  pairwise correlations with p-values, for Gabor-like clusters and for all (Fig. 4A).
* :func:`combinatorial_table` - binarised tuning (above / below the population mean) and the
  8 combinations of phase invariance x surround suppression x cross-orientation inhibition
  (Fig. 4B-D).
* :func:`greedy_gabor_selection` / :func:`coverage_curve` - a few Gabors that drive most neurons
  to a fraction of their optimal-Gabor response (Fig. 5D-E, Methods "Selection of suboptimal
  stimuli").
* :func:`tuning_curve_correlation` / :func:`oracle_fraction` - agreement of twin and "in vivo"
  tuning curves as a fraction of the oracle correlation (Fig. 5B).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "COMBINATION_PROPERTIES",
    "cluster_means",
    "combinatorial_table",
    "coverage_curve",
    "greedy_gabor_selection",
    "ks_tests",
    "oracle_correlation",
    "oracle_fraction",
    "property_correlations",
    "spearman_table",
    "suboptimal_tuning_similarity",
    "tuning_curve_correlation",
]

COMBINATION_PROPERTIES: tuple[str, str, str] = ("phase", "suppression", "plaid")
"""Indices binarised for the combinatorial code. A *low* phase index (F1/F0) means phase
invariance, so ``phase_invariant = phase < mean``; ``suppressed = suppression > mean``;
``coi = plaid > mean``."""


def _labels(labels: Any, n: int) -> np.ndarray:
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != n:
        raise ValueError(f"labels must have one entry per neuron ({n}), got {lab.shape[0]}")
    lab = lab.astype(np.int64)
    if (lab < 0).any():
        raise ValueError("cluster labels must be >= 0")
    return lab


def _indices(indices: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int]:
    if not indices:
        raise ValueError("indices must hold at least one property (name -> (N,) array)")
    out = {str(k): np.asarray(v, dtype=np.float64).reshape(-1) for k, v in indices.items()}
    ns = {k: len(v) for k, v in out.items()}
    if len(set(ns.values())) != 1:
        raise ValueError(f"all index arrays must have the same length, got {ns}")
    return out, next(iter(ns.values()))


def ks_tests(indices: Mapping[str, Any], labels: Any, alpha: float = 0.01, min_size: int = 5,
             n_shuffles: int = 5, random_state: int = 0) -> dict[str, Any]:
    """Two-sided KS test of each cluster's index distribution against the whole population.

    Returns ``per_cluster`` (list of ``{cluster, size, <prop>: {statistic, p, significant}}``),
    ``n_significant_any`` / ``n_significant_all`` (clusters different on at least one / on all
    properties), the number of tested clusters (size >= ``min_size``), and the same two counts
    under random label permutations (mean over ``n_shuffles``) as the paper's baseline."""
    idx, n = _indices(indices)
    lab = _labels(labels, n)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")

    def run(lb: np.ndarray) -> tuple[list[dict], int, int, int]:
        rows, n_any, n_all, tested = [], 0, 0, 0
        for k in np.unique(lb):
            m = lb == k
            row: dict[str, Any] = {"cluster": int(k), "size": int(m.sum())}
            if m.sum() < min_size:
                rows.append(row)
                continue
            tested += 1
            sig = []
            for name, v in idx.items():
                ok = np.isfinite(v)
                a, b = v[m & ok], v[ok]
                if len(a) < 2:
                    continue
                res = stats.ks_2samp(a, b, alternative="two-sided")
                s = bool(res.pvalue < alpha)
                row[name] = {"statistic": float(res.statistic), "p": float(res.pvalue), "significant": s}
                sig.append(s)
            n_any += int(any(sig))
            n_all += int(bool(sig) and all(sig))
            rows.append(row)
        return rows, n_any, n_all, tested

    rows, n_any, n_all, tested = run(lab)
    rng = np.random.default_rng(random_state)
    shuf = [run(rng.permutation(lab))[1:3] for _ in range(int(n_shuffles))]
    return {
        "alpha": alpha, "properties": list(idx), "per_cluster": rows, "n_clusters_tested": tested,
        "n_significant_any": n_any, "n_significant_all": n_all,
        "random_labels": {"n_significant_any": float(np.mean([s[0] for s in shuf])) if shuf else None,
                          "n_significant_all": float(np.mean([s[1] for s in shuf])) if shuf else None},
    }


def cluster_means(indices: Mapping[str, Any], labels: Any) -> dict[str, np.ndarray]:
    """Average index per cluster (NaNs ignored): ``{name: (K,)}`` (K = max label + 1)."""
    idx, n = _indices(indices)
    lab = _labels(labels, n)
    K = int(lab.max()) + 1
    out = {}
    for name, v in idx.items():
        m = np.full(K, np.nan)
        for k in range(K):
            vals = v[(lab == k) & np.isfinite(v)]
            if len(vals):
                m[k] = vals.mean()
        out[name] = m
    return out


def property_correlations(means: Mapping[str, Any], gabor_like: Any = None,
                          method: str = "pearson") -> list[dict[str, Any]]:
    """Pairwise correlations between cluster-average properties with p-values (Fig. 4A), for all
    clusters and (when ``gabor_like`` is given) for the Gabor-like ones."""
    m, K = _indices(means)
    gl = None if gabor_like is None else np.asarray(gabor_like, dtype=bool).reshape(-1)
    if gl is not None and len(gl) != K:
        raise ValueError(f"gabor_like must have one flag per cluster ({K}), got {len(gl)}")
    fn = {"pearson": stats.pearsonr, "spearman": stats.spearmanr}.get(method)
    if fn is None:
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")

    def corr(a: np.ndarray, b: np.ndarray) -> dict[str, float | int | None]:
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
            return {"r": None, "p": None, "n": int(ok.sum())}
        r, p = fn(a[ok], b[ok])
        return {"r": float(r), "p": float(p), "n": int(ok.sum())}

    out = []
    for a, b in combinations(list(m), 2):
        row: dict[str, Any] = {"x": a, "y": b, "all": corr(m[a], m[b])}
        if gl is not None:
            row["gabor_like"] = corr(m[a][gl], m[b][gl])
        out.append(row)
    return out


def _binarise(means: Mapping[str, np.ndarray], thresholds: Mapping[str, float]) -> dict[str, np.ndarray]:
    return {
        "phase_invariant": means["phase"] < thresholds["phase"],
        "suppressed": means["suppression"] > thresholds["suppression"],
        "coi": means["plaid"] > thresholds["plaid"],
    }


def combination_name(pi: bool, ss: bool, coi: bool) -> str:
    parts = [n for n, f in (("phase-invariant", pi), ("suppressed", ss), ("COI", coi)) if f]
    return " + ".join(parts) if parts else "none"


def combinatorial_table(means: Mapping[str, Any], thresholds: Mapping[str, float], gabor_like: Any = None,
                        sizes: Any = None) -> dict[str, Any]:
    """Binarised tuning of each cluster and the table of the 8 combinations (Fig. 4B-D).

    ``means`` are cluster averages (``phase``, ``suppression``, ``plaid`` required);
    ``thresholds`` the population means of the same indices. Only Gabor-like clusters enter the
    table when ``gabor_like`` is given. Returns ``code (K,)`` in 0..7 (bit 0 phase-invariant,
    bit 1 suppressed, bit 2 COI; -1 = not Gabor-like), ``table`` (8 rows: combination, number of
    clusters, neurons, cluster ids) and ``n_combinations_present``."""
    m, K = _indices({k: means[k] for k in COMBINATION_PROPERTIES if k in means})
    missing = [k for k in COMBINATION_PROPERTIES if k not in m]
    if missing:
        raise ValueError(f"means must include {COMBINATION_PROPERTIES}; missing {missing}")
    b = _binarise(m, thresholds)
    code = (b["phase_invariant"].astype(int) + 2 * b["suppressed"].astype(int) + 4 * b["coi"].astype(int))
    valid = np.all([np.isfinite(m[k]) for k in COMBINATION_PROPERTIES], axis=0)
    if gabor_like is not None:
        valid &= np.asarray(gabor_like, dtype=bool).reshape(-1)
    code = np.where(valid, code, -1)
    sz = np.ones(K, int) if sizes is None else np.asarray(sizes, int).reshape(-1)
    table = []
    for c in range(8):
        sel = np.flatnonzero(code == c)
        table.append({"code": c, "phase_invariant": bool(c & 1), "suppressed": bool(c & 2), "coi": bool(c & 4),
                      "name": combination_name(bool(c & 1), bool(c & 2), bool(c & 4)),
                      "n_clusters": int(len(sel)), "n_neurons": int(sz[sel].sum()), "clusters": sel.tolist()})
    return {"code": code, "table": table, "n_combinations_present": int(sum(r["n_clusters"] > 0 for r in table)),
            "thresholds": {k: float(v) for k, v in thresholds.items()}}


def greedy_gabor_selection(responses: Any, optimal: Any, fraction: float = 0.5,
                           n_select: int = 20) -> dict[str, Any]:
    """Greedy choice of Gabors driving most neurons to ``fraction`` of their optimal response.

    ``responses (N, C)``: each neuron's rate to each candidate Gabor (placed on its RF);
    ``optimal (N,)``: its optimal-Gabor rate. Step ``t`` picks the candidate that reaches the
    threshold in the most neurons not yet covered. Returns ``selected`` (indices), ``covered``
    (cumulative fraction of neurons after each pick) and ``drive (N,)``: each neuron's best
    fraction of its optimum over the selected set."""
    r = np.asarray(responses, dtype=np.float64)
    opt = np.asarray(optimal, dtype=np.float64).reshape(-1)
    if r.ndim != 2 or r.shape[0] != opt.shape[0]:
        raise ValueError(f"responses must be (N, C) with N = len(optimal) = {opt.shape[0]}, got {r.shape}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if n_select < 1:
        raise ValueError("n_select must be >= 1")
    frac = r / np.maximum(opt, 1e-12)[:, None]
    hit = frac >= fraction
    covered = np.zeros(r.shape[0], bool)
    selected, curve = [], []
    for _ in range(min(n_select, r.shape[1])):
        gain = (hit & ~covered[:, None]).sum(0)
        if selected:
            gain[selected] = -1
        j = int(np.argmax(gain))
        if gain[j] <= 0:  # nothing new: pick the candidate with the best mean drive instead
            mean_drive = frac.mean(0)
            mean_drive[selected] = -np.inf
            j = int(np.argmax(mean_drive))
        selected.append(j)
        covered |= hit[:, j]
        curve.append(float(covered.mean()))
    drive = frac[:, selected].max(1)
    return {"selected": selected, "covered": curve, "drive": drive, "fraction": fraction}


def coverage_curve(responses: Any, optimal: Any, selected: Sequence[int], fractions: Any) -> np.ndarray:
    """Share of neurons driven to at least each of ``fractions`` by some Gabor in ``selected``
    (Fig. 5D: x = share of neurons, y = fraction of optimal activity)."""
    r = np.asarray(responses, dtype=np.float64)[:, list(selected)]
    frac = r / np.maximum(np.asarray(optimal, dtype=np.float64), 1e-12)[:, None]
    best = frac.max(1)
    return np.array([(best >= f).mean() for f in np.asarray(fractions, dtype=np.float64)])


def _row_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def tuning_curve_correlation(pred: Any, trials: Any) -> np.ndarray:
    """Per neuron: mean over trials of corr(predicted curve, single-trial curve).

    ``pred (N, S)``, ``trials (R, N, S)`` ("in vivo" single-trial tuning curves)."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(trials, dtype=np.float64)
    if t.ndim != 3 or t.shape[1:] != p.shape:
        raise ValueError(f"trials must be (R, N, S) with (N, S) = {p.shape}, got {t.shape}")
    return np.nanmean(np.stack([_row_corr(p, t[r]) for r in range(t.shape[0])]), 0)


def oracle_correlation(trials: Any) -> np.ndarray:
    """Leave-one-out oracle: mean over trials of corr(single trial, mean of the other trials)."""
    t = np.asarray(trials, dtype=np.float64)
    if t.ndim != 3 or t.shape[0] < 2:
        raise ValueError(f"trials must be (R >= 2, N, S), got {t.shape}")
    R = t.shape[0]
    total = t.sum(0)
    return np.nanmean(np.stack([_row_corr((total - t[r]) / (R - 1), t[r]) for r in range(R)]), 0)


def oracle_fraction(pred: Any, trials: Any, subset: Any = None) -> dict[str, float]:
    """Twin-vs-"in vivo" tuning-curve correlation as a fraction of the oracle (Fig. 5B):
    ``mean corr(pred, trial) / mean oracle`` over neurons (optionally a boolean ``subset``)."""
    c = tuning_curve_correlation(pred, trials)
    o = oracle_correlation(trials)
    m = np.isfinite(c) & np.isfinite(o)
    if subset is not None:
        m &= np.asarray(subset, dtype=bool)
    if not m.any():
        return {"correlation": float("nan"), "oracle": float("nan"), "fraction": float("nan"), "n": 0}
    cm, om = float(c[m].mean()), float(o[m].mean())
    return {"correlation": cm, "oracle": om, "fraction": cm / om if om > 0 else float("nan"), "n": int(m.sum())}


def spearman_table(a: Mapping[str, Any], b: Mapping[str, Any], names: Sequence[str] | None = None) -> dict[str, Any]:
    """Spearman rank correlation per index between two measurements of the same neurons."""
    names = list(names) if names is not None else [k for k in a if k in b]
    out = {}
    for k in names:
        x = np.asarray(a[k], dtype=np.float64).reshape(-1)
        y = np.asarray(b[k], dtype=np.float64).reshape(-1)
        if x.shape != y.shape:
            raise ValueError(f"index {k!r}: shapes differ, {x.shape} vs {y.shape}")
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 3:
            out[k] = {"rho": None, "p": None, "n": int(ok.sum())}
            continue
        r, p = stats.spearmanr(x[ok], y[ok])
        out[k] = {"rho": float(r), "p": float(p), "n": int(ok.sum())}
    return out


def suboptimal_tuning_similarity(sub_curves: Any, opt_curves: Any, drive: Any,
                                 bins: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.01)) -> list[dict[str, Any]]:
    """Fig. 5C: correlation between tuning curves from suboptimal Gabors (``sub_curves (N, G, S)``,
    driving each neuron to ``drive (N, G)`` of its optimum) and from the optimal Gabor
    (``opt_curves (N, S)``), averaged within drive bins."""
    sc = np.asarray(sub_curves, dtype=np.float64)
    oc = np.asarray(opt_curves, dtype=np.float64)
    d = np.asarray(drive, dtype=np.float64)
    if sc.ndim != 3 or oc.shape != (sc.shape[0], sc.shape[2]) or d.shape != sc.shape[:2]:
        raise ValueError(f"expected sub_curves (N, G, S), opt_curves (N, S), drive (N, G); got {sc.shape}, {oc.shape}, {d.shape}")
    corr = _row_corr(sc, np.broadcast_to(oc[:, None, :], sc.shape))
    out = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        m = (d >= lo) & (d < hi) & np.isfinite(corr)
        out.append({"drive_from": float(lo), "drive_to": float(min(hi, 1.0)), "n": int(m.sum()),
                    "mean_correlation": float(corr[m].mean()) if m.any() else None})
    return out
