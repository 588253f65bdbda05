"""Hermite steerable basis: exact rotation of coefficients (reprlab.v1.hermite)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reprlab.v1 import hermite as h


def _rotated_grid(shape, angle):
    """Coordinates p' = R(-angle) p at which the unrotated function is evaluated."""
    x, y = h._grid(shape, None)
    c, s = math.cos(angle), math.sin(angle)
    return c * x + s * y, -s * x + c * y


@pytest.mark.parametrize("angle", [0.0, 0.37, math.pi / 2, 2.0, -1.1, 5.5])
def test_rotation_of_coefficients_is_exact_for_any_angle(angle):
    n_max, k = 6, 13
    sigma = h.default_sigma(k, n_max)
    basis = h.hermite_basis(k, n_max, sigma=sigma, dtype=torch.float64)
    coeffs = torch.randn(h.n_basis(n_max), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rotated = torch.einsum("b,bhw->hw", h.rotation_matrix(angle, n_max, dtype=torch.float64) @ coeffs, basis)
    xr, yr = _rotated_grid((k, k), angle)
    expected = torch.einsum("b,bhw->hw", coeffs, torch.as_tensor(h.hermite_functions(xr, yr, n_max, sigma)))
    assert torch.allclose(rotated, expected, atol=1e-12)


def test_quarter_turn_equals_rot90_in_the_stimulus_convention():
    n_max = 5
    basis = h.hermite_basis(11, n_max, dtype=torch.float64)
    c = torch.randn(h.n_basis(n_max), dtype=torch.float64)
    f = torch.einsum("b,bhw->hw", c, basis)
    f90 = torch.einsum("b,bhw->hw", h.rotation_matrix(math.pi / 2, n_max, dtype=torch.float64) @ c, basis)
    # +pi/2 turns from +x towards +y (y points down): clockwise on screen = rot90 with k=-1
    assert (f90 - torch.rot90(f, -1, (0, 1))).abs().max() < 1e-12
    assert (f90 - torch.rot90(f, 1, (0, 1))).abs().max() > 1e-3


def test_rotation_matrices_form_a_group_and_are_orthogonal():
    n_max = 7
    a, b = 0.7, 2.3
    Ra, Rb = (h.rotation_matrix(t, n_max, dtype=torch.float64) for t in (a, b))
    Rab = h.rotation_matrix(a + b, n_max, dtype=torch.float64)
    eye = torch.eye(h.n_basis(n_max), dtype=torch.float64)
    assert torch.allclose(Ra @ Rb, Rab, atol=1e-12)
    assert torch.allclose(Ra @ Ra.T, eye, atol=1e-12)
    assert torch.allclose(h.rotation_matrix(2 * math.pi, n_max, dtype=torch.float64), eye, atol=1e-12)
    batch = h.rotation_matrix(torch.tensor([a, b], dtype=torch.float64), n_max)
    assert batch.shape == (2, h.n_basis(n_max), h.n_basis(n_max))
    assert torch.allclose(batch[1], Rb)


def test_basis_is_orthonormal_on_a_fine_grid():
    n_max = 5
    basis = h.hermite_basis(81, n_max, sigma=8.0, dtype=torch.float64).flatten(1)
    gram = basis @ basis.T
    assert torch.allclose(gram, torch.eye(h.n_basis(n_max), dtype=torch.float64), atol=1e-6)


def test_counts_orders_and_image_sized_grid():
    assert h.n_basis(1) == 1 and h.n_basis(4) == 10
    n, m, kind = h.hermite_orders(3)
    assert list(n) == [0, 1, 1, 2, 2, 2] and list(m) == [0, 1, 1, 2, 2, 0] and list(kind) == [0, 0, 1, 0, 1, 0]
    img = h.hermite_basis((36, 64), 3, sigma=4.0, center=(10.0, 20.0))
    assert img.shape == (6, 36, 64)
    assert np.unravel_index(int(img[0].argmax()), (36, 64)) == (20, 10)  # (row=y, col=x)


def test_wrapper_rotated_basis_matches_rotating_coefficients_and_is_differentiable():
    hb = h.HermiteBasis(9, 4, dtype=torch.float64)
    c = torch.randn(hb.n_basis, dtype=torch.float64)
    angle = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    via_coeffs = hb.synthesize(h.rotate_coefficients(c, angle, 4))
    via_basis = torch.einsum("b,bhw->hw", c, hb.rotated_basis([0.9])[0])
    assert torch.allclose(via_coeffs, via_basis, atol=1e-12)
    via_coeffs.sum().backward()
    assert angle.grad is not None and torch.isfinite(angle.grad)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="n_max"):
        h.hermite_basis(5, 0)
    with pytest.raises(ValueError, match="sigma"):
        h.hermite_functions(np.zeros(3), np.zeros(3), 2, sigma=-1.0)
    with pytest.raises(ValueError, match="n_basis"):
        h.rotate_coefficients(torch.zeros(4), 0.1, 3)
    with pytest.raises(ValueError, match="finite"):
        h.rotation_matrix(float("nan"), 3)
