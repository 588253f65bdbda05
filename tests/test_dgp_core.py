"""Chapter 5 building blocks: kernels, conditionals (eqs. 3, 7-8), KL, Cholesky, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reprlab.dgp.conditionals import (
    CholeskyError,
    conditional,
    gaussian_kl,
    identity_mean,
    stable_cholesky,
    zero_mean,
)
from reprlab.dgp.data import heartbeat_signal, sign_compositions, sin_exp_data
from reprlab.dgp.dsvi import DSVI, build_layers
from reprlab.dgp.fit import DeepGPRegressor, fit_dgp, make_model
from reprlab.dgp.kernels import Periodic, SquaredExponential, make_kernel
from reprlab.dgp.layers import check_data
from reprlab.dgp.uncertain_inputs import min_second_derivative, predictive_variance_curve

D = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _b(t: torch.Tensor) -> torch.Tensor:
    """Add the (T=1, S=1) leading dims used throughout reprlab.dgp."""
    return t.reshape(1, 1, *t.shape)


def test_kernels_closed_form():
    se = SquaredExponential(variance=2.0, lengthscale=0.5)
    per = Periodic(variance=1.5, lengthscale=0.7, period=1.3)
    x1 = torch.tensor([0.0, 0.3, -1.0], dtype=D)
    x2 = torch.tensor([0.1, 2.0], dtype=D)
    with torch.no_grad():
        k_se = se(_b(x1), _b(x2))[0, 0]
        k_per = per(_b(x1), _b(x2))[0, 0]
    d = x1[:, None] - x2[None, :]
    assert torch.allclose(k_se, 2.0 * torch.exp(-0.5 * d**2 / 0.25))
    assert torch.allclose(k_per, 1.5 * torch.exp(-2 * torch.sin(math.pi * d / 1.3) ** 2 / 0.49))
    # periodicity and diag
    with torch.no_grad():
        shifted = per(_b(x1 + 1.3), _b(x2))[0, 0]
        assert torch.allclose(shifted, k_per)
        assert torch.allclose(se.diag(_b(x1)), torch.full((1, 1, 3), 2.0, dtype=D))


def test_kernel_bad_hyperparameters():
    with pytest.raises(ValueError, match="lengthscale"):
        SquaredExponential(lengthscale=-1.0)
    with pytest.raises(ValueError, match="period"):
        Periodic(period=0.0)
    with pytest.raises(ValueError, match="kernel must be"):
        make_kernel("matern")


def _gp_posterior(kernel, xtrain, ftrain, xtest):
    """Exact noiseless GP posterior by dense linear algebra (independent reference)."""
    with torch.no_grad():
        k = kernel(_b(xtrain), _b(xtrain))[0, 0] + 1e-10 * torch.eye(len(xtrain), dtype=D)
        ks = kernel(_b(xtest), _b(xtrain))[0, 0]
        kss = kernel(_b(xtest), _b(xtest))[0, 0]
        sol = torch.linalg.solve(k, ks.T)
        return ks @ torch.linalg.solve(k, ftrain), kss - ks @ sol


def test_conditional_with_inducing_at_data_is_exact_gp():
    """M = N, z = x, S = 0: eq. (3) is the exact (noiseless) GP posterior."""
    kernel = SquaredExponential(variance=1.3, lengthscale=0.6)
    x = torch.linspace(-1, 1, 8, dtype=D)
    f = torch.sin(3 * x)
    xt = torch.tensor([-0.95, -0.2, 0.33, 1.4], dtype=D)
    with torch.no_grad():
        mean, cov = conditional(kernel, zero_mean, _b(x), _b(xt), _b(f), None, full_cov=True, jitter=1e-12)
        m_at, v_at = conditional(kernel, zero_mean, _b(x), _b(x), _b(f), None, jitter=1e-12)
    ref_mean, ref_cov = _gp_posterior(kernel, x, f, xt)
    assert torch.allclose(mean[0, 0], ref_mean, atol=1e-6)
    assert torch.allclose(cov[0, 0], ref_cov, atol=1e-6)
    assert torch.allclose(m_at[0, 0], f, atol=1e-6)
    assert v_at.abs().max() < 1e-6


def test_conditional_marginalised_matches_dense_formula():
    """Eqs. (7)-(8) with a mean function: μ + αᵀ(m − μ(z)), k − αᵀ(K_zz − S)α."""
    g = torch.Generator().manual_seed(0)
    kernel = Periodic(variance=0.8, lengthscale=1.1, period=3.0)
    z = torch.linspace(-1, 1, 5, dtype=D)
    x = torch.randn(7, generator=g, dtype=D)
    m = torch.randn(5, generator=g, dtype=D)
    lq = torch.tril(torch.randn(5, 5, generator=g, dtype=D)) * 0.3
    with torch.no_grad():
        mean, cov = conditional(kernel, identity_mean, _b(z), _b(x), _b(m), _b(lq), full_cov=True, jitter=1e-12)
        _, var = conditional(kernel, identity_mean, _b(z), _b(x), _b(m), _b(lq), jitter=1e-12)
        kzz = kernel(_b(z), _b(z))[0, 0]
        kzx = kernel(_b(z), _b(x))[0, 0]
        kxx = kernel(_b(x), _b(x))[0, 0]
    alpha = torch.linalg.solve(kzz, kzx)
    ref_mean = x + alpha.T @ (m - z)
    ref_cov = kxx - alpha.T @ (kzz - lq @ lq.T) @ alpha
    assert torch.allclose(mean[0, 0], ref_mean, atol=1e-8)
    assert torch.allclose(cov[0, 0], ref_cov, atol=1e-8)
    assert torch.allclose(var[0, 0], ref_cov.diagonal(), atol=1e-8)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mq, mp = torch.randn(2, 4, 6, generator=g, dtype=D)
    lq, lp = (
        torch.tril(torch.randn(4, 6, 6, generator=g, dtype=D), -1)
        + torch.diag_embed(torch.rand(4, 6, generator=g, dtype=D) + 0.5)
        for _ in range(2)
    )
    ours = gaussian_kl(mq, lq, mp, lp)
    ref = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(mq, scale_tril=lq),
        torch.distributions.MultivariateNormal(mp, scale_tril=lp),
    )
    assert torch.allclose(ours, ref, atol=1e-10)
    # a negative diagonal in the free Cholesky parametrisation gives the same S, the same KL
    flip = lq.clone()
    flip[..., 0, 0] *= -1
    flip[..., 1:, 0] *= -1
    assert torch.allclose(gaussian_kl(mq, flip, mp, lp), ours, atol=1e-10)


def test_dsvi_one_layer_optimal_q_gives_exact_marginal_likelihood():
    """One layer, z = x, Titsias' optimal q(u): the ELBO equals log N(y | 0, K + σ²I)."""
    x, y = sin_exp_data(n=12, noise_std=0.1, seed=3)
    noise = 0.1
    model = DSVI(build_layers(("se",), n_inducing=12, z_range=(-1, 1)), noise_std=noise, jitter=1e-10)
    with torch.no_grad():
        model.layers[0].z.copy_(x[None])
        kernel = model.layers[0].kernel
        kernel.set_lengthscale(0.3)
        k = kernel(_b(x), _b(x))[0, 0]
        ky = k + noise**2 * torch.eye(12, dtype=D)
        m = k @ torch.linalg.solve(ky, y)  # optimal q(u) = exact posterior of f(x) when z = x
        s = k - k @ torch.linalg.solve(ky, k)
        model.q_mean[0].copy_(m[None])
        model.q_scale[0].copy_(torch.linalg.cholesky(s + 1e-12 * torch.eye(12, dtype=D))[None])
        exact = torch.distributions.MultivariateNormal(torch.zeros(12, dtype=D), k + noise**2 * torch.eye(12, dtype=D)).log_prob(y)
        ev = model.evaluate_elbo(x, y, n_samples=4000, batch=1000, generator=torch.Generator().manual_seed(0))
    mc_err = float(ev["elbo_sem"][0]) * 4 + 0.05
    assert abs(float(ev["elbo"][0]) - float(exact)) < mc_err
    # and it is a bound: a perturbed q is worse
    with torch.no_grad():
        model.q_mean[0].add_(0.05)
        worse = model.evaluate_elbo(x, y, n_samples=4000, batch=1000, generator=torch.Generator().manual_seed(0))
    assert float(worse["elbo"][0]) < float(exact) - 0.1


def test_stable_cholesky_jitter_retry_and_error_names_the_layer():
    v = torch.tensor([[1.0], [2.0], [3.0]], dtype=D)
    singular = v @ v.T  # rank one: plain Cholesky fails
    _, info = torch.linalg.cholesky_ex(singular)
    assert int(info) > 0
    chol = stable_cholesky(singular, jitter=1e-8)
    assert torch.allclose(chol @ chol.T, singular, atol=1e-4)
    indefinite = torch.diag(torch.tensor([1.0, -1.0], dtype=D))
    with pytest.raises(CholeskyError, match="layer 2"):
        stable_cholesky(indefinite, where="layer 2 (Periodic)")
    with pytest.raises(CholeskyError, match="non-finite"):
        stable_cholesky(torch.full((2, 2), float("nan"), dtype=D), where="layer 1")


def test_failing_layer_is_named_in_the_model_error():
    model = make_model("dsvi")
    x, y = sin_exp_data(n=20)
    with torch.no_grad():
        model.layers[1].kernel.log_variance.fill_(float("nan"))
    with pytest.raises(CholeskyError, match="layer 2"):
        model.elbo(x, y, 2)


def test_bad_inputs_raise_clear_errors():
    x, y = sin_exp_data(n=20)
    with pytest.raises(ValueError, match="non-finite"):
        check_data(torch.tensor([0.0, float("nan")]), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="same length"):
        check_data(x, y[:-1])
    with pytest.raises(ValueError, match="too few data points"):
        check_data(x[:5], y[:5], n_inducing=10)
    with pytest.raises(ValueError, match="1-D"):
        check_data(torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="scheme must be"):
        make_model("mcmc")
    with pytest.raises(ValueError, match="too few"):
        DeepGPRegressor(n_inducing=10).fit(x[:4], y[:4])
    with pytest.raises(ValueError, match="not fitted"):
        DeepGPRegressor().predict(x)
    with pytest.raises(ValueError, match="one step count per learning rate"):
        fit_dgp(make_model("dsvi"), x, y, steps=(1, 2), lrs=(1e-3,))
    with pytest.raises(ValueError, match="noise_std"):
        make_model("dsvi", noise_std=0.0)


def test_replicas_do_not_interact():
    x, y = sin_exp_data(n=20)
    for scheme in ("dsvi", "joint", "joint-chain", "ipail"):
        model = make_model(scheme, n_replicas=2)
        elbo, _ = model.elbo(x, y, 3, torch.Generator().manual_seed(0))
        elbo[0].backward()
        for name, p in model.named_parameters():
            assert p.grad is None or torch.all(p.grad[1] == 0), (scheme, name)


def test_fig3_second_derivative_closed_form_and_limit():
    curve = predictive_variance_curve(6, lengthscale=0.8, variance=1.2, centre=0.3, n_grid=1201)
    x = torch.tensor(curve["x"])
    h = float(x[1] - x[0])
    var = torch.tensor(curve["var"])
    fd2 = (var[2:] - 2 * var[1:-1] + var[:-2]) / h**2
    assert torch.allclose(fd2, torch.tensor(curve["d2var"][1:-1]), atol=1e-4)
    fd1 = (var[2:] - var[:-2]) / (2 * h)
    assert torch.allclose(fd1, torch.tensor(curve["dvar"][1:-1]), atol=1e-4)
    res = min_second_derivative((2, 5, 10, 20))
    mins = res["min_d2var"]
    assert (mins < 0).all()
    assert abs(mins[-1]) < 1e-4 < abs(mins[0])  # tends to zero as M grows (Fig. 3B)
    assert all(abs(b) < abs(a) for a, b in zip(mins[1:], mins[2:]))


def test_data_generators():
    assert len(sign_compositions(3)) == 4
    assert all(math.prod(s) == 1 for s in sign_compositions(3))
    hb = heartbeat_signal(n=80, seed=2)
    assert hb["x"].shape == hb["y"].shape == (80,)
    assert torch.all(torch.diff(hb["warp"]) > 0)  # the true warp is monotonic
    x, y = sin_exp_data(n=50, noise_std=0.0)
    assert torch.allclose(y, torch.sin(7 * torch.exp(x)))
    # seed 1 is the original code's data: np.random.seed(1); sin(7 exp(x)) + 0.01 randn(50)
    x, y = sin_exp_data(n=50, noise_std=0.01, seed=1)
    assert torch.allclose(x, torch.from_numpy(np.linspace(-1, 1, 50)), rtol=0, atol=1e-15)
    assert abs(float(y[0]) - (math.sin(7 * math.exp(-1)) + 0.01 * 1.6243453636632417)) < 1e-15
    with pytest.raises(ValueError):
        sin_exp_data(n=1)
    with pytest.raises(ValueError):
        heartbeat_signal(warp_strength=1.5)


def test_conditional_with_jitter_is_the_noisy_observation_posterior():
    """With jitter j the conditional must be a Gaussian conditional: mean and covariance of the GP
    given u observed with noise variance j, i.e. k_xx − K_xz (K_zz + jI)⁻¹ K_zx (+ αᵀSα).

    The old code used k_xx − αᵀK_zzα with α = (K_zz + jI)⁻¹K_zx, which is larger by j·αᵀα (here
    ~1e-3) and is not the conditional of any Gaussian.
    """
    j = 1e-2
    kernel = SquaredExponential(variance=1.0, lengthscale=0.7)
    z = torch.linspace(-1, 1, 6, dtype=D)
    x = torch.linspace(-1.2, 1.1, 9, dtype=D)
    u = torch.cos(2 * z)
    lq = 0.1 * torch.eye(6, dtype=D)
    with torch.no_grad():
        mean, cov = conditional(kernel, zero_mean, _b(z), _b(x), _b(u), None, full_cov=True, jitter=j)
        _, var = conditional(kernel, zero_mean, _b(z), _b(x), _b(u), None, jitter=j)
        _, var_s = conditional(kernel, zero_mean, _b(z), _b(x), _b(u), _b(lq), jitter=j)
        kzz = kernel(_b(z), _b(z))[0, 0] + j * torch.eye(6, dtype=D)
        kzx = kernel(_b(z), _b(x))[0, 0]
        kxx = kernel(_b(x), _b(x))[0, 0]
    alpha = torch.linalg.solve(kzz, kzx)
    ref_cov = kxx - kzx.T @ alpha
    assert torch.allclose(mean[0, 0], alpha.T @ u, atol=1e-10)
    assert torch.allclose(cov[0, 0], ref_cov, atol=1e-10)
    assert torch.allclose(var[0, 0], ref_cov.diagonal(), atol=1e-10)
    assert torch.allclose(var_s[0, 0], (ref_cov + alpha.T @ lq @ lq.T @ alpha).diagonal(), atol=1e-10)


def test_replica_grad_clipper_clips_only_the_spiking_replica():
    from reprlab.dgp.fit import ReplicaGradClipper

    model = make_model("dsvi", n_replicas=3)
    params = list(model.parameters())
    clipper = ReplicaGradClipper(params, 3, factor=10.0)

    def set_grads(scales):
        for p in params:
            g = torch.ones_like(p)
            for t, s in enumerate(scales):
                g[t] *= s
            p.grad = g

    set_grads([1.0, 1.0, 1.0])
    n0 = clipper().clone()  # first call sets the reference norm
    set_grads([1.0, 5.0, 1e6])  # replica 2 spikes, replica 1 is within the factor
    before = [p.grad.clone() for p in params]
    norms = clipper()
    assert torch.allclose(norms, n0 * torch.tensor([1.0, 5.0, 1e6], dtype=D))
    after = clipper.norms()
    assert torch.allclose(after[:2], norms[:2])
    assert after[2] < 10.0 * n0[2] * 1.0001 and after[2] > 9.9 * n0[2]
    for b, p in zip(before, params):  # directions kept, replicas 0 and 1 untouched
        assert torch.equal(p.grad[:2], b[:2])
        assert torch.allclose(p.grad[2] / p.grad[2].norm(), b[2] / b[2].norm())
    with pytest.raises(ValueError, match="clip factor"):
        ReplicaGradClipper(params, 3, factor=0.5)
    with pytest.raises(ValueError, match="leading dimension"):
        ReplicaGradClipper(params, 2)


def test_conditional_stays_accurate_when_kzz_is_ill_conditioned():
    """A periodic layer with a large variance and lengthscale (where Table 1 fits go: its K_zz is
    nearly low rank, cond(K_zz + jI) ~ 3e8) against a 50-digit reference. The predictive variance
    must be right to far below the noise variance 1e-4; the explicit inverse used before was off
    by up to 6e-4 (even negative), which corrupted the ELBO and its gradients."""
    import mpmath  # a dependency of torch (via sympy)

    kernel = Periodic(variance=1e5, lengthscale=3.2, period=3.0)
    z = torch.linspace(-1.4, 1.4, 10, dtype=D)
    x = torch.linspace(-1.3, 1.3, 7, dtype=D)
    u = 0.5 * torch.sin(2.1 * z)
    with torch.no_grad():
        mean, var = conditional(kernel, zero_mean, _b(z), _b(x), _b(u), None, jitter=1e-6)
        kzz = kernel(_b(z), _b(z))[0, 0] + 1e-6 * torch.eye(10, dtype=D)
        kzx = kernel(_b(z), _b(x))[0, 0]
    assert float(torch.linalg.cond(kzz)) > 1e8
    mpmath.mp.dps = 50
    sol = mpmath.matrix(kzz.tolist()) ** -1 * mpmath.matrix(kzx.tolist())
    ref_var = [float(1e5 - sum(kzx[i, j].item() * sol[i, j] for i in range(10))) for j in range(7)]
    ref_mean = [float(sum(u[i].item() * sol[i, j] for i in range(10))) for j in range(7)]
    assert torch.allclose(var[0, 0], torch.tensor(ref_var, dtype=D), rtol=0, atol=1e-9)
    assert torch.allclose(mean[0, 0], torch.tensor(ref_mean, dtype=D), rtol=0, atol=1e-7)


def test_marginal_and_joint_draws_have_the_same_variance_including_jitter():
    """Every layer draw is from N(μ, Σ + jitter·I), marginally (ELBO) or jointly (figures, Var[f(0)]),
    as in the original code. The marginal draw used to omit the jitter, so the trained model and
    the reported variances differed by one jitter per layer."""
    x = torch.linspace(-1, 1, 5, dtype=D)
    model = DSVI(build_layers(("se",), n_inducing=4), noise_std=0.1, jitter=1e-2)
    with torch.no_grad():
        _, var = model.layer_moments(0, x)
        g = torch.Generator().manual_seed(0)
        marginal = model.sample_f(x, 40000, g)[0]
        joint = model.sample_functions(x, 40000, g)["layers"][0][0]
    expected = var[0] + 1e-2
    assert torch.allclose(marginal.var(0), expected, rtol=0.05)
    assert torch.allclose(joint.var(0), expected, rtol=0.05)


def test_kernels_learn_the_log_precision_as_the_original_code():
    """The raw lengthscale parameter is log γ, γ = 1/ℓ² (the original code's), so Adam moves log ℓ by
    half a learning rate per step, as there. Closed-form gradients: ∂k/∂log γ = -γ d²/2 · k (SE) and
    -2γ sin²(πd/p) · k (periodic); ∂k/∂log p = 2γ sin(2πd/p) (πd/p) · k."""
    x1 = torch.tensor([0.0, 0.3, -1.0], dtype=D)
    x2 = torch.tensor([0.1, 0.9], dtype=D)
    d = x1[:, None] - x2[None, :]
    se = SquaredExponential(variance=1.3, lengthscale=0.5)
    per = Periodic(variance=0.7, lengthscale=0.8, period=1.7)
    assert torch.allclose(se.log_gamma, torch.tensor([math.log(4.0)], dtype=D))
    assert torch.allclose(per.lengthscale, torch.tensor([0.8], dtype=D))
    k = se(_b(x1), _b(x2))[0, 0]
    (g,) = torch.autograd.grad(k.sum(), se.log_gamma)
    assert torch.allclose(g, (-0.5 * 4.0 * d**2 * k).sum().reshape(1))
    k = per(_b(x1), _b(x2))[0, 0]
    g_gamma, g_period = torch.autograd.grad(k.sum(), [per.log_gamma, per.log_period])
    gamma, arg = 0.8**-2, math.pi * d / 1.7
    assert torch.allclose(g_gamma, (-2.0 * gamma * torch.sin(arg) ** 2 * k).sum().reshape(1))
    assert torch.allclose(g_period, (2.0 * gamma * torch.sin(2 * arg) * arg * k).sum().reshape(1))
    # one Adam step of lr on a gradient moves log γ by lr, i.e. log ℓ by lr / 2
    opt = torch.optim.Adam([se.log_gamma], lr=1e-3)
    before = float(se.lengthscale.detach().log())
    se(_b(x1), _b(x2)).sum().backward()
    opt.step()
    assert abs(abs(float(se.lengthscale.detach().log()) - before) - 0.5e-3) < 1e-9
    se.set_lengthscale(0.25)
    assert torch.allclose(se.lengthscale, torch.tensor([0.25], dtype=D))
    with pytest.raises(ValueError, match="lengthscale"):
        se.set_lengthscale(0.0)
