"""Filter banks of paper section 2: shapes, counts, Glorot bounds, Fourier colour weights, PCA/k-means."""

from __future__ import annotations

import math

import pytest
import torch
from reprlab.textures.filterbanks import (
    BANK_NAMES,
    MULTISCALE_SIZES,
    FilterBank,
    fourier_basis,
    make_bank,
    random_bank,
    random_multiscale_bank,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_random_multiscale_has_1024_maps_in_8_sizes():
    bank = make_bank("random-multiscale")
    assert bank.sizes == list(MULTISCALE_SIZES) == [3, 5, 7, 11, 15, 23, 37, 55]
    assert bank.maps_per_scale == [128] * 8 and bank.n_maps == 1024 and bank.in_channels == 3
    for w in bank.weights:
        k = w.shape[-1]
        assert w.shape == (128, 3, k, k)
        bound = math.sqrt(6 / (3 * k * k + 128 * k * k))  # Glorot uniform, Lasagne fans
        assert float(w.abs().max()) <= bound
        assert float(w.abs().max()) > 0.9 * bound
        assert abs(float(w.mean())) < 0.05 * bound
    # toggling a size keeps the other sizes' filters
    sub = random_multiscale_bank(sizes=(5, 55), seed=0)
    assert torch.equal(sub.weights[1], bank.weights[-1])
    assert not torch.equal(random_multiscale_bank(seed=1).weights[0], bank.weights[0])


def test_single_scale_random_banks():
    assert make_bank("random-363").weights[0].shape == (363, 3, 11, 11)
    assert make_bank("random-3267").n_maps == 3267
    b = random_bank(7, 20, in_channels=1, seed=2)
    assert b.weights[0].shape == (20, 1, 7, 7)
    assert torch.equal(b.weights[0], random_bank(7, 20, in_channels=1, seed=2).weights[0])
    with pytest.raises(ValueError, match="odd"):
        random_bank(4, 10)
    with pytest.raises(ValueError, match="in_channels"):
        random_bank(3, 10, in_channels=2)


def test_fourier_basis_is_orthonormal_and_complete():
    b = fourier_basis(11).reshape(121, -1).double()
    assert torch.allclose(b @ b.T, torch.eye(121, dtype=torch.double), atol=1e-6)


def test_fourier_banks_colour_weights():
    f363 = make_bank("fourier-363").weights[0]
    assert f363.shape == (363, 3, 11, 11)
    # each filter lives on exactly one colour channel
    energy = f363.pow(2).sum(dim=(2, 3))
    assert torch.equal((energy > 1e-12).sum(1), torch.ones(363, dtype=torch.long))
    f3267 = make_bank("fourier-3267").weights[0]
    assert f3267.shape == (3267, 3, 11, 11)
    basis = fourier_basis(11)
    # every filter is B_i (x) [w_R, w_G, w_B] with w in {1, 0, -1}
    coef = torch.einsum("ocij,bij->ocb", f3267.double(), basis.double())  # projection on the basis
    assert set(torch.round(coef, decimals=6).unique().tolist()) <= {-1.0, 0.0, 1.0}
    nonzero_basis = (coef.abs() > 1e-6).any(1).sum(1)
    assert int(nonzero_basis.max()) == 1  # one basis function per filter
    gray = make_bank("fourier-363", in_channels=1)
    assert gray.n_maps == 121


def test_learned_banks_small_patch_counts():
    pca = make_bank("pca-363", n_patches=1500)
    w = pca.weights[0].reshape(363, -1).double()
    assert w.shape == (363, 363)
    assert torch.allclose(w @ w.T, torch.eye(363, dtype=torch.double), atol=1e-4)  # principal axes
    km = make_bank("kmeans-nonwhite", in_channels=1, n_patches=600, maps=50)
    assert km.weights[0].shape == (50, 1, 11, 11) and km.name == "kmeans-nonwhite-50"
    target = torch.rand(1, 40, 40)
    ks = make_bank("kmeans-sample", in_channels=1, target=target, n_patches=400, maps=30)
    assert ks.weights[0].shape == (30, 1, 11, 11)
    # non-whitened centroids of the target's patches are averages of its pixels: inside [0, 1]
    ks_raw = make_bank("kmeans-nonwhite", in_channels=1, n_patches=400, maps=20)
    assert float(ks_raw.weights[0].min()) >= 0 and float(ks_raw.weights[0].max()) <= 1
    with pytest.raises(ValueError, match="target"):
        make_bank("kmeans-sample")
    with pytest.raises(ValueError, match="n_patches"):
        make_bank("kmeans-363", n_patches=100)


def test_bank_validation_and_names():
    assert len(BANK_NAMES) == 10
    with pytest.raises(ValueError, match="unknown filter bank"):
        make_bank("vgg-19")
    with pytest.raises(ValueError, match="odd"):
        FilterBank([torch.zeros(2, 3, 4, 4)])
    with pytest.raises(ValueError, match="in_channels"):
        FilterBank([torch.zeros(2, 3, 3, 3), torch.zeros(2, 1, 5, 5)])
    sub = make_bank("random-multiscale").subset([3, 55])
    assert sub.sizes == [3, 55] and sub.n_maps == 256
