"""Tests of reprlab.v1.twin_clustering (chapter 6 on a twin) with a tiny untrained twin: readouts,
the centre predictor against the model's own readout path, the image-rotation sign convention,
and the `v1 cluster` CLI verb (errors and a bundle round trip)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from reprlab.cli import main
from reprlab.io import read_bundle
from reprlab.v1.align import rotate_readouts
from reprlab.v1.cluster import rotate_shift_images
from reprlab.v1.model import V1Twin, default_config
from reprlab.v1.stimuli import natural_images
from reprlab.v1.twin_clustering import centre_predictor, image_rotation_sign, twin_readouts


@pytest.fixture(scope="module")
def tiny_twin():
    cfg = default_config((("a", 14), ("b", 10)), core=dict(features=2, kernel_sizes=[9, 5]))
    torch.manual_seed(0)  # the core's initialisation uses the global generator
    return V1Twin(cfg, generator=torch.Generator().manual_seed(0))


def windowed_images(n, shape, seed):
    H, W = shape
    y, x = np.mgrid[:H, :W]
    win = np.exp(-(((x - (W - 1) / 2) ** 2 + (y - (H - 1) / 2) ** 2) / (2 * 7.0**2)))
    return (natural_images(n, shape, seed=seed) * win).astype(np.float32)


def test_readouts_and_centre_predictor_match_the_model(tiny_twin):
    R, animal = twin_readouts(tiny_twin)
    assert R.shape == (24, 2, 8) and (animal == "a").sum() == 14
    imgs = natural_images(6, tiny_twin.input_shape, seed=1)
    predict = centre_predictor(tiny_twin, imgs, bias=0.3)
    out = predict(R[:5])
    assert out.shape == (6, 5)
    H, W = tiny_twin.input_shape
    pos = torch.tensor([[(W - 1) / 2.0, (H - 1) / 2.0]]).repeat(5, 1)
    tiny_twin.eval()
    with torch.no_grad():
        ref = tiny_twin.predict_from_readout(imgs, torch.as_tensor(R[:5]), pos, bias=0.3).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="feature weights"):
        predict(np.zeros((2, 3, 8)))


def test_image_rotation_sign_matches_readout_rotation(tiny_twin):
    sign = image_rotation_sign(tiny_twin)
    assert sign in (1, -1)
    O = tiny_twin.n_rotations
    H, W = tiny_twin.input_shape
    imgs = windowed_images(40, (H, W), seed=3)
    c = ((H - 1) / 2.0, (W - 1) / 2.0)
    R, _ = twin_readouts(tiny_twin)
    predict = centre_predictor(tiny_twin, imgs)
    # a neuron with readout S_α r responds to x as the r-neuron to x rotated by sign·α
    rotated_readout = predict(rotate_readouts(R[:6], np.full(6, 2 * math.pi / O)))

    def agreement(s):
        other = centre_predictor(tiny_twin, rotate_shift_images(imgs, s * 2 * math.pi / O, c, c))(R[:6])
        return np.mean([np.corrcoef(rotated_readout[:, k], other[:, k])[0, 1] for k in range(6)])

    assert agreement(sign) > 0.95 and agreement(sign) > agreement(-sign) + 0.3


def test_cluster_verb_errors_and_bundle(tiny_twin, tmp_path, capsys):
    assert main(["v1", "cluster", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o"), "--json"]) == 2
    assert "FileNotFoundError" in capsys.readouterr().out
    path = tmp_path / "twin.pt"
    tiny_twin.save(path)
    assert main(["v1", "cluster", str(path), "--out", str(tmp_path / "o"), "--data", str(tmp_path / "nodata"),
                 "--json"]) == 2
    capsys.readouterr()
    rc = main(["v1", "cluster", str(path), "--out", str(tmp_path / "clusters"), "--scale", "smoke",
               "--method", "kmeans", "--no-controls", "--quiet", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["n_neurons"] == 24 and report["n_blocks"] >= 1
    b = read_bundle(tmp_path / "clusters", kind="v1-clusters", verify=True)
    labels = b.array("neurons/label")
    assert labels.shape == (24,) and b.array("neurons/aligned").shape == (24, 2, 8)
    C = b.array("clusters/center").shape[0]
    assert b.array("clusters/confusion").shape == (C, C) and labels.max() == C - 1
    assert b.document("scores")["n_clusters"] == C
    assert "refine" in report["seconds"]  # invariant k-means after the eq. (5) angles (the default)
    assert main(["v1", "cluster", str(path), "--out", str(tmp_path / "paper"), "--scale", "smoke", "--method",
                 "kmeans", "--no-controls", "--no-refine", "--quiet", "--json"]) == 0
    assert "refine" not in json.loads(capsys.readouterr().out)["seconds"]
    bp = read_bundle(tmp_path / "paper", kind="v1-clusters")
    np.testing.assert_array_equal(bp.array("neurons/angle"), bp.array("neurons/angle_global"))


def test_cluster_verb_adds_results_to_an_existing_twin_bundle(tiny_twin, tmp_path, capsys):
    from reprlab.io import write_bundle

    path = tmp_path / "twin.pt"
    tiny_twin.save(path)
    twin_dir = tmp_path / "twin_bundle"
    own = {"neurons/id": np.arange(24), "neurons/angle": np.full(24, 7.0, np.float32)}
    write_bundle(twin_dir, "twin", arrays=own, documents={"meta": {"a": 1}}, config={"scale": "smoke"})
    args = ["v1", "cluster", str(path), "--out", str(twin_dir), "--scale", "smoke", "--method", "kmeans",
            "--no-controls", "--quiet", "--json"]
    for _ in range(2):  # a second run replaces the ch6/ results
        assert main(args) == 0
        report = json.loads(capsys.readouterr().out)
    assert report["bundle_kind"] == "twin" and report["prefix"] == "ch6/"
    b = read_bundle(twin_dir, kind="twin", verify=True)
    np.testing.assert_array_equal(b.array("neurons/angle"), own["neurons/angle"])  # the twin's own files kept
    assert b.document("meta") == {"a": 1} and b.config["scale"] == "smoke" and "ch6" in b.config
    assert b.array("ch6/neurons/aligned").shape == (24, 2, 8) and b.array("ch6/neurons/angle").shape == (24,)
    C = b.array("ch6/clusters/center").shape[0]
    assert b.array("ch6/clusters/confusion").shape == (C, C) and b.document("ch6/scores")["n_clusters"] == C
    assert sum(n.startswith("ch6/neurons/aligned") for n in b.names()) == 1
    # a bundle of another twin (different neuron count) is refused
    write_bundle(twin_dir, "twin", arrays={"neurons/id": np.arange(5)})
    assert main(args) == 2 and "neurons" in capsys.readouterr().out


def test_functional_truth_phase_classes_are_rotation_equivalence_classes():
    """A simple cell (θ, τ) turned by π is the cell (θ, -τ): same function up to rotation. The
    principled truth must give both the same class, and angles that differ by exactly π."""
    import dataclasses

    from reprlab.v1.population import FAMILIES, sample_population
    from reprlab.v1.twin_clustering import functional_truth

    H, W = 36, 64
    pop = sample_population(44, (H, W), seed=3, family_weights={"simple": 1.0, "corner": 0.5, "dog_on": 0.5,
                                                                 "complex_ss": 1.0}, n_calibration=64)
    n = len(pop)
    pop = dataclasses.replace(pop, center=torch.tensor([[(W - 1) / 2.0, (H - 1) / 2.0]]).repeat(n, 1), _cache={})
    turned = dataclasses.replace(pop, phase=-pop.phase, _cache={},
                                 direction=torch.remainder(pop.direction + math.pi, 2 * math.pi))
    imgs = natural_images(80, (H, W), seed=5)
    c = ((H - 1) / 2.0, (W - 1) / 2.0)
    r0 = pop.rate(torch.as_tensor(imgs)).numpy()
    r1 = turned.rate(torch.as_tensor(rotate_shift_images(imgs, math.pi, c, c))).numpy()
    fam = pop.family
    gabor = np.isin(fam, [f for f in FAMILIES if f.startswith(("simple", "complex"))]) | (fam == "corner")
    corr = [np.corrcoef(r0[:, k], r1[:, k])[0, 1] for k in np.flatnonzero(gabor)]
    assert min(corr) > 0.98  # the turned population is the same function on turned images
    a, b = functional_truth(pop), functional_truth(turned)
    np.testing.assert_array_equal(a["fine"], b["fine"])
    np.testing.assert_array_equal(a["types"], b["types"])
    ok = np.isfinite(a["angle"])
    assert np.array_equal(ok, fam != "dog_on") and np.isnan(a["angle"][fam == "dog_on"]).all()
    diff = np.remainder(b["angle"][ok] - a["angle"][ok], a["angle_period"][ok])
    expect = np.remainder(math.pi, a["angle_period"][ok])  # π on a 2π circle, 0 on a π circle
    np.testing.assert_allclose(np.minimum(np.abs(diff - expect), a["angle_period"][ok] - np.abs(diff - expect)),
                               0.0, atol=1e-5)
    simple = np.char.startswith(fam.astype(str), "simple")
    assert set(a["phase_class"][simple]) <= {"even_on", "odd", "even_off"} and (a["phase_class"][~simple] == "").all()
    per = dict(zip(a["fine"], a["angle_period"]))
    assert all(per[k] == (2 * math.pi if k.endswith("/odd") or k == "corner" else math.pi) for k in per if k != "dog_on")


def test_truth_confusion_separates_opposite_polarities():
    from reprlab.v1.population import sample_population
    from reprlab.v1.twin_clustering import truth_confusion

    pop = sample_population(24, (36, 64), seed=4, family_weights={"dog_on": 1.0, "dog_off": 1.0, "complex": 1.0},
                            n_calibration=64)
    tc = truth_confusion(pop, pop.family, natural_images(120, (36, 64), seed=6), n_per_group=5, n_rotations=8)
    names = list(tc["groups"])
    assert names == ["complex", "dog_off", "dog_on"] and tc["pairwise"].shape == (3, 3)
    on, off = names.index("dog_on"), names.index("dog_off")
    for M in (tc["pairwise"], tc["prototype"]):
        np.testing.assert_allclose(M, M.T)
        assert M[on, off] < 0 < M[on, on] and M[off, off] > 0.5
    with pytest.raises(ValueError, match="groups"):
        truth_confusion(pop, pop.family[:3], natural_images(10, (36, 64), seed=6))


def test_truth_block_ceiling_merges_only_functionally_alike_families():
    """Planted: complex and complex_coi cells respond alike on natural images (one block, so the
    ARI against the families cannot exceed 0), DoG-ON and DoG-OFF are opposite (separate blocks,
    ARI 1)."""
    from reprlab.v1.population import sample_population
    from reprlab.v1.twin_clustering import truth_block_ceiling

    images = natural_images(120, (36, 64), seed=6)
    alike = sample_population(20, (36, 64), seed=4, family_weights={"complex": 1.0, "complex_coi": 1.0},
                              n_calibration=64)
    c = truth_block_ceiling(alike, images, n_per_group=5, n_rotations=8)
    assert c["groups"] == ["complex", "complex_coi"]
    for key in ("prototype", "pairwise"):
        assert c[key]["blocks"] == [["complex", "complex_coi"]] and c[key]["ari_families"] == pytest.approx(0.0)
    opposite = sample_population(20, (36, 64), seed=4, family_weights={"dog_on": 1.0, "dog_off": 1.0},
                                 n_calibration=64)
    c = truth_block_ceiling(opposite, images, n_per_group=5, n_rotations=8)
    for key in ("prototype", "pairwise"):
        assert sorted(map(sorted, c[key]["blocks"])) == [["dog_off"], ["dog_on"]]
        assert c[key]["ari_families"] == pytest.approx(1.0) and c[key]["ari_types"] == pytest.approx(1.0)
