"""Fitting the twin on a small synthetic stand-in: learning, resuming, errors (reprlab.v1.train)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reprlab.v1.data import V1Dataset
from reprlab.v1.model import V1Twin
from reprlab.v1.train import TwinData, _validation_correlations, estimate_rf_centers, fit_twin
from scipy.ndimage import gaussian_filter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def standin(n_animals=2, n_neurons=24, n_train=400, n_val=60, n_test=20, reps=4, shape=(16, 24), seed=0):
    """Simple (rectified) and complex (energy) Gabor cells with Poisson noise on smooth noise images.

    Both animals see the same images, so the core runs once per image and batch.
    """
    rng = np.random.default_rng(seed)
    H, W = shape
    n_img = n_train + n_val + n_test
    imgs = np.stack([gaussian_filter(rng.normal(size=shape), 1.0) for _ in range(n_img)])
    imgs = (imgs / imgs.std() * 0.15).clip(-0.5, 0.5).astype(np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(float)
    X = imgs.reshape(n_img, -1)
    out = []
    for a in range(n_animals):
        cx, cy = rng.uniform(6, W - 7, n_neurons), rng.uniform(5, H - 6, n_neurons)
        th = rng.uniform(0, np.pi, n_neurons)
        fam = np.where(np.arange(n_neurons) % 2 == 0, "simple", "complex")
        env = np.exp(-((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2) / 8.0)
        u = -np.sin(th)[:, None, None] * (xx - cx[:, None, None]) + np.cos(th)[:, None, None] * (yy - cy[:, None, None])
        d0 = X @ (env * np.cos(0.94 * u)).reshape(n_neurons, -1).T
        d1 = X @ (env * np.sin(0.94 * u)).reshape(n_neurons, -1).T
        s = d0.std()
        rate = 1.5 * np.where(fam == "simple", np.maximum(d0 / s, 0) ** 1.5, (d0**2 + d1**2) / s**2) + 0.1
        trial_image = np.concatenate([np.arange(n_train + n_val), np.repeat(np.arange(n_train + n_val, n_img), reps)])
        tiers = np.array(["train"] * n_train + ["validation"] * n_val + ["test"] * (n_test * reps))
        out.append(V1Dataset(images=imgs, responses=rng.poisson(rate[trial_image]).astype(np.float32),
                             trial_image=trial_image, tiers=tiers, neuron_ids=np.arange(n_neurons) + 1000 * a,
                             animal=f"a{a}", neuron_meta={"family": fam, "center": np.stack([cx, cy], 1)}))
    return out


@pytest.fixture(scope="module")
def data():
    return standin()


SMALL = dict(features=3, num_rotations=4, kernel_sizes=[7, 3], batch_size=32)


def test_merged_data_shares_images_across_animals(data):
    td = TwinData(data)
    assert len(td.images) == data[0].n_images  # both animals saw the same images: stored once
    assert td.n_neurons == 48 and len(td.train_rows) == 400
    pos, trials = td.batch_trials(td.animals[1], td.train_rows[:10])
    assert len(pos) == 10
    assert np.array_equal(td.animals[1]["train_sorted"][0][trials], td.train_rows[:10][pos])


def test_rf_center_estimate_finds_planted_centres(data):
    ds = data[0]
    tr = ds.split("train")
    xy = estimate_rf_centers(tr.images, tr.responses)
    err = np.linalg.norm(xy - ds.neuron_meta["center"], axis=1)
    assert np.median(err) < 2.5


def test_training_improves_validation_correlation(data):
    model, report = fit_twin(data, scale="smoke", seed=0, progress=False, max_epochs=4, **SMALL)
    td = TwinData(data)
    untrained = V1Twin(model.config)
    images = torch.as_tensor(td.images)
    before = float(np.nanmean(_validation_correlations(untrained, td, images, 256)))
    after = float(np.nanmean(_validation_correlations(model, td, images, 256)))
    assert after == pytest.approx(report["best_val_correlation"], abs=1e-6)
    assert after > before + 0.2 and after > 0.35
    test = report["test"]
    assert test["n_neurons"] == 48 and set(test["by_group"]) == {"simple", "complex"}
    assert test["median_test_correlation"] > 0.3
    assert report["epochs"] == 4 and report["seconds_per_epoch"] > 0


def test_checkpoint_resume_gives_the_same_result(data, tmp_path):
    full, rep_full = fit_twin(data, scale="smoke", seed=3, out=tmp_path / "a.ckpt", progress=False,
                              max_epochs=3, evaluate=False, **SMALL)
    stop_after_first = lambda epoch, loss, state: epoch >= 1  # noqa: E731
    _, rep_cut = fit_twin(data, scale="smoke", seed=3, out=tmp_path / "b.ckpt", progress=False, max_epochs=3,
                          evaluate=False, callback=stop_after_first, **SMALL)
    assert rep_cut["epochs"] == 1 and rep_cut["interrupted"]
    resumed, rep_res = fit_twin(data, scale="smoke", seed=3, out=tmp_path / "b.ckpt", progress=False,
                                max_epochs=3, evaluate=False, **SMALL)
    assert rep_res["resumed"] and rep_res["epochs"] == 3
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["val_correlation"] for h in rep_full["history"]] == [h["val_correlation"] for h in rep_res["history"]]
    # the finished checkpoint loads as a model
    again = V1Twin.load(tmp_path / "a.ckpt")
    assert again.animals == ["a0", "a1"]


def test_bad_inputs_raise_clear_errors(data, tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        fit_twin([], scale="smoke")
    with pytest.raises(ValueError, match="unknown fit_twin settings"):
        fit_twin(data, scale="smoke", learning_rate=1.0)
    with pytest.raises(ValueError, match="one image size"):
        fit_twin([data[0], standin(n_animals=1, shape=(16, 20))[0].__class__(
            **{**_fields(standin(n_animals=1, shape=(16, 20))[0]), "animal": "other"})], scale="smoke")
    with pytest.raises(ValueError, match="unique"):
        fit_twin([data[0], data[0]], scale="smoke")
    fit_twin(data, scale="smoke", out=tmp_path / "c.ckpt", progress=False, max_epochs=1, evaluate=False, **SMALL)
    with pytest.raises(ValueError, match="different data, settings or seed"):
        fit_twin(data, scale="smoke", seed=9, out=tmp_path / "c.ckpt", progress=False, max_epochs=1, **SMALL)


def _fields(ds):
    return dict(images=ds.images, responses=ds.responses, trial_image=ds.trial_image, tiers=ds.tiers,
                neuron_ids=ds.neuron_ids, animal=ds.animal, neuron_meta=ds.neuron_meta)


def test_cli_simulate_then_fit_reports_twin_glm_and_families(tmp_path, capsys):
    import json

    from reprlab.cli import main

    data = tmp_path / "data"
    assert main(["v1", "simulate", "--scale", "smoke", "--out", str(data), "--json"]) == 0
    sim = json.loads(capsys.readouterr().out)
    assert sim["n_animals"] == len(list(data.iterdir())) >= 2
    model_path = tmp_path / "twin.pt"
    assert main(["v1", "fit", str(data), "--out", str(model_path), "--scale", "smoke", "--max-epochs", "2",
                 "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)  # progress goes to stderr: stdout is pure JSON
    assert rep["data"]["n_neurons"] == sim["n_neurons"]
    twin, glm = rep["twin"], rep["glm"]
    for key in ("median_test_correlation", "median_oracle_correlation", "median_fraction_of_oracle", "median_fev"):
        assert key in twin and key in glm
    assert twin["epochs"] == 2 and twin["seconds_per_epoch"] > 0
    assert 0.0 < twin["median_oracle_correlation"] <= 1.0
    fams = rep["by_family"]
    assert "simple" in fams and "complex" in fams and "glm_fraction_of_oracle" in fams["simple"]
    assert V1Twin.load(model_path).animals == [p.name for p in sorted(data.iterdir())]
    # a bad folder is a user error (exit code 2), not a traceback
    assert main(["v1", "fit", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.pt"), "--json"]) == 2
    assert "error" in json.loads(capsys.readouterr().out)
