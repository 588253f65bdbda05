"""Stimuli of the digital-twin Methods: Gabor eqs. (1)-(2), DoG eqs. (9)-(10), plaids, natural images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reprlab.v1 import stimuli as S


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small tensors: one intra-op thread is faster and does not oversubscribe shared CI cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def paper_gabor(shape, rx, ry, sigma, nu, phi, tau, a):
    """Eqs. (1)-(2) literally, in numpy: row index i first, (i', j') = (i - r^x, j - r^y) R(φ)^T."""
    h, w = shape
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    R = np.array([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]])
    d = np.stack([i - rx, j - ry], -1) @ R.T
    ip, jp = d[..., 0], d[..., 1]
    return a / 2 * np.exp(-0.5 * (ip**2 + jp**2) / (sigma**2 / 4)) * np.cos(2 * math.pi * ip * nu + tau)


@pytest.mark.parametrize("phi", [0.0, 0.4, math.pi / 2, 2.5])
def test_gabor_matches_paper_equation(phi):
    # our (x, y) = (column, row); the paper's r^x is the row coordinate
    cx, cy, size, nu, tau, a = 30.3, 17.6, 9.0, 0.11, 0.7, 0.8
    ours = S.gabor(cx, cy, size, nu, phi, tau, a).numpy()
    ref = paper_gabor((36, 64), cy, cx, size, nu, phi, tau, a)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_gabor_peak_value_location_and_range():
    g = S.gabor(20.0, 10.0, 8.0, 0.1, 0.3, 0.0, 0.6)
    assert g.shape == (36, 64)
    i, j = np.unravel_index(int(g.argmax()), g.shape)
    assert (i, j) == (10, 20)
    assert float(g.max()) == pytest.approx(0.3, abs=1e-6)  # a/2 at the centre for τ = 0
    assert float(g.abs().max()) <= 0.3 + 1e-6


def test_gabor_orientation_is_rotation_of_horizontal_gabor():
    """gabor(φ)(p) = gabor(0)(c + R(-φ)(p - c)), evaluated via the closed form at rotated points."""
    cx, cy, size, nu, tau, phi = 31.5, 17.5, 10.0, 0.09, 0.4, 0.9
    g = S.gabor(cx, cy, size, nu, phi, tau, 1.0).numpy()
    x, y = np.meshgrid(np.arange(64), np.arange(36))
    dx, dy = x - cx, y - cy
    c, s = math.cos(-phi), math.sin(-phi)
    rx, ry = c * dx - s * dy, s * dx + c * dy  # R(-φ)(p - c)
    g0 = 0.5 * np.exp(-(rx**2 + ry**2) / (2 * (size / 2) ** 2)) * np.cos(2 * math.pi * nu * ry + tau)
    np.testing.assert_allclose(g, g0, atol=1e-5)
    # φ = 0: horizontal stripes (constant along x near the centre line), φ = π/2: vertical
    h = S.gabor(cx, cy, 200.0, 0.1, 0.0).numpy()
    assert np.ptp(h[18, 20:44]) < 0.01 and np.ptp(h[8:28, 31]) > 0.5
    v = S.gabor(cx, cy, 200.0, 0.1, math.pi / 2).numpy()
    assert np.ptp(v[8:28, 31]) < 0.01 and np.ptp(v[18, 20:44]) > 0.5


def test_quarter_turn_equals_rot90_clockwise():
    """On a square image centred Gabor: φ + π/2 is torch.rot90(k=-1) (clockwise on the display)."""
    kw = dict(shape=(33, 33))
    g = S.gabor(16.0, 16.0, 9.0, 0.12, 0.5, 1.1, **kw)
    g90 = S.gabor(16.0, 16.0, 9.0, 0.12, 0.5 + math.pi / 2, 1.1, **kw)
    torch.testing.assert_close(g90, torch.rot90(g, k=-1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_gabor_phase_identities():
    args = (30.0, 18.0, 9.0, 0.1, 0.7)
    g = S.gabor(*args, phase=0.3)
    torch.testing.assert_close(S.gabor(*args, phase=0.3 + math.pi), -g, atol=1e-6, rtol=0)
    # orientation is π-periodic up to a phase flip: (φ + π, τ) == (φ, -τ)
    a = S.gabor(30.0, 18.0, 9.0, 0.1, 0.7 + math.pi, 0.3)
    b = S.gabor(30.0, 18.0, 9.0, 0.1, 0.7, -0.3)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_gabor_vectorised_equals_per_item_and_broadcasts():
    rng = np.random.default_rng(0)
    P = {
        "center_x": rng.uniform(0, 63, 7), "center_y": rng.uniform(0, 35, 7), "size": rng.uniform(3, 20, 7),
        "spatial_frequency": rng.uniform(0, 0.3, 7), "orientation": rng.uniform(0, math.pi, 7),
        "phase": rng.uniform(0, 6.3, 7), "contrast": rng.uniform(0, 1, 7),
    }
    batch = S.gabor(**{k: torch.tensor(v) for k, v in P.items()})
    assert batch.shape == (7, 36, 64)
    for n in range(7):
        one = S.gabor(**{k: float(v[n]) for k, v in P.items()})
        torch.testing.assert_close(batch[n], one, atol=1e-6, rtol=0)
    grid = S.gabor(30.0, 18.0, torch.tensor([4.0, 8.0, 16.0])[:, None], 0.1, torch.linspace(0, 3, 5)[None, :])
    assert grid.shape == (3, 5, 36, 64)
    torch.testing.assert_close(grid[2, 4], S.gabor(30.0, 18.0, 16.0, 0.1, 3.0), atol=1e-6, rtol=0)


def test_dog_closed_form():
    a_c, a_s, s_c, s_s = 0.4, 0.5, 2.0, 6.0
    d = S.dog(20.0, 12.0, s_c, s_s, a_c, a_s).numpy()
    assert d[12, 20] == pytest.approx(a_c * (1 + a_s) - a_s, abs=1e-6)  # eq. (9) at the centre
    x, y = np.meshgrid(np.arange(64), np.arange(36))
    r2 = (x - 20.0) ** 2 + (y - 12.0) ** 2
    ref = a_c * (1 + a_s) * np.exp(-r2 / (2 * s_c**2)) - a_s * np.exp(-r2 / (2 * s_s**2))
    np.testing.assert_allclose(d, ref, atol=1e-6)
    # OFF centre: negating the centre contrast flips the centre sign; batch equals items
    batch = S.dog([20.0, 40.0], [12.0, 20.0], [2.0, 3.0], [6.0, 9.0], [0.4, -0.4], [0.5, 0.2])
    torch.testing.assert_close(batch[1], S.dog(40.0, 20.0, 3.0, 9.0, -0.4, 0.2), atol=1e-6, rtol=0)
    assert float(batch[1, 20, 40]) < 0


def test_plaid_is_sum_of_preferred_and_orthogonal_gabor():
    p = S.plaid(30.0, 18.0, 10.0, 0.1, 0.3, 0.2, 0.5, 0.25)
    ref = S.gabor(30.0, 18.0, 10.0, 0.1, 0.3, 0.2, 0.5) + S.gabor(30.0, 18.0, 10.0, 0.1, 0.3 + math.pi / 2, 0.2, 0.25)
    torch.testing.assert_close(p, ref, atol=1e-6, rtol=0)
    # zero orthogonal contrast leaves the Gabor
    torch.testing.assert_close(S.plaid(30.0, 18.0, 10.0, 0.1, 0.3, 0.2, 0.5, 0.0),
                               S.gabor(30.0, 18.0, 10.0, 0.1, 0.3, 0.2, 0.5), atol=1e-6, rtol=0)


def test_bad_stimulus_parameters_raise():
    with pytest.raises(ValueError, match="size must be > 0"):
        S.gabor(1.0, 1.0, 0.0, 0.1, 0.0)
    with pytest.raises(ValueError, match="finite"):
        S.gabor(float("nan"), 1.0, 3.0, 0.1, 0.0)
    with pytest.raises(ValueError, match="broadcast"):
        S.gabor([1.0, 2.0], [1.0, 2.0, 3.0], 3.0, 0.1, 0.0)
    with pytest.raises(ValueError, match="shape"):
        S.gabor(1.0, 1.0, 3.0, 0.1, 0.0, shape=(1, 5))
    with pytest.raises(ValueError, match="sigma"):
        S.dog(1.0, 1.0, -1.0, 2.0)


def test_natural_images_range_statistics_and_determinism():
    imgs = S.natural_images(60, seed=3)
    assert imgs.shape == (60, 36, 64) and imgs.dtype == np.float32
    assert imgs.min() >= -0.5 and imgs.max() <= 0.5
    np.testing.assert_allclose(imgs.mean(axis=(1, 2)), 0.0, atol=0.03)
    rms = imgs.std(axis=(1, 2))
    assert rms.min() > 0.07 and rms.max() < 0.26
    flat = imgs.reshape(60, -1)
    assert len(np.unique(flat.round(4), axis=0)) == 60  # all distinct
    np.testing.assert_array_equal(imgs, S.natural_images(60, seed=3))
    assert not np.array_equal(imgs, S.natural_images(60, seed=4))
    assert len(S.photo_sources()) >= 10
    other = S.natural_images(4, shape=(20, 30), seed=0, photo_fraction=1.0)
    assert other.shape == (4, 20, 30)
    with pytest.raises(ValueError, match="photo_fraction"):
        S.natural_images(4, photo_fraction=2.0)


def test_dead_leaves_have_power_law_spectrum():
    imgs = S.dead_leaves(64, shape=(64, 64), seed=1)
    assert imgs.min() >= 0 and imgs.max() <= 1
    x = imgs - imgs.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(x)) ** 2).mean(0)
    f = np.sqrt(np.fft.fftfreq(64)[:, None] ** 2 + np.fft.fftfreq(64)[None, :] ** 2)
    m = (f > 0.03) & (f < 0.3)
    slope = np.polyfit(np.log(f[m]), np.log(power[m]), 1)[0]
    assert -3.2 < slope < -1.5  # natural images: about -2


def test_hermite_basis_is_reexported_with_the_same_convention():
    from reprlab.v1 import hermite

    assert S.HermiteBasis is hermite.HermiteBasis and S.rotation_matrix is hermite.rotation_matrix
    with pytest.raises(AttributeError):
        S.no_such_stimulus  # noqa: B018
