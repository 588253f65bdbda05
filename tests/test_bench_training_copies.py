"""bench_v1_index_recovery (issue 5 diagnostics): its training-set copies and its --parts checks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from reprlab.v1.cli import _read_folders
from reprlab.v1.data import write_sensorium
from reprlab.v1.simulate import simulate_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_v1_index_recovery import gabor_mixtures, main, write_parametric  # noqa: E402


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    for ds in simulate_dataset("smoke", seed=3, n_neurons=30, n_train_images=40, n_validation_images=8,
                               n_test_images=6, n_repeats=2):
        write_sensorium(ds, root / ds.animal)
    return root


def test_gabor_mixtures_are_displayable_and_varied():
    x = gabor_mixtures(12, (36, 64), np.random.default_rng(0))
    assert x.shape == (12, 36, 64) and x.min() >= -0.5 and x.max() <= 0.5
    assert (x.std(axis=(1, 2)) > 1e-3).all()  # every image holds a visible patch
    assert len({round(float(v), 4) for v in x.std(axis=(1, 2))}) == 12


def test_write_parametric_replaces_a_fraction_of_fit_images_only(source, tmp_path):
    rep = write_parametric(str(source), str(tmp_path / "dp"), fraction=0.5, seed=1)
    before, after = _read_folders(source), _read_folders(tmp_path / "dp")
    assert [d.animal for d in before] == [d.animal for d in after]
    b, a = before[0], after[0]
    changed = np.flatnonzero(np.abs(a.images - b.images).max(axis=(1, 2)) > 0)
    test_images = np.unique(b.trial_image[b.tiers == "test"])
    fit_images = np.unique(b.trial_image[b.tiers != "test"])
    assert rep["n_parametric_images"] == len(changed) and 0.25 < len(changed) / len(fit_images) < 0.75
    assert np.isin(changed, fit_images).all() and not np.isin(test_images, changed).any()
    assert all(np.array_equal(d.images, a.images) for d in after)  # one image set for all animals
    assert after[0].info["parametric"]["n_images"] == len(changed)
    # responses on the new images are drawn from the truth's rates for them, not for the old images
    trials = np.isin(a.trial_image, changed)
    rate_new = a.truth.rate(torch.as_tensor(a.images)).numpy()[a.trial_image[trials]].ravel()
    rate_old = b.truth.rate(torch.as_tensor(b.images)).numpy()[b.trial_image[trials]].ravel()
    spikes = a.responses[trials].ravel()
    assert np.corrcoef(spikes, rate_new)[0, 1] > np.corrcoef(spikes, rate_old)[0, 1] + 0.1
    with pytest.raises(ValueError, match="fraction"):
        write_parametric(str(source), str(tmp_path / "bad"), fraction=0.0)


@pytest.mark.parametrize("parts, message", [("twin,featur", "unknown"), ("features", "include twin"), ("twin", "need --model")])
def test_parts_that_would_silently_do_nothing_are_refused(parts, message, capsys):
    with pytest.raises(SystemExit):
        main(["--parts", parts])
    assert message in capsys.readouterr().err
