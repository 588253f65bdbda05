"""Analyses: KS tests, correlations, the combinatorial table, greedy Gabor selection, oracle."""

from __future__ import annotations

import numpy as np
import pytest
from reprlab.v1 import analysis as an


def test_ks_finds_planted_clusters():
    rng = np.random.default_rng(0)
    lab = np.repeat(np.arange(4), 60)
    phase = rng.normal(0, 1, 240) + np.where(lab == 1, 3.0, 0.0)
    supp = rng.normal(0, 1, 240) + np.where(lab == 2, -3.0, 0.0)
    out = an.ks_tests({"phase": phase, "suppression": supp}, lab, alpha=0.01)
    sig = {r["cluster"]: [r[k]["significant"] for k in ("phase", "suppression")] for r in out["per_cluster"]}
    assert sig[1][0] and sig[2][1]  # the planted property of each planted cluster
    p = {r["cluster"]: r for r in out["per_cluster"]}
    assert p[1]["phase"]["statistic"] > p[1]["suppression"]["statistic"]
    assert p[2]["suppression"]["statistic"] > p[2]["phase"]["statistic"]
    assert out["n_significant_any"] >= 2
    assert out["random_labels"]["n_significant_any"] <= 1.0


def test_combinatorial_table_recovers_planted_codes():
    # 8 clusters with every combination of (phase-invariant, suppressed, COI)
    codes = np.arange(8)
    means = {"phase": np.where(codes & 1, 0.1, 0.9), "suppression": np.where(codes & 2, 0.8, 0.1),
             "plaid": np.where(codes & 4, 0.7, 0.05)}
    thr = {k: float(v.mean()) for k, v in means.items()}
    out = an.combinatorial_table(means, thr, sizes=np.full(8, 10))
    np.testing.assert_array_equal(out["code"], codes)
    assert out["n_combinations_present"] == 8
    assert all(r["n_neurons"] == 10 for r in out["table"])
    gl = np.array([True] * 4 + [False] * 4)
    out2 = an.combinatorial_table(means, thr, gabor_like=gl)
    assert out2["n_combinations_present"] == 4 and (out2["code"][4:] == -1).all()
    with pytest.raises(ValueError, match="plaid"):
        an.combinatorial_table({"phase": [1.0], "suppression": [1.0]}, thr)


def test_property_correlations():
    x = np.linspace(0, 1, 20)
    rng = np.random.default_rng(1)
    out = an.property_correlations({"a": x, "b": 2 * x + 0.01 * rng.normal(size=20), "c": rng.normal(size=20)},
                                   gabor_like=x > 0.5)
    ab = next(r for r in out if (r["x"], r["y"]) == ("a", "b"))
    assert ab["all"]["r"] > 0.99 and ab["all"]["p"] < 1e-6 and ab["gabor_like"]["n"] == 10


def test_greedy_selection_covers_planted_groups():
    # 3 groups of neurons, each driven only by "its" candidate; a 4th candidate drives nobody
    N = 30
    R = np.full((N, 4), 0.1)
    for g in range(3):
        R[g * 10:(g + 1) * 10, g] = 0.9
    out = an.greedy_gabor_selection(R, np.ones(N), fraction=0.5, n_select=3)
    assert sorted(out["selected"]) == [0, 1, 2]
    assert out["covered"][-1] == pytest.approx(1.0)
    cov = an.coverage_curve(R, np.ones(N), out["selected"][:1], [0.05, 0.5, 0.95])
    np.testing.assert_allclose(cov, [1.0, 1 / 3, 0.0])


def test_oracle_fraction_of_noiseless_prediction():
    rng = np.random.default_rng(2)
    true = rng.uniform(1, 5, size=(200, 12))
    trials = rng.poisson(true, size=(10, 200, 12)).astype(float)
    perfect = an.oracle_fraction(true, trials)
    assert perfect["fraction"] > 0.95  # the truth itself explains ~the oracle
    shuffled = an.oracle_fraction(true[rng.permutation(200)], trials)
    assert shuffled["fraction"] < 0.3
    with pytest.raises(ValueError, match="trials"):
        an.oracle_correlation(trials[:1])


def test_spearman_and_suboptimal():
    a = {"x": np.arange(10.0)}
    b = {"x": np.arange(10.0) ** 2}
    assert an.spearman_table(a, b)["x"]["rho"] == pytest.approx(1.0)
    sub = np.stack([np.tile(np.arange(5.0), (4, 1)), np.tile(np.arange(5.0)[::-1], (4, 1))], 1)  # (4, 2, 5)
    rows = an.suboptimal_tuning_similarity(sub, np.tile(np.arange(5.0), (4, 1)), np.array([[0.9, 0.1]] * 4))
    assert rows[0]["mean_correlation"] == pytest.approx(-1.0) and rows[-1]["mean_correlation"] == pytest.approx(1.0)
