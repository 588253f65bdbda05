"""In silico experiments: Gabor search, fast path vs the straightforward loop, indices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reprlab.v1 import insilico as ins
from reprlab.v1.cores import RotationEquivariantCore

SHAPE = (32, 40)


def _random_twin(O: int = 8, downsample: int = 1, n: int = 3, seed: int = 0) -> ins.EquivariantModel:
    torch.manual_seed(seed)
    core = RotationEquivariantCore(features=3, num_rotations=O, kernel_sizes=(7, 3)).eval()
    W = torch.randn(n, 3, O) * 0.6
    pos = torch.tensor([[20.0, 16.0], [18.0, 14.0], [22.0, 17.0]])[:n]
    if downsample > 1:
        pos = pos + 0.5
    return ins.EquivariantModel(core, W, torch.zeros(n), pos, lambda z: F.elu(z) + 1, SHAPE, downsample=downsample)


def _gabor_filter(params: list[float]) -> torch.Tensor:
    return ins.render_gabors(torch.tensor([params]), SHAPE)[0]


def test_diag_equals_full_forward():
    m = _random_twin(downsample=2)
    g = ins.render_gabors(torch.tensor([[19.0, 15.0, 6.0, 0.1, 1.0, 0.4, 0.3]]).repeat(3, 1), SHAPE)
    full = m.responses(g)[torch.arange(3), torch.arange(3)]
    assert torch.allclose(m.diag(g, torch.arange(3)), full, atol=1e-5)
    p = torch.tensor([[19.0, 15.0, 6.0, 0.1, 1.0, 0.4, 0.3]]).repeat(3, 1)
    assert torch.allclose(m.diag_gabors(p, torch.arange(3)), full, atol=1e-5)


@pytest.mark.parametrize("O,downsample", [(4, 1), (8, 2)])
def test_fast_search_equals_straightforward_loop(O, downsample):
    m = _random_twin(O=O, downsample=downsample, n=2)
    grid = ins.GaborGrid(sizes=(5.0, 8.0), spatial_frequencies=(0.08, 0.14), contrasts=(1.0,), n_phases=2,
                         orientation_substeps=1, offset_window=1, offset_step=2, refine_rounds=0)
    fast = ins.optimal_gabors(m, grid)
    loop = ins.optimal_gabors(m, grid, fast=False, straightforward=True)
    assert fast.stats["path"] == "fast" and loop.stats["path"] == "loop"
    assert fast.stats["neuron_stimulus_evaluations"] == loop.stats["neuron_stimulus_evaluations"]
    np.testing.assert_allclose(fast.response, loop.response, rtol=1e-5)
    np.testing.assert_allclose(fast.params, loop.params, atol=1e-4)


def test_search_finds_planted_optimum():
    planted = [20.0, 16.0, 6.0, 0.1, 1.0, 1.0, 0.8]
    filt = _gabor_filter(planted)

    def f(x):  # a rectified linear neuron with the planted Gabor as its receptive field
        return torch.relu((x * filt).sum((1, 2)))[:, None] ** 2

    model = ins.FunctionModel(f, 1, SHAPE, centers=[[19.0, 17.0]])
    grid = ins.GaborGrid(sizes=(4.0, 6.0, 9.0), spatial_frequencies=(0.06, 0.1, 0.15), contrasts=(1.0,), n_phases=8,
                         n_orientations=8, offset_window=1, offset_step=1, refine_rounds=2)
    res = ins.optimal_gabors(model, grid)
    p = res.params[0]
    d_ori = abs((p[5] - planted[5] + math.pi / 2) % math.pi - math.pi / 2)
    assert d_ori < math.radians(12)
    assert abs(p[3] - planted[3]) / planted[3] < 0.25
    # at least as good as the planted Gabor itself (which lies inside the search space)
    assert res.response[0] >= 0.97 * float(f(filt[None])[0, 0])
    # placed on the RF: within 2 px of the planted centre (phase can trade for shifts across stripes)
    assert np.hypot(p[0] - planted[0], p[1] - planted[1]) < 2.0


def _simple_and_complex():
    g0 = _gabor_filter([20.0, 16.0, 6.0, 0.1, 1.0, 0.5, 0.0])
    g1 = _gabor_filter([20.0, 16.0, 6.0, 0.1, 1.0, 0.5, math.pi / 2])

    def f(x):
        a, b = (x * g0).sum((1, 2)), (x * g1).sum((1, 2))
        return torch.stack([torch.relu(a), a * a + b * b], 1)

    return ins.FunctionModel(f, 2, SHAPE, centers=[[20.0, 16.0], [20.0, 16.0]])


def test_phase_index_linear_vs_energy():
    model = _simple_and_complex()
    p = np.array([[20.0, 16.0, 6.0, 0.1, 1.0, 0.5, 0.0]] * 2)
    cfg = ins.ExperimentConfig(n_orientations=8, n_phases=16)
    out = ins.orientation_phase_tuning(model, p, config=cfg)
    # eq. (11): a half-wave rectified linear neuron has F1/F0 = pi/4, an energy neuron 0
    assert out["phase_index"][0] == pytest.approx(math.pi / 4, abs=0.03)
    assert out["phase_index"][1] < 0.02
    assert out["orientation_index"][1] > 0.3


def test_suppression_index_divisive_vs_linear():
    filt = _gabor_filter([20.0, 16.0, 5.0, 0.1, 1.0, 0.0, 0.0])
    yy, xx = torch.meshgrid(torch.arange(SHAPE[0]), torch.arange(SHAPE[1]), indexing="ij")
    r = torch.sqrt((xx - 20.0) ** 2 + (yy - 16.0) ** 2)
    annulus = ((r > 5) & (r < 14)).float()

    def f(x):
        lin = torch.relu((x * filt).sum((1, 2)))
        surround = (x * x * annulus).sum((1, 2))
        return torch.stack([lin, lin / (1 + 2.0 * surround)], 1)

    model = ins.FunctionModel(f, 2, SHAPE, centers=[[20.0, 16.0]] * 2)
    p = np.array([[20.0, 16.0, 5.0, 0.1, 1.0, 0.0, 0.0]] * 2)
    out = ins.size_contrast_tuning(model, p, config=ins.ExperimentConfig())
    assert out["size_contrast"].shape == (2, 5, 8)
    assert out["suppression_index"][0] < 0.02
    assert out["suppression_index"][1] > 0.3


def test_plaid_index_closed_forms():
    g = np.zeros((2, 3, 4))
    g[0, -1] = [1.0, 1.0, 1.0, 1.0]
    g[1, -1] = [1.0, 0.8, 0.6, 0.5]
    np.testing.assert_allclose(ins.plaid_index(g), [0.0, 0.5])
    sc = np.array([[[1, 2, 3], [2, 4, 3]]], float)  # (1, C=2, S=3)
    assert ins.suppression_index(sc)[0] == pytest.approx(0.25)
    assert ins.contrast_index(sc)[0] == pytest.approx(0.0)
    assert np.isnan(ins.nonlinearity_index([0.5], [0.0]))[0]
    assert ins.nonlinearity_index([0.5], [0.25])[0] == pytest.approx(2.0)


def test_cluster_gabor_bank_matches_exact_search():
    m = _random_twin(O=4, n=3)
    grid = ins.GaborGrid(sizes=(5.0, 8.0), spatial_frequencies=(0.08, 0.14), contrasts=(1.0,), n_phases=2,
                         orientation_substeps=1, offset_window=0, refine_rounds=0)
    own = ins.optimal_gabors(m, grid)
    lab = np.array([0, 0, 1])
    fast = ins.cluster_optimal_gabors(m, lab, own.params, grid, top=2)
    exact = ins.cluster_optimal_gabors(ins.FunctionModel(m.responses, 3, SHAPE, centers=m.centers), lab, own.params, grid)
    np.testing.assert_allclose(fast.params, exact.params)
    np.testing.assert_allclose(fast.response, exact.response, rtol=1e-4)
    assert (fast.stats["per_neuron"] <= own.response + 1e-5).all()


def test_bad_inputs():
    m = _simple_and_complex()
    with pytest.raises(ValueError, match="gabors must be"):
        ins.orientation_phase_tuning(m, np.zeros((3, 7)))
    with pytest.raises(ValueError, match="neuron indices"):
        ins.optimal_gabors(m, neurons=[5])
    with pytest.raises(ValueError, match="fast=True"):
        ins.optimal_gabors(m, fast=True)
    with pytest.raises(ValueError, match="sizes"):
        ins.GaborGrid(sizes=())
    with pytest.raises(ValueError, match="ascending"):
        ins.ExperimentConfig(contrasts=(1.0, 0.5))
    with pytest.raises(ValueError, match="centres"):
        ins.optimal_gabors(ins.FunctionModel(lambda x: x.sum((1, 2))[:, None], 1, SHAPE))


def test_core_pool_fast_path_and_diag():
    torch.manual_seed(3)
    core = RotationEquivariantCore(features=3, num_rotations=4, kernel_sizes=(5, 3), pool=2).eval()
    W = torch.randn(2, 3, 4) * 0.6
    pos = torch.tensor([[19.5, 15.5], [17.5, 13.5]])
    m = ins.EquivariantModel(core, W, torch.zeros(2), pos, lambda z: F.elu(z) + 1, SHAPE)
    g = ins.render_gabors(torch.tensor([[19.0, 15.0, 6.0, 0.1, 1.0, 0.4, 0.3]]).repeat(2, 1), SHAPE)
    full = m.responses(g)[torch.arange(2), torch.arange(2)]
    assert torch.allclose(m.diag(g, torch.arange(2)), full, atol=1e-5)
    grid = ins.GaborGrid(sizes=(6.0,), spatial_frequencies=(0.08, 0.14), contrasts=(1.0,), n_phases=2,
                         orientation_substeps=1, offset_window=1, offset_step=2, refine_rounds=0)
    fast = ins.optimal_gabors(m, grid)
    loop = ins.optimal_gabors(m, grid, fast=False, straightforward=True)
    np.testing.assert_allclose(fast.response, loop.response, rtol=1e-5)
    np.testing.assert_allclose(fast.params, loop.params, atol=1e-4)


def test_natural_surround_probe_separates_suppressed_neurons():
    """Grey beyond the RF raises suppressed truth neurons' mean rate; not the others'."""
    from reprlab.v1 import stimuli as stim
    from reprlab.v1.population import sample_population

    shape = (36, 64)
    cal = stim.natural_images(48, shape, seed=2)
    pop = sample_population(40, shape, seed=3, family_weights={"complex": 1.0, "complex_ss": 1.0},
                            calibration_images=cal)
    model = ins.PopulationModel(pop)
    imgs = stim.natural_images(24, shape, seed=4)
    radii = np.stack([pop.size.numpy(), np.full(len(pop), 200.0)], 1)  # RF radius; beyond the image
    ratio = ins.natural_surround_probe(model, imgs, radii)
    assert ratio.shape == (40, 2)
    np.testing.assert_allclose(ratio[:, 1], 1.0, atol=1e-6)  # nothing masked
    ss = pop.surround_suppressed.numpy()
    assert np.median(ratio[ss, 0]) > 1.1 > 1.02 > np.median(ratio[~ss, 0])
    assert ins.natural_surround_probe(model, imgs, 5.0, neurons=[0, 1]).shape == (2, 1)
    with pytest.raises(ValueError, match="radii"):
        ins.natural_surround_probe(model, imgs, -1.0)
    with pytest.raises(ValueError, match="images"):
        ins.natural_surround_probe(model, imgs[0], 5.0)


def test_aperture_model_sees_only_its_square():
    """A planted linear population (each neuron sums all pixels): through an aperture of
    half-width w it sums exactly the (2w+1)^2 pixels around its centre (clipped at the border)."""
    centers = np.array([[10.0, 10.0], [1.0, 2.0]])
    base = ins.FunctionModel(lambda x: x.flatten(1).sum(1, keepdim=True).repeat(1, 2), 2, SHAPE, centers=centers)
    ap = ins.ApertureModel(base, 3.0)
    ones = torch.ones(2, *SHAPE)
    np.testing.assert_allclose(ap.diag(ones, torch.tensor([0, 1])).numpy(), [49.0, 5 * 6])  # x 0..4, y 0..5
    # a Gabor render goes through the same aperture: a Gabor far from neuron 0 is invisible to it
    far = torch.tensor([[35.0, 28.0, 2.0, 0.1, 1.0, 0.0, 0.0]])
    assert abs(float(ap.diag_gabors(far, torch.tensor([0])))) < 1e-4
    assert abs(float(base.diag_gabors(far, torch.tensor([0])))) > 0.1
    with pytest.raises(ValueError, match="half_width"):
        ins.ApertureModel(base, 0.0)
    with pytest.raises(NotImplementedError):
        ap.responses(ones)
