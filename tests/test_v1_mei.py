"""MEIs: eq. (3) batched over neurons, cluster MEIs eqs. (4)-(8) with rotated coefficients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reprlab.v1 import insilico as ins
from reprlab.v1 import mei
from reprlab.v1.cores import RotationEquivariantCore
from reprlab.v1.hermite import HermiteBasis

SHAPE = (32, 40)


def _twin(n_rot: int = 8) -> ins.EquivariantModel:
    torch.manual_seed(1)
    core = RotationEquivariantCore(features=3, num_rotations=n_rot, kernel_sizes=(7, 3)).eval()
    W = torch.randn(4, 3, n_rot) * 0.8
    W[1] = W[0].roll(1, dims=1)  # neuron 1 = neuron 0 rotated by 2π/O
    W[2] = W[0].roll(2, dims=1)
    pos = torch.tensor([[20.0, 16.0], [15.0, 12.0], [25.0, 18.0], [20.0, 17.0]])
    return ins.EquivariantModel(core, W, torch.zeros(4), pos, lambda z: F.elu(z) + 1, SHAPE)


CFG = mei.MEIConfig(steps=25, cluster_steps=25, lr=0.1, cluster_lr=0.1, n_max=4, angle_substeps=1, norm=2.0)


def test_neuron_meis_increase_response_and_respect_norm():
    m = _twin()
    res = mei.neuron_meis(m, config=CFG)
    assert res.images.shape == (4, *SHAPE)
    assert res.history[-1] > res.history[0]
    norms = np.linalg.norm(res.images.reshape(4, -1), axis=1)
    assert (norms <= CFG.norm + 1e-4).all()
    assert np.abs(res.images).max() <= 0.5 + 1e-6
    # the reported response is the twin's own response to the full image
    np.testing.assert_allclose(m.diag(torch.as_tensor(res.images), torch.arange(4)).numpy(), res.response, rtol=1e-4)
    # better than a random image of the same norm
    noise = torch.randn(4, *SHAPE)
    noise = noise * (CFG.norm / noise.flatten(1).norm(dim=1))[:, None, None]
    assert (res.response > m.diag(noise.clamp(-0.5, 0.5), torch.arange(4)).numpy()).all()


def test_neuron_meis_generic_model():
    filt = ins.render_gabors(torch.tensor([[20.0, 16.0, 6.0, 0.1, 1.0, 0.3, 0.0]]), SHAPE)[0]
    model = ins.FunctionModel(lambda x: (x * filt).sum((1, 2))[:, None] + 5.0, 1, SHAPE)
    res = mei.neuron_meis(model, config=mei.MEIConfig(steps=60, lr=0.1, norm=1.0, blur=0.0))
    # a linear neuron's MEI under a norm budget is its filter scaled to the budget (closed form)
    best = float(filt.norm()) * 1.0 + 5.0
    assert res.response[0] > 5.0 + 0.95 * (best - 5.0)
    cos = float(F.cosine_similarity(torch.as_tensor(res.images[0]).flatten(), filt.flatten(), dim=0))
    assert cos > 0.95


def test_cluster_mei_rotation_consistency():
    m = _twin(4)
    lab = np.array([0, 0, 0, 1])
    res = mei.cluster_meis(m, lab, CFG)
    ang = res.extra["angle"]
    step = 2 * math.pi / 4
    # neurons 1, 2 are neuron 0 rotated by 1 and 2 steps: same rate, angles shifted by the same steps
    r = res.extra["per_neuron"]
    assert r[1] == pytest.approx(r[0], rel=1e-5) and r[2] == pytest.approx(r[0], rel=1e-5)
    assert (ang[1] - ang[0]) % (2 * math.pi) == pytest.approx(step, abs=1e-5)
    assert (ang[2] - ang[0]) % (2 * math.pi) == pytest.approx(2 * step, abs=1e-5)
    # re-rendering the rotated coefficients and placing the patch on the RF reproduces the rate
    basis = HermiteBasis((m.patch_size, m.patch_size), CFG.n_max, sigma=res.extra["sigma"])
    for n in range(4):
        beta = torch.as_tensor(res.extra["coefficients"][lab[n]])
        img = basis.synthesize(mei.rotate_patch_coefficients(basis, beta, float(ang[n]))).clamp(-0.5, 0.5)
        assert float(m.diag_patches(img[None], torch.tensor([n]))[0]) == pytest.approx(float(r[n]), rel=1e-4)
    assert res.images.shape == (2, *SHAPE)
    assert res.history[-1] >= res.history[0]


def test_rotate_patch_coefficients_matches_gabor_orientation():
    basis = HermiteBasis((21, 21), 6, sigma=2.5)
    c = torch.randn(basis.n_basis)
    img = basis.synthesize(c)
    rot = basis.synthesize(mei.rotate_patch_coefficients(basis, c, math.pi / 2))
    assert torch.allclose(rot, torch.rot90(img, -1, dims=(0, 1)), atol=1e-5)


def test_mei_bad_inputs():
    m = _twin()
    with pytest.raises(ValueError, match="labels"):
        mei.cluster_meis(m, [0, 1])
    with pytest.raises(ValueError, match="EquivariantModel"):
        mei.cluster_meis(ins.FunctionModel(lambda x: x.sum((1, 2))[:, None], 1, SHAPE), [0])
    with pytest.raises(ValueError, match="steps"):
        mei.MEIConfig(steps=0)
    with pytest.raises(ValueError, match="neuron indices"):
        mei.neuron_meis(m, neurons=[9], config=CFG)
