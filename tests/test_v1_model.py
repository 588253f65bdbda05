"""Rotation-equivariant core, readouts and the V1Twin model API (reprlab.v1.cores/readouts/model)."""

from __future__ import annotations

import pytest
import torch
from reprlab.v1.cores import RotationEquivariantCore
from reprlab.v1.model import V1Twin, default_config
from reprlab.v1.readouts import FactorizedReadout, GaussianReadout
from reprlab.v1.train import poisson_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _check_equivariance(feats, feats_rot, n_features, n_rot, tol):
    b, _, h, w = feats.shape
    f = feats.reshape(b, n_features, n_rot, h, w)
    # input rotated by +pi/2 (clockwise on screen: rot90 k=-1) -> maps rotated the same way,
    # orientation axis shifted cyclically by O/4
    expected = torch.roll(torch.rot90(f, -1, (3, 4)), n_rot // 4, dims=2)
    got = feats_rot.reshape(b, n_features, n_rot, w, h)
    err = (got - expected).abs().max().item()
    assert err < tol, err
    wrong = torch.roll(torch.rot90(f, -1, (3, 4)), -n_rot // 4, dims=2)
    assert (got - wrong).abs().max().item() > 100 * tol  # the shift direction matters


@pytest.mark.parametrize("train_mode", [True, False])
def test_core_is_rotation_equivariant_with_cyclic_orientation_shift(train_mode):
    torch.manual_seed(0)
    core = RotationEquivariantCore(features=3, num_rotations=8, kernel_sizes=(13, 5, 5))
    core.train(train_mode)
    if not train_mode:  # give the running statistics non-trivial values first
        core.train()
        core(torch.randn(4, 1, 22, 30))
        core.eval()
    x = torch.randn(2, 1, 22, 30)
    _check_equivariance(core(x), core(torch.rot90(x, -1, (2, 3))), 3, 8, 1e-4)


@pytest.mark.parametrize("downsample,pool", [(2, 1), (1, 2), (2, 2)])
def test_model_features_with_downsampling_and_pooling_stay_equivariant(downsample, pool):
    torch.manual_seed(1)
    cfg = default_config([("a", 5)], input_shape=(20, 28),
                         core=dict(features=2, num_rotations=4, kernel_sizes=[7, 3], pool=pool), downsample=downsample)
    model = V1Twin(cfg).eval()
    assert model.stride == downsample * pool
    x = torch.randn(3, 20, 28)
    f = model.core_features(x).flatten(1, 2)
    model.config["input_shape"] = [28, 20]
    fr = model.core_features(torch.rot90(x, -1, (1, 2))).flatten(1, 2)
    _check_equivariance(f, fr, 2, 4, 1e-4)


def _manual_bilinear(feat, x, y):
    """Feature vector (B, C) at fractional pixel (x, y) by explicit bilinear interpolation."""
    x0, y0 = int(x), int(y)
    dx, dy = x - x0, y - y0
    x1, y1 = min(x0 + 1, feat.shape[-1] - 1), min(y0 + 1, feat.shape[-2] - 1)
    return ((1 - dx) * (1 - dy) * feat[:, :, y0, x0] + dx * (1 - dy) * feat[:, :, y0, x1]
            + (1 - dx) * dy * feat[:, :, y1, x0] + dx * dy * feat[:, :, y1, x1])


def test_gaussian_readout_batched_equals_per_neuron_computation():
    torch.manual_seed(2)
    ro = GaussianReadout(7, 6, (9, 13)).double()
    with torch.no_grad():
        ro.bias.uniform_(-0.5, 0.5)
    feat = torch.randn(4, 6, 9, 13, dtype=torch.float64)
    out = ro(feat)
    xy = ro.positions()
    for n in range(7):
        z = _manual_bilinear(feat, float(xy[n, 0]), float(xy[n, 1]))
        drive = z @ ro.features[n] + ro.bias[n]
        assert torch.allclose(out[:, n], torch.nn.functional.elu(drive) + 1, atol=1e-10)
    assert out.shape == (4, 7) and (out > 0).all()


def test_factorized_readout_batched_equals_per_neuron_computation():
    torch.manual_seed(3)
    ro = FactorizedReadout(5, 4, (6, 8), nonlinearity="softplus").double()
    feat = torch.randn(3, 4, 6, 8, dtype=torch.float64)
    out = ro(feat)
    for n in range(5):
        w = ro.mask[n][None] * ro.features[n][:, None, None]  # s_n (x) r_n
        drive = (feat * w).sum(dim=(1, 2, 3)) + ro.bias[n]
        assert torch.allclose(out[:, n], torch.nn.functional.softplus(drive), atol=1e-10)
    xy = torch.tensor([[2.0, 1.5], [5.0, 4.0], [1.5, 2.0], [6.0, 3.5], [3.5, 2.5]], dtype=torch.float64)
    ro.set_positions(xy, width=0.7)
    assert torch.allclose(ro.positions(), xy, atol=0.05)


def test_positivity_and_l1_options():
    ro = GaussianReadout(4, 3, (5, 5), positive=True)
    with torch.no_grad():
        ro.features.sub_(1.0)
    ro.constrain()
    assert (ro.features >= 0).all()
    assert ro.regularizer(features_l1=1.0).item() == pytest.approx(float(ro.features.detach().abs().sum() / 4))


def test_model_api_shapes_and_hypothetical_neurons():
    torch.manual_seed(4)
    cfg = default_config([("m1", 9), ("m2", 4)], input_shape=(16, 24),
                         core=dict(features=3, num_rotations=4, kernel_sizes=[5, 3]), downsample=2)
    model = V1Twin(cfg).eval()
    x = torch.randn(5, 16, 24) * 0.2
    assert model(x, "m1").shape == (5, 9) and model(x, "m2").shape == (5, 4)
    assert model.core_features(x).shape == (5, 3, 4, 8, 12)
    assert model.readout_weights("m1").shape == (9, 3, 4)
    centers = model.rf_centers("m1")
    assert centers.shape == (9, 2)
    assert (centers[:, 0] >= 0).all() and (centers[:, 0] <= 23).all() and (centers[:, 1] <= 15).all()
    # neurons re-created from their own readouts predict exactly what the model predicts
    p = model.predict_from_readout(x, model.readout_weights("m1"), centers, bias=model.readout_bias("m1"))
    assert torch.allclose(p, model(x, "m1"), atol=1e-5)
    # one core pass reused for many hypothetical neurons
    feats = model.core_features(x)
    w = torch.randn(20, 3, 4)
    pos = torch.rand(20, 2) * torch.tensor([23.0, 15.0])
    assert torch.allclose(model.predict_from_readout(x, w, pos), model.predict_from_readout(x, w, pos, features=feats))


def test_save_and_load_round_trip(tmp_path):
    cfg = default_config([("a", 6)], input_shape=(12, 16), core=dict(features=2, num_rotations=4, kernel_sizes=[5]))
    model = V1Twin(cfg).eval()
    path = model.save(tmp_path / "m.pt", extra={"note": "x"})
    again = V1Twin.load(path)
    x = torch.randn(2, 12, 16)
    assert torch.equal(model(x, "a"), again(x, "a"))


def test_poisson_loss_gradient_matches_closed_form():
    rates = torch.rand(6, 5, dtype=torch.float64) + 0.2
    counts = torch.poisson(torch.full((6, 5), 2.0, dtype=torch.float64))
    r = rates.clone().requires_grad_()
    poisson_loss(r, counts, eps=0.0).backward()
    assert torch.allclose(r.grad, (1 - counts / rates) / rates.numel())
    assert torch.autograd.gradcheck(lambda q: poisson_loss(q, counts), (rates.clone().requires_grad_(),))


def test_bad_inputs_raise_clear_errors(tmp_path):
    cfg = default_config([("a", 3)], input_shape=(12, 16), core=dict(features=2, num_rotations=4, kernel_sizes=[5]))
    model = V1Twin(cfg)
    with pytest.raises(ValueError, match=r"\(12, 16\)"):
        model(torch.zeros(2, 10, 16), "a")
    with pytest.raises(ValueError, match="unknown animal"):
        model(torch.zeros(2, 12, 16), "zz")
    with pytest.raises(ValueError, match="feature_weights"):
        model.predict_from_readout(torch.zeros(1, 12, 16), torch.zeros(3, 2, 5), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="positions"):
        model.predict_from_readout(torch.zeros(1, 12, 16), torch.zeros(3, 2, 4), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="downsample"):
        V1Twin(default_config([("a", 3)], input_shape=(13, 16), downsample=2))
    with pytest.raises(ValueError, match="odd"):
        RotationEquivariantCore(kernel_sizes=(4,))
    with pytest.raises(ValueError, match="unique"):
        V1Twin(default_config([("a", 3), ("a", 2)]))
    with pytest.raises(FileNotFoundError):
        V1Twin.load(tmp_path / "missing.pt")


def test_point_readout_matches_grid_sample_values_and_gradients():
    torch.manual_seed(5)
    feats = torch.randn(3, 5, 7, 11, dtype=torch.float64, requires_grad=True)
    grid = (torch.rand(40, 2, dtype=torch.float64) * 1.8 - 0.9).requires_grad_()
    from reprlab.v1.readouts import point_readout

    ours = point_readout(feats, grid)
    ref = torch.nn.functional.grid_sample(feats, grid[None].expand(3, -1, -1).unsqueeze(2), align_corners=True,
                                          padding_mode="border").squeeze(-1)
    assert torch.allclose(ours, ref, atol=1e-12)
    g_ours = torch.autograd.grad(ours.square().sum(), [feats, grid])
    g_ref = torch.autograd.grad(ref.square().sum(), [feats, grid])
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(g_ours, g_ref))


def test_gaussian_readout_gradients_match_grid_sample_reference():
    torch.manual_seed(6)
    ro = GaussianReadout(9, 4, (6, 10), init_range=0.8).double()
    feats = torch.randn(5, 4, 6, 10, dtype=torch.float64, requires_grad=True)
    out = ro(feats)
    ref_z = torch.nn.functional.grid_sample(feats, ro.mu[None].expand(5, -1, -1).unsqueeze(2), align_corners=True,
                                           padding_mode="border").squeeze(-1)
    ref = torch.nn.functional.elu(torch.einsum("bcn,nc->bn", ref_z, ro.features) + ro.bias) + 1
    assert torch.allclose(out, ref, atol=1e-12)
    params = [feats, ro.mu, ro.features, ro.bias]
    g1 = torch.autograd.grad(out.pow(2).sum(), params)
    g2 = torch.autograd.grad(ref.pow(2).sum(), params)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(g1, g2))
