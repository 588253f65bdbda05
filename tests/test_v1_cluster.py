"""Tests of reprlab.v1.cluster: GMM model selection, clustering edge cases, t-SNE, confusion
matrices with greedy blocks, image rotate/shift, MEI confusion, appendix-A controls, scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from reprlab.v1.cluster import (
    ReadoutClustering,
    ReadoutTSNE,
    adjusted_rand,
    angle_recovery,
    circular_correlation,
    cluster_confusion_matrix,
    greedy_blocks,
    mei_confusion_matrix,
    merge_labels,
    permute_across_neurons,
    permute_within_neurons,
    rotate_shift_images,
    select_n_components,
)


def blobs(n_per=(40, 30, 50, 30), dim=12, sep=6.0, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((len(n_per), dim)) * sep
    labels = np.repeat(np.arange(len(n_per)), n_per)
    X = centers[labels] + noise * rng.standard_normal((labels.size, dim))
    return X, labels


def family_readouts(n=90, F=6, O=8, n_fam=3, noise=0.05, seed=0):
    """Aligned readouts of planted families (each family a fixed (F, O) pattern)."""
    rng = np.random.default_rng(seed)
    templates = rng.standard_normal((n_fam, F, O))
    fam = np.arange(n) % n_fam
    return templates[fam] + noise * rng.standard_normal((n, F, O)), fam


# -- GMM selection and clustering ---------------------------------------------------------


def test_gmm_held_out_likelihood_picks_planted_k():
    X, _ = blobs(n_per=(60, 45, 75, 45), seed=1)
    sel = select_n_components(X, n_components=(1, 2, 3, 4, 6, 8), n_init=2, random_state=0, progress=False)
    assert sel.best == 4 and sel.plateau() == 4
    assert sel.test_ll[list(sel.n_components).index(4)] > sel.test_ll[list(sel.n_components).index(3)] + 1.0
    assert sel.train_index.size + sel.test_index.size == X.shape[0]
    assert np.intersect1d(sel.train_index, sel.test_index).size == 0
    with pytest.raises(ValueError, match="training neurons"):
        select_n_components(X[:10], n_components=(3, 9), progress=False)


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_clustering_recovers_families_and_keeps_readout_shape(method):
    R, fam = family_readouts()
    cl = ReadoutClustering(method, n_clusters=3, n_init=3).fit(R)
    assert adjusted_rand(cl.labels_, fam) == 1.0
    assert cl.centers_.shape == (3, 6, 8) and cl.sizes_.sum() == R.shape[0] and cl.n_clusters_ == 3
    np.testing.assert_array_equal(cl.predict(R), cl.labels_)
    assert ReadoutClustering(method).n_clusters == 50  # the digital-twin paper's k-means size


def test_clustering_bad_inputs_and_nan_policy():
    R, fam = family_readouts(n=30)
    with pytest.raises(ValueError, match="at least as many neurons"):
        ReadoutClustering("kmeans", n_clusters=50).fit(R)
    with pytest.raises(ValueError, match="distinct"):
        ReadoutClustering("kmeans", n_clusters=5).fit(np.repeat(R[:3], 10, axis=0))
    bad = R.copy()
    bad[[4, 7]] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ReadoutClustering("gmm", n_clusters=3).fit(bad)
    with pytest.warns(RuntimeWarning, match="omitted"):
        cl = ReadoutClustering("gmm", n_clusters=3, nan_policy="omit").fit(bad)
    assert (cl.labels_[[4, 7]] == -1).all() and (np.delete(cl.labels_, [4, 7]) >= 0).all()
    assert adjusted_rand(cl.labels_, fam) == 1.0
    with pytest.raises(ValueError, match="method"):
        ReadoutClustering("dbscan").fit(R)
    with pytest.raises(ValueError, match="shape"):
        ReadoutClustering().fit(np.zeros(5))
    with pytest.raises(ValueError, match="not fitted"):
        ReadoutClustering().predict(R)


def test_empty_and_tiny_clusters_are_reported(monkeypatch):
    from sklearn.mixture import GaussianMixture

    R, _ = family_readouts(n=31)
    original = GaussianMixture.predict

    def predict_without_component_1(self, X):  # a component that wins for no neuron
        lab = original(self, X)
        lab[lab == 1] = 0
        lab[lab == 3] = 2
        lab[0] = 3  # and one singleton cluster
        return lab

    monkeypatch.setattr(GaussianMixture, "predict", predict_without_component_1)
    with pytest.warns(RuntimeWarning, match="empty"):
        cl = ReadoutClustering("gmm", n_clusters=4, n_init=1).fit(R)
    assert cl.empty_clusters_.tolist() == [1] and cl.n_clusters_ == 3
    assert cl.labels_.max() == 2 and cl.centers_.shape[0] == 3
    assert cl.sizes_[cl.labels_[0]] == 1 and cl.labels_[0] in cl.small_clusters_
    kept = ReadoutClustering("gmm", n_clusters=4, n_init=1, drop_empty=False).fit(R)
    assert kept.n_clusters_ == 4 and kept.sizes_[1] == 0


# -- t-SNE ---------------------------------------------------------------------------------


def test_tsne_is_seeded_and_places_new_neurons():
    X, lab = blobs(n_per=(40, 40, 40), dim=16, seed=2)
    a = ReadoutTSNE(perplexity=15, n_iter=150, random_state=3).fit(X)
    b = ReadoutTSNE(perplexity=15, n_iter=150, random_state=3).fit(X)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    assert a.embedding_.shape == (120, 2)
    new = a.transform(X[:7] + 0.01)
    assert new.shape == (7, 2)
    # a new point lands nearer to its own cluster's centre than to the others
    cent = np.stack([a.embedding_[lab == k].mean(0) for k in range(3)])
    assert (np.linalg.norm(new[:, None] - cent[None], axis=-1).argmin(1) == lab[:7]).all()
    with pytest.raises(ValueError, match="features"):
        a.transform(X[:3, :5])


# -- cluster confusion matrix and greedy blocks --------------------------------------------


def equivariant_predictor(F=3, O=8, n_base=20, seed=0):
    """Linear model whose image set is closed under the O rotations (cyclic shifts of features)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_base, F, O))
    phi = np.concatenate([np.roll(base, k, axis=-1) for k in range(O)])  # (n_images, F, O)

    def predict(w):
        return np.einsum("ifo,nfo->in", phi, np.asarray(w, dtype=np.float64))

    return predict


def test_cluster_confusion_accounts_for_canonical_orientation():
    rng = np.random.default_rng(4)
    c1, c2 = rng.standard_normal((2, 3, 8))
    centers = np.stack([c1, np.roll(c1, 3, axis=-1), c2, np.roll(c2, -1, axis=-1) * 2.0])
    cc = cluster_confusion_matrix(centers, equivariant_predictor())
    M = cc.matrix
    assert M.shape == (4, 4) and np.allclose(np.diag(M), 1.0)
    assert M[0, 1] == pytest.approx(1.0, abs=1e-9) and M[2, 3] == pytest.approx(1.0, abs=1e-9)
    assert max(M[0, 2], M[0, 3], M[1, 2], M[1, 3]) < 0.9
    # the best rotation undoes the planted shift: c1 == roll(c1, 3) rotated by 3 channels
    assert cc.rotation[0, 1] == pytest.approx(3 * 2 * math.pi / 8)
    ba = greedy_blocks(M, threshold=0.5)
    assert adjusted_rand(ba.labels, [0, 0, 1, 1]) == 1.0
    with pytest.raises(ValueError, match="predict must return"):
        cluster_confusion_matrix(centers, lambda w: np.zeros((5, 2)))


def test_greedy_blocks_recover_planted_block_matrix():
    rng = np.random.default_rng(5)
    sizes = [6, 4, 7, 1, 3]
    lab = np.repeat(np.arange(len(sizes)), sizes)
    M = np.where(lab[:, None] == lab[None], 0.8, 0.15) + 0.08 * rng.standard_normal((lab.size,) * 2)
    M = (M + M.T) / 2
    perm = rng.permutation(lab.size)
    M, lab = M[np.ix_(perm, perm)], lab[perm]
    ba = greedy_blocks(M, threshold=0.5)
    assert ba.n_blocks == 5 and adjusted_rand(ba.labels, lab) == 1.0
    assert sorted(ba.order.tolist()) == list(range(lab.size))
    # blocks are contiguous in the arranged matrix
    assert (np.diff(ba.labels[ba.order]) >= 0).all() and ba.boundaries[-1] == lab.size
    assert greedy_blocks(M, threshold=0.99).n_blocks == lab.size
    assert greedy_blocks(M, threshold=-1.0, linkage="min").n_blocks == 1
    with pytest.raises(ValueError, match="square"):
        greedy_blocks(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="linkage"):
        greedy_blocks(M, linkage="max")


# -- images and the MEI confusion matrix ---------------------------------------------------


def test_rotate_shift_images_conventions():
    img = np.zeros((21, 21), np.float32)
    img[10, 15] = 1.0  # right of the centre
    up = rotate_shift_images(img, math.pi / 2, (10, 10), (10, 10))[0]
    assert np.unravel_index(up.argmax(), up.shape) == (5, 10)  # +π/2: counter-clockwise, now above
    moved = rotate_shift_images(img, 0.0, (10, 10), (4, 3))[0]
    assert np.unravel_index(moved.argmax(), moved.shape) == (4, 8)
    bar = np.zeros((1, 21, 21), np.float32)
    bar[0, 10, 4:17] = 1.0
    np.testing.assert_allclose(rotate_shift_images(bar, 2 * math.pi, (10, 10), (10, 10)), bar, atol=1e-5)
    vert = rotate_shift_images(bar, math.pi / 2, (10, 10), (10, 10))[0]
    np.testing.assert_allclose(vert, bar[0].T, atol=1e-5)
    with pytest.raises(ValueError, match="images"):
        rotate_shift_images(np.zeros(5), 0.0, (0, 0), (0, 0))


def gabor(H, W, center, theta, freq=0.25, sigma=2.5, phase=0.0):
    y, x = np.mgrid[:H, :W].astype(np.float64)
    dx, dy = x - center[1], y - center[0]
    u = dx * math.cos(theta) - dy * math.sin(theta)  # along the grating (y points down)
    env = np.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    return env * np.cos(2 * math.pi * freq * u + phase)


def dog(H, W, center):
    y, x = np.mgrid[:H, :W].astype(np.float64)
    r2 = (x - center[1]) ** 2 + (y - center[0]) ** 2
    return np.exp(-r2 / (2 * 1.5**2)) - 0.5 * np.exp(-r2 / (2 * 3.5**2))


def test_mei_confusion_matrix_is_block_diagonal_for_two_families():
    H = W = 31
    rng = np.random.default_rng(6)
    centers = rng.uniform(10, 20, size=(8, 2))
    theta = rng.uniform(0, math.pi, size=8)
    filt = np.stack([gabor(H, W, centers[i], theta[i]) if i < 4 else dog(H, W, centers[i]) for i in range(8)])
    filt /= np.linalg.norm(filt.reshape(8, -1), axis=1)[:, None, None]

    def response(images):
        return np.maximum(np.einsum("mhw,nhw->mn", images, filt), 0.0)

    M = mei_confusion_matrix(filt, response, centers, theta, extra_rotations=(0.0, math.pi), progress=False)
    assert np.allclose(np.diag(M), 1.0, atol=0.02)
    fam = np.array([0] * 4 + [1] * 4)
    within = M[fam[:, None] == fam[None]].mean()
    across = M[fam[:, None] != fam[None]].mean()
    assert within > 0.9 and across < 0.5
    with pytest.raises(ValueError, match="rf_centers"):
        mei_confusion_matrix(filt, response, centers[:3], theta, progress=False)


# -- controls (appendix A) -----------------------------------------------------------------


def test_controls_keep_values_and_destroy_cluster_structure():
    R, fam = family_readouts(n=120, F=8, noise=0.05, seed=7)
    base = ReadoutClustering("kmeans", n_clusters=3, n_init=5).fit(R)
    assert adjusted_rand(base.labels_, fam) == 1.0
    within = permute_within_neurons(R, random_state=0)
    across = permute_across_neurons(R, random_state=0)
    assert within.shape == R.shape and across.shape == R.shape
    # within: each neuron keeps its set of features; across: each feature keeps its set of neurons
    for n in (0, 5):
        np.testing.assert_allclose(np.sort(within[n].ravel()), np.sort(R[n].ravel()))
    for f in (0, 3):
        np.testing.assert_allclose(np.sort(across[:, f].ravel()), np.sort(R[:, f].ravel()))
    flat = permute_within_neurons(R.reshape(120, -1), random_state=0, unit="feature", n_orientations=8)
    np.testing.assert_array_equal(flat, within.reshape(120, -1))
    for control in (within, across):
        lab = ReadoutClustering("kmeans", n_clusters=3, n_init=5).fit(control).labels_
        assert adjusted_rand(lab, fam) < 0.2
    with pytest.raises(ValueError, match="unit"):
        permute_across_neurons(R, unit="pixel")


# -- ground-truth scores -------------------------------------------------------------------


def test_circular_correlation_offsets_sign_and_period():
    rng = np.random.default_rng(8)
    a = rng.uniform(0, 2 * math.pi, 200)
    assert circular_correlation(a, a + 1.3) == pytest.approx(1.0)
    assert circular_correlation(a, -a + 0.4) == pytest.approx(-1.0)
    assert abs(circular_correlation(a, rng.uniform(0, 2 * math.pi, 200))) < 0.2
    theta = rng.uniform(0, math.pi, 200)
    flipped = theta + rng.choice([0.0, math.pi], 200)  # orientation known only modulo π
    assert circular_correlation(flipped, theta, period=math.pi) == pytest.approx(1.0)
    assert circular_correlation(flipped, theta, period=2 * math.pi) < 0.8
    with pytest.raises(ValueError, match="same length"):
        circular_correlation(a, a[:5])


def test_angle_recovery_with_group_offsets_and_pi_ambiguity():
    rng = np.random.default_rng(9)
    theta = rng.uniform(0, math.pi, 300)
    groups = rng.integers(0, 3, 300)
    alpha = np.mod(theta + 1.1 * groups + rng.choice([0, math.pi], 300) + 0.05 * rng.standard_normal(300),
                   2 * math.pi)
    res = angle_recovery(alpha, theta, groups, period=math.pi)
    assert res["n_groups"] == 3 and res["weighted"] > 0.95 and res["pooled"] > 0.95
    # ignoring the groups mixes three offsets and the correlation collapses
    assert angle_recovery(alpha, theta, None, period=math.pi)["weighted"] < 0.8


def test_merge_labels_and_ari():
    labels = np.array([0, 1, 2, 3, -1, 2])
    merged = merge_labels(labels, [0, 0, 1, 1])
    np.testing.assert_array_equal(merged, [0, 0, 1, 1, -1, 1])
    assert adjusted_rand(merged, [5, 5, 7, 7, 9, 7]) == 1.0
    with pytest.raises(ValueError, match="cluster_to_block"):
        merge_labels([0, 4], [0, 1])


def test_truth_angles_and_check_on_planted_families():
    from reprlab.v1.align import rotate_readouts
    from reprlab.v1.cluster import truth_alignment_check, truth_angles

    rng = np.random.default_rng(0)
    T = rng.standard_normal((2, 3, 8))
    fam = np.repeat(["a", "b"], 30)
    theta = rng.uniform(0, np.pi, 60)  # orientations are pi-periodic ...
    flip = rng.integers(0, 2, 60)  # ... the readout rotation is 2pi-periodic
    R = rotate_readouts(T[(fam == "b").astype(int)], -(theta + np.pi * flip), normalize=True)
    R += 0.02 * rng.standard_normal(R.shape)
    t = truth_angles(R, fam, theta)
    for f in ("a", "b"):  # the flips are found: truth angles equal the planted rotations up to a constant
        m = fam == f
        assert circular_correlation(t[m], theta[m] + np.pi * flip[m]) > 0.99
    ori = theta.copy()
    ori[:5] = np.nan  # unoriented neurons keep the fallback angle
    chk = truth_alignment_check(R, np.zeros(60), fam, ori)
    assert chk["sign"] == 1.0 and np.all(chk["angles_truth"][:5] == 0.0)
    assert chk["loss_truth"] < chk["loss_found"]
    assert all(chk["within_truth"][f] < 0.5 * chk["within_found"][f] for f in ("a", "b"))
    with pytest.raises(ValueError, match="shape"):
        truth_angles(R, fam[:5], theta)


def test_angle_recovery_scores_each_group_on_its_own_period():
    rng = np.random.default_rng(10)
    n = 200
    theta = rng.uniform(0, math.pi, n)  # π-symmetric group: α known only modulo π
    direc = rng.uniform(0, 2 * math.pi, n)  # a direction group (2π)
    a_sym = np.mod(theta + 0.7 + rng.choice([0, math.pi], n) + 0.05 * rng.standard_normal(n), 2 * math.pi)
    a_dir = np.mod(direc + 2.0 + 0.05 * rng.standard_normal(n), 2 * math.pi)
    truth = np.concatenate([theta, direc])
    alpha = np.concatenate([a_sym, a_dir])
    groups = np.repeat([0, 1], n)
    period = np.repeat([math.pi, 2 * math.pi], n)
    res = angle_recovery(alpha, truth, groups, period=period)
    assert res["per_group"][0] > 0.95 and res["per_group"][1] > 0.95 and res["pooled"] > 0.95
    assert res["periods"] == {0: math.pi, 1: 2 * math.pi}
    # one period for both: the π-symmetric group fails on the full circle
    assert angle_recovery(alpha, truth, groups, period=2 * math.pi)["per_group"][0] < 0.5
    # a direction scored on the doubled circle also passes (weaker), but a wrong flip would not show
    with pytest.raises(ValueError, match="mixes periods"):
        angle_recovery(alpha, truth, np.zeros(2 * n, int), period=period)


def test_invariant_kmeans_refines_noisy_angles_and_lowers_its_objective():
    from reprlab.v1.align import rough_readouts
    from reprlab.v1.cluster import invariant_kmeans

    d = rough_readouts(160, n_groups=4, n_features=4, n_orientations=8, noise=0.3, random_state=0)
    rng = np.random.default_rng(1)
    init = np.mod(d.shifts + 0.35 * rng.standard_normal(d.shifts.size), 2 * math.pi)  # ~20° errors
    res = invariant_kmeans(d.R, init, 4, n_grid=128, max_iter=20, random_state=0)
    before = [circular_correlation(init[d.groups == g], d.shifts[d.groups == g]) for g in range(4)]
    after = [circular_correlation(res.angles[d.groups == g], d.shifts[d.groups == g]) for g in range(4)]
    assert max(before) < 0.93 and min(after) > 0.97
    assert adjusted_rand(res.labels, d.groups) > 0.95
    steps = res.history[: res.n_iter + 1]  # k-means iterations (a last entry follows a centre-frame turn)
    assert all(b <= a + 1e-9 for a, b in zip(steps, steps[1:]))  # monotone
    assert res.aligned.shape == d.R.shape and res.centers.shape == (4, 4, 8)
    # the aligned readouts are the readouts rotated by the refined angles (eq. 2, norm-preserving)
    from reprlab.v1.align import rotate_readouts

    np.testing.assert_allclose(res.aligned, rotate_readouts(d.R, res.angles, normalize=True), atol=1e-6)
    with pytest.raises(ValueError, match="angles"):
        invariant_kmeans(d.R, init[:5], 4)
    with pytest.raises(ValueError, match="n_clusters"):
        invariant_kmeans(d.R[:3], init[:3], 4)


def test_invariant_kmeans_centre_frames_join_clusters_of_one_class():
    """One class split into two clusters in different frames (initial angles off by 1.2 rad for half
    of each class): within-cluster alignment keeps the two frames, eq. (3) on the centres joins them."""
    from reprlab.v1.align import rough_readouts
    from reprlab.v1.cluster import invariant_kmeans

    d = rough_readouts(160, n_groups=2, n_features=4, n_orientations=8, noise=0.1, random_state=0)
    init = np.mod(d.shifts + 1.2 * ((np.arange(160) // 2) % 2), 2 * math.pi)

    def corr(res):
        return [circular_correlation(res.angles[d.groups == g], d.shifts[d.groups == g]) for g in range(2)]

    apart = invariant_kmeans(d.R, init, 4, n_grid=128, align_centres=False, random_state=0)
    joined = invariant_kmeans(d.R, init, 4, n_grid=128, align_centres=True, random_state=0)
    assert min(corr(apart)) < 0.9 and apart.centre_frames_changed == 0
    assert min(corr(joined)) > 0.98 and joined.centre_frames_changed >= 1


def test_pipeline_keeps_the_restart_with_the_lowest_eq3_and_scores_the_principled_truth():
    from reprlab.v1.align import rough_readouts
    from reprlab.v1.cluster import rotation_invariant_clustering

    d = rough_readouts(48, n_groups=3, n_features=4, n_orientations=8, noise=0.2, random_state=2)
    fam = np.array([f"fam{g}" for g in d.groups])
    truth = {"types": fam, "fine": fam, "angle": d.shifts, "angle_period": np.full(48, 2 * math.pi),
             "angle_group": fam}
    res = rotation_invariant_clustering(d.R, families=fam, truth=truth, method="kmeans", n_clusters=3,
                                        controls=False, scale="smoke", progress=False, align_restarts=2)
    sc = res["scores"]
    assert len(sc["alignment_loss_restarts"]) == 2 and sc["alignment_loss"] == min(sc["alignment_loss_restarts"])
    assert sc["angle_corr_symmetry"] > 0.9 and sc["angle_corr_symmetry_global"] > 0.5
    assert sc["ari_clusters_types"] > 0.9 and "ari_blocks_types" not in sc  # no predict: no blocks
    np.testing.assert_allclose(res["aligned_global"].shape, d.R.shape)
    with pytest.raises(ValueError, match="truth"):
        rotation_invariant_clustering(d.R, truth={"types": fam[:5]}, controls=False, scale="smoke", progress=False)
