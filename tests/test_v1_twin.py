"""The twin bundle: smoke-scale build, round trip through load_twin, bad bundles, the CLI verb."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from reprlab.io import read_bundle, write_bundle
from reprlab.v1.twin import BUNDLE_KIND, build_twin, load_twin, twin_build_config


@pytest.fixture(scope="session")
def smoke_twin(tmp_path_factory):
    out = tmp_path_factory.mktemp("twin") / "bundle"
    twin, report = build_twin(twin_build_config("smoke", 0), out=out)
    return out, twin, report


def test_smoke_bundle_round_trip(smoke_twin):
    out, twin, report = smoke_twin
    again = load_twin(out, verify=True)
    N, K = twin.n_neurons, twin.n_clusters
    assert N > 0 and K > 0 and again.n_neurons == N
    H, W = twin.meta["image_shape"]
    assert twin.mei["neuron"].shape == (N, H, W) and twin.mei["neuron"].dtype == np.float16
    assert twin.mei["cluster"].shape == (K, H, W)
    assert twin.gabor["neuron"].shape == (N, 7) and twin.dog["cluster"].shape == (K, 6)
    for name in ("orientation", "phase", "suppression", "contrast", "plaid", "gabor_vs_mei", "nonlinearity"):
        assert twin.indices[name].shape == (N,)
        np.testing.assert_array_equal(again.indices[name], twin.indices[name])
    assert twin.tuning["size_contrast"].shape[0] == N
    assert len(twin.tuning_axes("size_contrast")) == 2
    assert set(np.unique(twin.neurons["cluster"])) <= set(range(K))
    # responses to own optimal stimuli: MEI >= a fraction of the Gabor, cluster stimuli <= own
    assert np.median(twin.mei["neuron_response"] / twin.gabor["neuron_response"]) > 0.8
    assert np.median(twin.gabor["cluster_response"] / twin.gabor["neuron_response"]) <= 1.0 + 1e-3
    for key in ("checks", "verification", "timing_seconds", "combinatorial", "ks"):
        assert key in report
    v = report["verification"]
    assert "spearman_twin_vs_truth" in v and "mouse_model_all_stimuli" in v
    assert np.isfinite(twin.truth_indices["phase"]).sum() > 0
    json.dumps(report)  # the report is JSON-able


def _tiny_bundle(path, K=2, N=4, **replace):
    arrays = {
        "neurons/id": np.arange(N), "neurons/animal": np.zeros(N, np.int64), "neurons/cluster": np.arange(N) % K,
        "neurons/embedding": np.zeros((N, 2), np.float32), "neurons/rf_center": np.zeros((N, 2), np.float32),
        "mei/neuron": np.zeros((N, 4, 6), np.float16), "mei/cluster": np.zeros((K, 4, 6), np.float32),
        "gabor/neuron": np.zeros((N, 7), np.float32), "gabor/cluster": np.zeros((K, 7), np.float32),
        "dog/neuron": np.zeros((N, 6), np.float32), "dog/cluster": np.zeros((K, 6), np.float32),
        "indices/phase": np.zeros(N, np.float32),
    }
    arrays.update(replace)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    docs = {"meta": {"image_shape": [4, 6]}, "clusters": [{"cluster": k} for k in range(K)]}
    write_bundle(path, BUNDLE_KIND, arrays=arrays, documents=docs)
    return path


def test_load_twin_small_valid_bundle(tmp_path):
    tw = load_twin(_tiny_bundle(tmp_path / "ok"))
    assert tw.n_neurons == 4 and tw.n_clusters == 2 and "phase" in tw.indices


def test_load_twin_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no twin bundle"):
        load_twin(tmp_path / "missing")
    with pytest.raises(ValueError, match="missing"):
        load_twin(_tiny_bundle(tmp_path / "a", **{"mei/cluster": None}))
    with pytest.raises(ValueError, match="cluster labels"):
        load_twin(_tiny_bundle(tmp_path / "b", **{"neurons/cluster": np.array([0, 1, 2, 5])}))
    with pytest.raises(ValueError, match="rows"):
        load_twin(_tiny_bundle(tmp_path / "c", **{"indices/phase": np.zeros(3, np.float32)}))
    write_bundle(tmp_path / "d", "not-a-twin", arrays={"x": np.zeros(1)})
    with pytest.raises(ValueError):
        load_twin(tmp_path / "d")
    # a corrupted file fails the hash check
    p = _tiny_bundle(tmp_path / "e")
    (p / "indices" / "phase.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError):
        load_twin(p, verify=True)
    assert read_bundle(tmp_path / "ok" if (tmp_path / "ok").exists() else p, kind=None) is not None


def test_build_config_validation():
    cfg = twin_build_config("smoke", 3, n_clusters=7)
    assert cfg["n_clusters"] == 7 and cfg["seed"] == 3
    with pytest.raises(ValueError, match="unknown build options"):
        twin_build_config("smoke", 0, n_clustres=3)
    with pytest.raises(ValueError, match="scale"):
        twin_build_config("huge")


def test_cli_twin_rejects_file_out(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = subprocess.run([sys.executable, "-m", "reprlab", "v1", "twin", "--scale", "smoke", "--out", str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "must be a folder" in r.stderr


def test_truth_indices_recover_planted_families():
    """The "true" indices (local search around each true RF, then eqs. 11-14) on a planted
    population: suppression only in the surround families, COI only in the COI families,
    phase invariance only in complex cells; DoG and corner cells get a real Gabor (a frequency
    from the search grid, not a blob)."""
    import torch
    from reprlab.v1 import insilico as ins
    from reprlab.v1 import stimuli as stim
    from reprlab.v1.population import FAMILIES, sample_population
    from reprlab.v1.twin import _truth_indices

    torch.set_num_threads(1)
    pop = sample_population(22, seed=4, family_weights={f: 1.0 for f in FAMILIES},
                            calibration_images=stim.natural_images(48, seed=2))
    res = _truth_indices(ins.PopulationModel(pop), pop, np.arange(len(pop)), ins.experiment_config("smoke"),
                         False, return_params=True)
    gl = pop.gabor_like.numpy()
    ss, coi, cx = (pop.surround_suppressed.numpy(), pop.cross_orientation_inhibited.numpy(),
                   pop.phase_invariant.numpy())
    assert res["suppression"][ss].min() > 0.3 and res["suppression"][gl & ~ss].max() < 0.1
    assert res["plaid"][coi].min() > 0.2 and res["plaid"][gl & ~coi].max() < 0.1
    assert res["phase"][cx].max() < 0.3 < res["phase"][gl & ~cx].min()
    assert res["params"].shape == (22, 7) and res["params"][~gl, 3].min() >= 0.03
