"""Poisson GLM baseline: recovery of planted filters and agreement with scikit-learn (reprlab.v1.glm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reprlab.v1.glm import DEFAULT_ALPHAS, PoissonGLM, glm_alphas
from scipy.ndimage import gaussian_filter
from sklearn.linear_model import PoissonRegressor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    T, H, W, N = 2400, 12, 16, 6
    imgs = np.stack([gaussian_filter(rng.normal(size=(H, W)), 0.8) for _ in range(T)]).astype(np.float32)
    yy, xx = np.mgrid[0:H // 2, 0:W // 2]
    filters = []
    for n in range(N):  # Gabor-like filters in the pooled (6 x 8) pixel space
        cx, cy, th = 2 + n % 4, 2 + n % 2, n * np.pi / N
        u = np.cos(th) * (xx - cx) + np.sin(th) * (yy - cy)
        filters.append(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 4.0) * np.cos(1.2 * u))
    w = np.stack(filters).reshape(N, -1)
    w = 0.5 * w / np.linalg.norm(w, axis=1, keepdims=True)
    glm = PoissonGLM(downsample=2)
    X = glm._pool(torch.as_tensor(imgs)).numpy()
    Xz = (X - X.mean(0)) / X.std(0)
    rate = np.exp(Xz @ w.T)
    Y = rng.poisson(rate).astype(np.float32)
    fit = PoissonGLM(downsample=2, tol=1e-8, max_iter=300).fit(imgs[:2000], Y[:2000], imgs[2000:2200], Y[2000:2200])
    return dict(imgs=imgs, Y=Y, w=w, rate=rate, fit=fit)


def test_default_grid_is_48_log_spaced_values_in_0p1_to_5():
    assert len(DEFAULT_ALPHAS) == 48
    assert DEFAULT_ALPHAS[0] == pytest.approx(0.1) and DEFAULT_ALPHAS[-1] == pytest.approx(5.0)
    assert np.allclose(np.diff(np.log(DEFAULT_ALPHAS)), np.log(50) / 47)
    assert np.allclose(glm_alphas(3, 1, 100), [1, 10, 100])


def test_glm_recovers_planted_linear_filters(planted):
    fit, w = planted["fit"], planted["w"]
    for n in range(len(w)):
        assert np.corrcoef(fit.coef_[n], w[n])[0, 1] > 0.9
    pred = fit.predict(planted["imgs"][2200:])
    true = planted["rate"][2200:]
    for n in range(len(w)):
        assert np.corrcoef(pred[:, n], true[:, n])[0, 1] > 0.9
    assert fit.converged_.all()
    assert set(fit.alpha_) <= set(DEFAULT_ALPHAS) and fit.val_loglik_.shape == (len(w), 48)


def test_glm_solution_equals_scikit_learn_poisson_regressor(planted):
    fit = planted["fit"]
    X = fit._features(planted["imgs"][:2000]).numpy().astype(np.float64)
    for n in (0, 3):
        sk = PoissonRegressor(alpha=float(fit.alpha_[n]), tol=1e-10, max_iter=2000).fit(X, planted["Y"][:2000, n])
        assert np.abs(sk.coef_ - fit.coef_[n]).max() < 2e-3 * max(1.0, np.abs(sk.coef_).max())
        assert sk.intercept_ == pytest.approx(fit.intercept_[n], abs=2e-3)


def test_warm_started_penalty_path_equals_independent_solves(planted):
    imgs, Y = planted["imgs"], planted["Y"]
    cold = PoissonGLM(downsample=2, tol=1e-8, max_iter=300, warm_start=1).fit(imgs[:2000], Y[:2000], imgs[2000:2200],
                                                                              Y[2000:2200])
    warm = planted["fit"]
    assert np.allclose(cold.val_loglik_, warm.val_loglik_, atol=2e-4)
    assert np.abs(cold.coef_ - warm.coef_).max() < 2e-3


def test_penalty_choice_follows_validation_likelihood(planted):
    fit = planted["fit"]
    assert np.array_equal(fit.alpha_index_, fit.val_loglik_.argmax(1))


def test_bad_inputs_raise_clear_errors():
    x = np.zeros((10, 8, 8), np.float32)
    with pytest.raises(ValueError, match="non-negative"):
        PoissonGLM().fit(x, -np.ones((10, 2)), x, np.ones((10, 2)))
    with pytest.raises(ValueError, match="n_trials"):
        PoissonGLM().fit(x, np.ones((9, 2)), x, np.ones((10, 2)))
    with pytest.raises(ValueError, match="NaN"):
        PoissonGLM().fit(x, np.full((10, 2), np.nan), x, np.ones((10, 2)))
    with pytest.raises(ValueError, match="not fitted"):
        PoissonGLM().predict(x)
    with pytest.raises(ValueError, match="positive"):
        PoissonGLM(alphas=[0.0, 1.0])
