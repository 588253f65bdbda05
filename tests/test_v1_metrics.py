"""Closed forms of the prediction-quality measures (reprlab.v1.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
from reprlab.v1 import metrics as M


def _poisson_repeats(seed=0, images=200, repeats=10, neurons=30):
    rng = np.random.default_rng(seed)
    mean = rng.gamma(2.0, 1.5, size=(images, neurons))
    return mean, rng.poisson(mean[:, None, :].repeat(repeats, 1)).astype(float)


def test_correlation_of_identical_and_opposite_signals():
    x = np.random.default_rng(1).normal(size=(50, 4))
    assert np.allclose(M.correlation(x, x), 1.0)
    assert np.allclose(M.correlation(x, -3 * x + 2), -1.0)
    assert np.allclose(M.single_trial_correlation(x, 2 * x + 1), 1.0)
    assert np.isnan(M.correlation(np.ones((5, 1)), x[:5, :1]))[0]


def test_correlation_matches_numpy_corrcoef_per_neuron():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    expected = [np.corrcoef(a[:, i], b[:, i])[0, 1] for i in range(3)]
    assert np.allclose(M.correlation(a, b), expected)


def test_noiseless_repeats_give_oracle_one_and_perfect_prediction_fev_one():
    mean, _ = _poisson_repeats()
    noiseless = np.repeat(mean[:, None, :], 10, axis=1)
    assert np.allclose(M.oracle_correlation(noiseless), 1.0)
    out = M.evaluate(mean, noiseless)
    for key in ("test_correlation", "average_correlation", "fraction_of_oracle", "fev"):
        assert np.allclose(out[key], 1.0), key


def test_oracle_is_the_leave_one_out_correlation():
    _, rep = _poisson_repeats(images=20, repeats=4, neurons=3)
    n = 1
    trials, loo = [], []
    for i in range(20):
        for r in range(4):
            trials.append(rep[i, r, n])
            loo.append(np.mean(np.delete(rep[i, :, n], r)))
    assert M.oracle_correlation(rep)[n] == pytest.approx(np.corrcoef(trials, loo)[0, 1])


def test_true_mean_prediction_fev_near_one_and_fraction_above_one_with_noise():
    mean, rep = _poisson_repeats(images=400, repeats=10, neurons=40)
    out = M.evaluate(mean, rep)
    assert abs(np.median(out["fev"]) - 1.0) < 0.05
    # the oracle is itself noisy: the true mean beats it (fraction > 1, Methods / Walker et al.)
    assert np.median(out["fraction_of_oracle"]) > 1.0
    # a constant-plus-noise prediction does far worse
    bad = M.evaluate(np.random.default_rng(5).normal(size=mean.shape), rep)
    assert np.median(bad["fev"]) < 0 and abs(np.median(bad["test_correlation"])) < 0.1


def test_test_correlation_equals_correlation_over_expanded_trials():
    mean, rep = _poisson_repeats(images=30, repeats=5, neurons=2)
    pred = mean + np.random.default_rng(3).normal(size=mean.shape)
    expanded = np.repeat(pred, 5, axis=0)
    assert np.allclose(M.test_correlation(pred, rep), M.correlation(expanded, rep.reshape(-1, 2)))


def test_summarize_by_group():
    meas = {"fraction_of_oracle": np.array([0.5, 1.0, np.nan, 0.8])}
    s = M.summarize(meas, np.array(["a", "a", "b", "b"]))
    assert s["median_fraction_of_oracle"] == pytest.approx(0.8)
    assert s["by_group"]["a"]["median_fraction_of_oracle"] == pytest.approx(0.75)
    assert s["by_group"]["b"]["n_neurons"] == 2


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="n_images, n_repeats, n_neurons"):
        M.oracle_correlation(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 2 repeats"):
        M.oracle_correlation(np.zeros((5, 1, 3)))
    with pytest.raises(ValueError, match="predictions must be"):
        M.test_correlation(np.zeros((4, 2)), np.zeros((5, 3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        M.fev(np.zeros((5, 2)), np.full((5, 3, 2), np.nan))


def test_oracle_slope_is_the_through_origin_fit_and_truth_beats_the_noisy_oracle():
    o = np.array([0.2, 0.5, 0.8, np.nan])
    assert M.oracle_slope(0.7 * o, o) == pytest.approx(0.7)
    s = M.summarize({"test_correlation": 0.7 * o, "oracle_correlation": o})
    assert s["oracle_slope"] == pytest.approx(0.7)
    # the noiseless rate predicts single trials better than the leave-one-out mean of 9 repeats
    mean, rep = _poisson_repeats(images=200, repeats=10, neurons=20)
    m = M.evaluate(mean, rep)
    assert M.oracle_slope(m["test_correlation"], m["oracle_correlation"]) > 1.0
    with pytest.raises(ValueError, match="same length"):
        M.oracle_slope(np.zeros(3), np.zeros(4))
