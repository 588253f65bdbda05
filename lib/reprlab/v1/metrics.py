"""Prediction quality of neural response models, vectorised over neurons.

Definitions follow the thesis' digital-twin work and its references (Walker et al. 2019;
Cadena et al. 2019; Lurz et al. 2021). With ``repeats`` of shape ``(I, R, N)`` (I test
images, R repeats, N neurons) and per-image predictions ``pred (I, N)``:

* **single-trial test correlation**: Pearson correlation over all ``I * R`` trials between
  the prediction (repeated for every repeat) and the single-trial responses;
* **correlation to average**: correlation over images between prediction and repeat mean;
* **oracle correlation**: correlation over trials between each single trial and the mean
  of the *other* ``R - 1`` repeats of the same image (leave-one-out), an estimate of the
  best achievable single-trial correlation;
* **fraction of oracle**: test correlation / oracle correlation per neuron (can exceed 1:
  the oracle is itself a noisy predictor; with 10 repeats the noiseless true rate of a
  simulated neuron scores ~1.02-1.09). The thesis does not define how it is summarised; we
  report the median over neurons and, as in Lurz et al. (2021), the slope of a line through
  the origin fitted to (oracle, test) correlations across neurons (:func:`oracle_slope`);
* **FEV** (fraction of explainable variance explained, Cadena et al. 2019):
  ``1 - (MSE - s2_noise) / (Var[y] - s2_noise)`` with ``s2_noise`` the mean over images
  of the across-repeat variance (ddof 1) and ``Var[y]`` the variance over all trials.

Neurons with zero variance get NaN correlations (summaries use nan-aware statistics).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "correlation",
    "correlation_to_average",
    "evaluate",
    "explainable_variance_fraction",
    "fev",
    "fraction_of_oracle",
    "oracle_correlation",
    "oracle_slope",
    "single_trial_correlation",
    "summarize",
    "test_correlation",
]


def _np(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return a


def _check_repeats(repeats: Any) -> np.ndarray:
    r = _np(repeats, "repeats")
    if r.ndim != 3:
        raise ValueError(f"repeats must be (n_images, n_repeats, n_neurons), got shape {r.shape}")
    if r.shape[1] < 2:
        raise ValueError(f"repeats needs at least 2 repeats per image, got {r.shape[1]}")
    if r.shape[0] < 2:
        raise ValueError(f"repeats needs at least 2 images, got {r.shape[0]}")
    return r


def _check_pred(pred: Any, repeats: np.ndarray) -> np.ndarray:
    p = _np(pred, "predictions")
    if p.ndim == 1 and repeats.shape[2] == 1:
        p = p[:, None]
    if p.shape != (repeats.shape[0], repeats.shape[2]):
        raise ValueError(
            f"predictions must be (n_images, n_neurons) = {(repeats.shape[0], repeats.shape[2])}, got {p.shape}"
        )
    return p


def correlation(a: Any, b: Any, axis: int = 0) -> np.ndarray:
    """Pearson correlation along ``axis`` (default: over samples, one value per column)."""
    x, y = _np(a, "a"), _np(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same shape, got {x.shape} and {y.shape}")
    if x.shape[axis] < 2:
        raise ValueError(f"need at least 2 samples along axis {axis}, got {x.shape[axis]}")
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    num = (x * y).sum(axis=axis)
    den = np.sqrt((x * x).sum(axis=axis) * (y * y).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 1e-12 * max(1.0, float(np.abs(num).max(initial=0.0))), num / den, np.nan)
    return np.clip(out, -1.0, 1.0)


def single_trial_correlation(predictions: Any, responses: Any) -> np.ndarray:
    """Per-neuron correlation over trials of ``predictions (T, N)`` and ``responses (T, N)``."""
    p, r = _np(predictions, "predictions"), _np(responses, "responses")
    if p.ndim != 2 or p.shape != r.shape:
        raise ValueError(f"predictions and responses must both be (n_trials, n_neurons), got {p.shape}, {r.shape}")
    return correlation(p, r, axis=0)


def test_correlation(pred: Any, repeats: Any) -> np.ndarray:
    """Single-trial correlation with per-image predictions ``(I, N)`` and ``repeats (I, R, N)``."""
    r = _check_repeats(repeats)
    p = _check_pred(pred, r)
    pt = np.broadcast_to(p[:, None, :], r.shape).reshape(-1, r.shape[2])
    return correlation(pt, r.reshape(-1, r.shape[2]), axis=0)


def correlation_to_average(pred: Any, repeats: Any) -> np.ndarray:
    """Correlation over images between predictions and the repeat average."""
    r = _check_repeats(repeats)
    p = _check_pred(pred, r)
    return correlation(p, r.mean(axis=1), axis=0)


def oracle_correlation(repeats: Any) -> np.ndarray:
    """Leave-one-out oracle: correlate each trial with the mean of the other repeats."""
    r = _check_repeats(repeats)
    n_rep = r.shape[1]
    loo = (r.sum(axis=1, keepdims=True) - r) / (n_rep - 1)
    return correlation(loo.reshape(-1, r.shape[2]), r.reshape(-1, r.shape[2]), axis=0)


def fraction_of_oracle(pred: Any, repeats: Any) -> np.ndarray:
    """Per-neuron test correlation divided by the oracle correlation."""
    r = _check_repeats(repeats)
    with np.errstate(invalid="ignore", divide="ignore"):
        return test_correlation(pred, r) / oracle_correlation(r)


def oracle_slope(test: Any, oracle: Any) -> float:
    """Least-squares slope through the origin of test on oracle correlation across neurons
    (``sum o t / sum o^2`` over neurons where both are finite): a population fraction of oracle."""
    t, o = np.asarray(test, dtype=np.float64).ravel(), np.asarray(oracle, dtype=np.float64).ravel()
    if t.shape != o.shape:
        raise ValueError(f"test and oracle must have the same length, got {t.shape} and {o.shape}")
    ok = np.isfinite(t) & np.isfinite(o)
    den = float((o[ok] ** 2).sum())
    return float((o[ok] * t[ok]).sum() / den) if den > 0 else float("nan")


def explainable_variance_fraction(repeats: Any) -> np.ndarray:
    """``1 - s2_noise / Var[y]``: the fraction of response variance that is stimulus-driven."""
    r = _check_repeats(repeats)
    noise = r.var(axis=1, ddof=1).mean(axis=0)
    total = r.reshape(-1, r.shape[2]).var(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - noise / total, np.nan)


def fev(pred: Any, repeats: Any) -> np.ndarray:
    """Fraction of explainable variance explained (Cadena et al. 2019), per neuron."""
    r = _check_repeats(repeats)
    p = _check_pred(pred, r)
    noise = r.var(axis=1, ddof=1).mean(axis=0)
    total = r.reshape(-1, r.shape[2]).var(axis=0, ddof=1)
    mse = ((r - p[:, None, :]) ** 2).mean(axis=(0, 1))
    explainable = total - noise
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(explainable > 1e-12, 1.0 - (mse - noise) / explainable, np.nan)


def evaluate(pred: Any, repeats: Any) -> dict[str, np.ndarray]:
    """All per-neuron measures at once: test/average/oracle correlation, fraction, FEV."""
    r = _check_repeats(repeats)
    p = _check_pred(pred, r)
    tc = test_correlation(p, r)
    oc = oracle_correlation(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = tc / oc
    return {
        "test_correlation": tc,
        "average_correlation": correlation_to_average(p, r),
        "oracle_correlation": oc,
        "fraction_of_oracle": frac,
        "fev": fev(p, r),
    }


def summarize(measures: dict[str, np.ndarray], groups: np.ndarray | None = None) -> dict[str, Any]:
    """Medians and means (NaN-aware) of each measure, overall and per group label."""

    def stats(mask: np.ndarray | slice) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, val in measures.items():
            v = np.asarray(val)[mask]
            ok = np.isfinite(v)
            out[f"median_{key}"] = float(np.median(v[ok])) if ok.any() else float("nan")
            out[f"mean_{key}"] = float(v[ok].mean()) if ok.any() else float("nan")
        if "test_correlation" in measures and "oracle_correlation" in measures:
            out["oracle_slope"] = oracle_slope(np.asarray(measures["test_correlation"])[mask],
                                               np.asarray(measures["oracle_correlation"])[mask])
        return out

    n = len(next(iter(measures.values())))
    report: dict[str, Any] = {"n_neurons": int(n), **stats(slice(None))}
    if groups is not None:
        g = np.asarray(groups).astype(str)
        if g.shape != (n,):
            raise ValueError(f"groups must have one label per neuron ({n}), got shape {g.shape}")
        report["by_group"] = {str(k): {"n_neurons": int((g == k).sum()), **stats(g == k)} for k in np.unique(g)}
    return report
