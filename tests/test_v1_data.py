"""V1 dataset container, Sensorium folders and NWB: round trips, malformed input, atomicity."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from reprlab.v1 import data as D
from reprlab.v1.simulate import simulate_dataset


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small tensors: one intra-op thread is faster and does not oversubscribe shared CI cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def datasets():
    return simulate_dataset("smoke", seed=2, n_neurons=40, n_train_images=60, n_validation_images=10,
                            n_test_images=6, n_repeats=4)


@pytest.fixture(scope="module")
def ds(datasets):
    return datasets[0]


def toy(n_trials=12, n_neurons=3, **kw) -> D.V1Dataset:
    rng = np.random.default_rng(0)
    args = dict(
        images=rng.uniform(-0.5, 0.5, (5, 4, 6)).astype(np.float32),
        responses=rng.poisson(1.0, (n_trials, n_neurons)).astype(np.float32),
        trial_image=np.array([0, 1, 2, 3, 4, 4, 3, 4, 3, 4, 3, 0][:n_trials]),
        tiers=np.array(["train"] * 3 + ["validation"] + ["test"] * 6 + ["train"] * 2)[:n_trials],
        neuron_ids=np.arange(10, 10 + n_neurons),
        animal="toy",
        neuron_meta={"depth": np.linspace(100, 300, n_neurons)},
    )
    args.update(kw)
    return D.V1Dataset(**args)


def assert_same(a: D.V1Dataset, b: D.V1Dataset, images_exact: bool = True) -> None:
    np.testing.assert_array_equal(a.responses, b.responses)
    np.testing.assert_array_equal(a.tiers, b.tiers)
    np.testing.assert_array_equal(a.neuron_ids, b.neuron_ids)
    np.testing.assert_array_equal(a.images[a.trial_image], b.images[b.trial_image])
    assert a.animal == b.animal
    assert set(a.neuron_meta) == set(b.neuron_meta)
    for k in a.neuron_meta:
        np.testing.assert_array_equal(a.neuron_meta[k], b.neuron_meta[k])


# ---------------------------------------------------------------------------- container
def test_simulated_datasets_follow_the_contract(datasets):
    assert len(datasets) == 2
    ids = [set(d.neuron_ids.tolist()) for d in datasets]
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 40  # disjoint subsets of one population
    for d in datasets:
        s = d.summary()
        assert s["n_trials_train"] == 60 and s["n_trials_validation"] == 10 and s["n_trials_test"] == 24
        assert s["n_images_test"] == 6 and d.image_shape == (36, 64)
        assert d.images.dtype == np.float32 and d.images.min() >= -0.5 and d.images.max() <= 0.5
        assert d.truth is not None and len(d.truth) == d.n_neurons
        np.testing.assert_array_equal(d.truth.neuron_ids.numpy(), d.neuron_ids)
        np.testing.assert_array_equal(d.truth.family, d.neuron_meta["family"])
        assert d.neuron_meta["cell_motor_coordinates"].shape == (d.n_neurons, 3)
        assert (d.responses == np.round(d.responses)).all() and d.responses.min() >= 0
    # same images for every animal; spike noise independent
    np.testing.assert_array_equal(datasets[0].images, datasets[1].images)
    again = simulate_dataset("smoke", seed=2, n_neurons=40, n_train_images=60, n_validation_images=10,
                             n_test_images=6, n_repeats=4)
    np.testing.assert_array_equal(again[1].responses, datasets[1].responses)


def test_repeats_by_image_and_split(ds):
    rep, img = ds.repeats_by_image("test", return_images=True)
    assert rep.shape == (6, 4, ds.n_neurons)
    for k, i in enumerate(img):
        trials = np.flatnonzero((ds.trial_image == i) & (ds.tiers == "test"))
        np.testing.assert_array_equal(rep[k], ds.responses[trials])
    sp = ds.split("train")
    assert sp.images.shape == (60, 36, 64) and sp.responses.shape == (60, ds.n_neurons)
    np.testing.assert_array_equal(sp.images, ds.images[ds.trial_image[sp.trial_index]])
    assert ds.tier_mask("validation").sum() == 10
    # responses are spikes of the truth's rates: the repeat mean tracks the noiseless rate
    rates = ds.truth.rate(torch.from_numpy(ds.images[img])).numpy()
    assert np.corrcoef(rates.ravel(), rep.mean(1).ravel())[0, 1] > 0.7
    with pytest.raises(ValueError, match="tier must be one of"):
        ds.tier_mask("holdout")


def test_container_validation_errors():
    toy().validate()
    with pytest.raises(ValueError, match="trial_image"):
        toy(trial_image=np.array([0, 1, 2, 3, 4, 5, 3, 4, 3, 4, 3, 0]))
    with pytest.raises(ValueError, match="responses: found 1 NaN"):
        r = toy().responses.copy()
        r[2, 1] = np.nan
        toy(responses=r)
    with pytest.raises(ValueError, match="'test' tier is empty"):
        toy(tiers=np.array(["train"] * 12))
    with pytest.raises(ValueError, match="tiers: expected values"):
        toy(tiers=np.array(["train"] * 6 + ["test"] * 5 + ["holdout"]))
    with pytest.raises(ValueError, match="neuron_ids"):
        toy(neuron_ids=np.array([1, 1, 2]))
    with pytest.raises(ValueError, match=r"neuron_meta\['depth'\]"):
        toy(neuron_meta={"depth": np.zeros(5)})
    with pytest.raises(ValueError, match="repeated equally often"):
        toy().repeats_by_image("test")


# ---------------------------------------------------------------------------- Sensorium folders
def test_sensorium_round_trip_with_truth(ds, tmp_path):
    folder = D.write_sensorium(ds, tmp_path / "scan")
    for rel in ("data/images/0.npy", "data/responses/0.npy", "meta/neurons/unit_ids.npy",
                "meta/trials/tiers.npy", "meta/trials/frame_image_id.npy", "meta/truth/center.npy"):
        assert (folder / rel).is_file(), rel
    assert np.load(folder / "data/images/0.npy").shape == (1, 36, 64)
    back = D.read_sensorium(folder)
    assert_same(ds, back)
    np.testing.assert_array_equal(back.trial_image, ds.trial_image)
    x = torch.from_numpy(ds.images[:3])
    torch.testing.assert_close(back.truth.rate(x), ds.truth.rate(x))
    with pytest.raises(FileExistsError):
        D.write_sensorium(ds, folder)
    D.write_sensorium(ds.subset_neurons([0, 1]), folder, overwrite=True)
    assert D.read_sensorium(folder).n_neurons == 2


def test_foreign_sensorium_folder_is_converted(tmp_path):
    """A folder as labs share it: uint8-range images, no info.json, no frame ids, extra tier."""
    root = tmp_path / "foreign"
    (root / "data/images").mkdir(parents=True)
    (root / "data/responses").mkdir(parents=True)
    (root / "meta/neurons").mkdir(parents=True)
    (root / "meta/trials").mkdir(parents=True)
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (3, 1, 8, 10)).astype(np.float32)
    shown = [0, 1, 2, 2, 2, 1]
    tiers = ["train", "train", "test", "test", "final_test", "validation"]
    for t, i in enumerate(shown):
        np.save(root / f"data/images/{t}.npy", imgs[i])
        np.save(root / f"data/responses/{t}.npy", rng.poisson(2.0, 4).astype(np.float32))
    np.save(root / "meta/neurons/unit_ids.npy", np.arange(4))
    np.save(root / "meta/trials/tiers.npy", np.array(tiers))
    with pytest.raises(ValueError, match=r"tiers\.npy: unknown tier names \['final_test'\]"):
        D.read_sensorium(root)
    ds = D.read_sensorium(root, tier_map={"final_test": None})
    assert ds.n_trials == 5 and ds.n_images == 3
    assert ds.images.min() >= -0.5 and ds.images.max() <= 0.5
    assert "255" in ds.info["image_conversion"]
    assert ds.trial_image[2] == ds.trial_image[3]  # identical content = one image
    np.testing.assert_allclose(ds.images[ds.trial_image[0]], imgs[0, 0] / 255 - 0.5, atol=1e-6)


@pytest.fixture
def folder(ds, tmp_path) -> Path:
    return D.write_sensorium(ds.subset_neurons(np.arange(5)), tmp_path / "scan")


def test_malformed_folder_missing_files(folder):
    (folder / "data/responses/7.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"data/responses/7\.npy: file is missing"):
        D.read_sensorium(folder)


def test_malformed_folder_missing_meta(folder):
    (folder / "meta/trials/tiers.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"meta/trials/tiers\.npy: required file is missing"):
        D.read_sensorium(folder)


def test_malformed_folder_shape_mismatch(folder):
    np.save(folder / "data/responses/3.npy", np.zeros(7, np.float32))
    with pytest.raises(ValueError, match=r"responses/3\.npy: expected shape \(5,\).*found \(7,\)"):
        D.read_sensorium(folder)
    np.save(folder / "data/responses/3.npy", np.zeros(5, np.float32))
    np.save(folder / "data/images/4.npy", np.zeros((1, 10, 10), np.float32))
    with pytest.raises(ValueError, match=r"images/4\.npy: expected an image of shape \(36, 64\)"):
        D.read_sensorium(folder)


def test_malformed_folder_nan_responses(folder):
    r = np.load(folder / "data/responses/5.npy")
    r[2] = np.nan
    np.save(folder / "data/responses/5.npy", r)
    with pytest.raises(ValueError, match=r"responses/5\.npy: 1 responses are NaN"):
        D.read_sensorium(folder)


def test_malformed_folder_empty_tier(folder):
    tiers = np.load(folder / "meta/trials/tiers.npy")
    tiers[tiers == "test"] = "train"
    np.save(folder / "meta/trials/tiers.npy", tiers)
    with pytest.raises(ValueError, match=r"tiers\.npy: the 'test' tier is empty"):
        D.read_sensorium(folder)


def test_malformed_folder_bad_meta_and_missing_folder(folder, tmp_path):
    np.save(folder / "meta/neurons/depth.npy", np.zeros(9))
    with pytest.raises(ValueError, match=r"depth\.npy: expected first axis 5"):
        D.read_sensorium(folder)
    with pytest.raises(FileNotFoundError, match="expected a Sensorium-style dataset folder"):
        D.read_sensorium(tmp_path / "nothing")


def test_failed_write_leaves_nothing_behind(tmp_path):
    bad = toy()
    bad.neuron_meta["notes"] = np.array([{"a": 1}, None, 3], dtype=object)  # cannot be saved
    with pytest.raises(ValueError, match="object array"):
        D.write_sensorium(bad, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    # an existing folder survives a failed overwrite untouched
    D.write_sensorium(toy(), tmp_path / "out")
    with pytest.raises(ValueError):
        D.write_sensorium(bad, tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert_same(D.read_sensorium(tmp_path / "out"), toy())


# ---------------------------------------------------------------------------- NWB
def test_nwb_round_trip_with_truth(ds, tmp_path):
    path = D.write_nwb(ds, tmp_path / "scan.nwb")
    back = D.read_nwb(path)
    assert_same(ds, back)
    np.testing.assert_array_equal(back.images, ds.images)
    np.testing.assert_array_equal(back.trial_image, ds.trial_image)
    x = torch.from_numpy(ds.images[:3])
    torch.testing.assert_close(back.truth.rate(x), ds.truth.rate(x))
    assert back.info["seed"] == 2
    with pytest.raises(FileExistsError):
        D.write_nwb(ds, path)
    assert [p.name for p in tmp_path.iterdir()] == ["scan.nwb"]  # no temporary files left


def test_nwb_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        D.read_nwb(tmp_path / "missing.nwb")
    junk = tmp_path / "junk.nwb"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable NWB file"):
        D.read_nwb(junk)
    shutil.rmtree(tmp_path)
