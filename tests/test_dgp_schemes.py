"""The three inference schemes: DSVI (§2), jointly Gaussian u (§4.1), inducing locations (§4.2)."""

from __future__ import annotations

import pytest
import torch
from reprlab.dgp.conditionals import conditional, gaussian_kl, identity_mean
from reprlab.dgp.data import sin_exp_data
from reprlab.dgp.dsvi import DSVI, build_layers
from reprlab.dgp.fit import DeepGPRegressor, fit_dgp, make_model
from reprlab.dgp.ipail import InducingLocationsDGP
from reprlab.dgp.joint import JointlyGaussianDGP
from reprlab.dgp.kernels import Periodic, SquaredExponential
from torch.autograd import gradcheck

D = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _copy_dsvi_into_joint(dsvi: DSVI, joint: JointlyGaussianDGP) -> None:
    with torch.no_grad():
        joint.load_state_dict({k: v for k, v in dsvi.state_dict().items() if k.startswith("layers.")}, strict=False)
        for i in range(dsvi.n_layers):
            joint.q_mean[i].copy_(dsvi.q_mean[i])
            if joint.structure == "chain":
                joint.q_scale_blocks[i].copy_(dsvi.q_scale[i])


def _randomise(model: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".z") or name == "z":
                continue
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_chain_with_zero_coupling_equals_dsvi():
    """W = 0 (block-diagonal S): the analytic chain is DSVI draw for draw, and the KLs agree."""
    x, y = sin_exp_data(n=15)
    dsvi = make_model("dsvi", n_inducing=6, n_replicas=2)
    _randomise(dsvi, 0)
    joint = make_model("joint-chain", n_inducing=6, n_replicas=2)
    _copy_dsvi_into_joint(dsvi, joint)
    assert torch.allclose(joint.kl(), dsvi.kl(), atol=1e-9)
    with torch.no_grad():
        f_dsvi = dsvi.sample_f(x, 4, torch.Generator().manual_seed(5), full_cov=True)
        f_joint = joint.sample_f(x, 4, torch.Generator().manual_seed(5))
    assert torch.allclose(f_dsvi, f_joint, atol=1e-8)
    # the full-S nested-sampling estimator with block-diagonal S has the same KL
    full = make_model("joint", n_inducing=6, n_replicas=2)
    _copy_dsvi_into_joint(dsvi, full)
    with torch.no_grad():
        full.q_scale.zero_()
        full.q_scale[:, :6, :6] = dsvi.q_scale[0]
        full.q_scale[:, 6:, 6:] = dsvi.q_scale[1]
    assert torch.allclose(full.kl(), dsvi.kl(), atol=1e-9)


def test_analytic_chain_agrees_with_nested_sampling():
    """Eqs. (15)-(17) and sampling u ~ q then f | u give the same law of f_L (moments, MC error)."""
    x = torch.tensor([-0.8, -0.1, 0.4, 0.9], dtype=D)
    model = make_model("joint-chain", kernels=("se", "se", "se"), n_inducing=5)
    _randomise(model, 1, scale=0.3)
    n = 6000
    with torch.no_grad():
        analytic = model.sample_f(x, n, torch.Generator().manual_seed(0))[0]
        model.marginalise = "sample"
        nested = model.sample_f(x, n, torch.Generator().manual_seed(1))[0]
    se_mean = (analytic.var(0) / n + nested.var(0) / n).sqrt()
    assert torch.all((analytic.mean(0) - nested.mean(0)).abs() < 5 * se_mean + 1e-3)
    ratio = analytic.var(0) / nested.var(0)
    assert torch.all((ratio - 1).abs() < 0.12), ratio


def test_chain_precision_is_block_tridiagonal():
    model = make_model("joint-chain", kernels=("se", "se", "se", "periodic"), n_inducing=4)
    _randomise(model, 2, scale=0.5)
    with torch.no_grad():
        lam = model.precision()[0]
        cov = model.covariance()[0]
    assert torch.allclose(lam @ cov, torch.eye(16, dtype=D), atol=1e-6)
    for i in range(4):
        for j in range(4):
            block = lam[4 * i:4 * i + 4, 4 * j:4 * j + 4]
            if abs(i - j) > 1:
                assert block.abs().max() < 1e-8 * lam.abs().max()
            elif i != j:
                assert block.abs().max() > 1e-6
    # the full structure has the same API and a dense precision
    dense = make_model("joint", kernels=("se", "se", "se"), n_inducing=4)
    _randomise(dense, 3, scale=0.5)
    with torch.no_grad():
        assert dense.precision()[0][:4, 8:].abs().max() > 1e-6


def test_ipail_one_layer_matches_dsvi_in_expectation_and_kl():
    """One layer: q(f_1^z) at locations z is DSVI's q(u_1); eq. (23) reduces to the plain KL."""
    x, y = sin_exp_data(n=20)
    dsvi = make_model("dsvi", kernels=("se",), n_inducing=6)
    _randomise(dsvi, 4)
    ip = make_model("ipail", kernels=("se",), n_inducing=6)
    with torch.no_grad():
        ip.layers.load_state_dict(dsvi.layers.state_dict(), strict=False)
        ip.layers[0].kernel.load_state_dict(dsvi.layers[0].kernel.state_dict())
        ip.z.copy_(dsvi.layers[0].z)
        ip.q_mean[0].copy_(dsvi.q_mean[0])
        ip.q_scale[0].copy_(dsvi.q_scale[0])
    assert torch.allclose(ip.kl(n_samples=3), dsvi.kl(), atol=1e-9)
    a = dsvi.evaluate_elbo(x, y, 2000, 500, torch.Generator().manual_seed(0))
    b = ip.evaluate_elbo(x, y, 2000, 500, torch.Generator().manual_seed(1))
    tol = 5 * float((a["elbo_sem"] ** 2 + b["elbo_sem"] ** 2).sqrt()[0]) + 1e-6
    assert abs(float(a["elbo"][0] - b["elbo"][0])) < tol


def test_gradcheck_conditional_and_kl():
    g = torch.Generator().manual_seed(0)
    kernel = SquaredExponential(variance=1.1, lengthscale=0.7)
    z = torch.linspace(-1, 1, 4, dtype=D).reshape(1, 1, 4).requires_grad_()
    x = torch.randn(1, 2, 3, generator=g, dtype=D).requires_grad_()
    m = torch.randn(1, 1, 4, generator=g, dtype=D).requires_grad_()
    lq = (0.3 * torch.eye(4, dtype=D) + 0.05 * torch.randn(4, 4, generator=g, dtype=D)).tril().reshape(1, 1, 4, 4).requires_grad_()

    def fn(z, x, m, lq):
        return conditional(kernel, identity_mean, z, x, m, lq.tril(), jitter=0.0)

    assert gradcheck(fn, (z, x, m, lq), atol=1e-6)
    per = Periodic(lengthscale=0.9, period=2.5)
    params = tuple(per.parameters())
    other = torch.randn(1, 2, 4, generator=g, dtype=D)
    assert gradcheck(lambda xx: per(xx, other), (x,), atol=1e-6)
    assert all(p.requires_grad for p in params)
    mq = torch.randn(5, generator=g, dtype=D).requires_grad_()
    a = torch.randn(5, 5, generator=g, dtype=D)
    lqk = (torch.tril(a, -1) * 0.2 + torch.eye(5, dtype=D)).requires_grad_()
    lp = torch.linalg.cholesky(a @ a.T + 5 * torch.eye(5, dtype=D)).requires_grad_()
    assert gradcheck(lambda mq, lqk, lp: gaussian_kl(mq, lqk, torch.zeros(5, dtype=D), lp), (mq, lqk, lp))


def test_gradcheck_elbos():
    """The reparametrised ELBO of each scheme is differentiable w.r.t. its variational parameters."""
    x, y = sin_exp_data(n=6)
    for scheme in ("dsvi", "joint", "joint-chain", "ipail"):
        model = make_model(scheme, n_inducing=3, noise_std=0.3)
        _randomise(model, 6, scale=0.05)
        names = [n for n, _ in model.named_parameters() if n.startswith("q_")]
        params = dict(model.named_parameters())

        def f(*values, model=model, names=names):
            out = torch.func.functional_call(model, dict(zip(names, values)),
                                             (x, y, 2, torch.Generator().manual_seed(0)), strict=False)
            return out[0]

        inputs = tuple(params[n].detach().clone().requires_grad_() for n in names)
        assert gradcheck(f, inputs, atol=1e-5, rtol=1e-4), scheme


def test_regressor_fit_predict_deterministic():
    x, y = sin_exp_data(n=20)
    kw = dict(scheme="ipail", n_inducing=5, steps=(15, 5), lrs=(1e-2, 1e-3), eval_samples=100)
    a = DeepGPRegressor(random_state=3, **kw).fit(x, y)
    b = DeepGPRegressor(random_state=3, **kw).fit(x, y)
    assert a.elbo_ == b.elbo_ and a.loss_trace_ == b.loss_trace_
    mean, var = a.predict(x, n_samples=20)
    assert mean.shape == var.shape == (20,) and torch.isfinite(mean).all() and (var >= 0).all()
    samples = a.sample_functions(torch.linspace(-1, 1, 11), n_samples=4)
    assert [t.shape for t in samples["layers"]] == [(4, 11), (4, 11)]
    assert len(a.variance_at_zero_) == 2
    seen = []
    trace = fit_dgp(make_model("dsvi", n_inducing=5), x, y, steps=20, lrs=(1e-3,), log_every=4,
                    callback=lambda step, loss, state: seen.append((step, state["lr"])) or step >= 8)
    assert seen == [(4, 1e-3), (8, 1e-3)] and len(trace) == 2  # stopped early on request


def test_sample_functions_are_coherent_compositions():
    """The 'hidden' output is the last layer's function applied to the first layer's output."""
    model = make_model("dsvi", kernels=("se", "se"), n_inducing=5)
    _randomise(model, 7, scale=0.3)
    grid = torch.linspace(-1, 1, 9, dtype=D)
    out = model.sample_functions(grid, 3, torch.Generator().manual_seed(0))
    assert torch.allclose(out["hidden"][0], out["layers"][0])
    # with a deterministic second layer (S = 0, large M) f2 is a fixed function: check via eq. (3)
    with torch.no_grad():
        model.q_scale[1].zero_()
    out = model.sample_functions(grid, 3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer = model.layers[1]
        mean, var = layer.conditional(out["hidden"][0], layer.z.unsqueeze(1), model.q_mean[1].unsqueeze(1))
    assert torch.allclose(out["hidden"][1], mean, atol=5 * float(var.max().sqrt()) + 1e-3)


def test_ipail_rejects_layers_with_own_locations():
    import pytest

    with pytest.raises(ValueError, match="only the first layer"):
        InducingLocationsDGP(build_layers(("se", "se"), 4, with_z=True), torch.linspace(-1, 1, 4))
    with pytest.raises(ValueError, match="chain"):
        JointlyGaussianDGP(build_layers(("se", "se"), 4), structure="full", marginalise="analytic")


@pytest.mark.parametrize("scheme", ["dsvi", "joint", "ipail"])
def test_joint_and_marginal_inner_draws_estimate_the_same_elbo(scheme):
    """Drawing the inner layer jointly over the points (the original code) or point by point (the
    paper's text) changes only the Monte-Carlo noise: f_2(x_n) depends on f_1 through f_1(x_n) alone,
    so both ELBO estimates agree within their standard errors; the joint draws are correlated across
    points, the marginal ones are not."""
    x, y = sin_exp_data(n=12)
    model = make_model(scheme, n_inducing=5)
    _randomise(model, 1, scale=0.05)
    ev = {}
    with torch.no_grad():
        for draws in ("marginal", "joint"):
            model.set_draws(draws)
            ev[draws] = model.evaluate_elbo(x, y, n_samples=6000, batch=200, generator=torch.Generator().manual_seed(2))
    diff = float(ev["marginal"]["elbo"][0] - ev["joint"]["elbo"][0])
    sem = float((ev["marginal"]["elbo_sem"][0] ** 2 + ev["joint"]["elbo_sem"][0] ** 2).sqrt())
    assert abs(diff) < 4 * sem
    # given one draw of the inducing values, the joint draws of the inner layer have the conditional
    # correlation of eq. (3) between points, the marginal ones none
    layer, (z, u) = model.layers[0], model.draw_inducing(1, torch.Generator().manual_seed(3))[0]
    f = model._expand(x, 4000)
    with torch.no_grad():
        cov = layer.conditional(f[:, :1], z, u, None, True, model.jitter)[1][0, 0] + model.jitter * torch.eye(12, dtype=D)
        sd = cov.diagonal().sqrt()
        rho = (cov / sd[:, None] / sd[None, :] - torch.eye(12, dtype=D)).abs()
        a, b = divmod(int(rho.argmax()), 12)
        target = float(cov[a, b] / (sd[a] * sd[b]))
        corr = {}
        for joint in (False, True):
            draw = model._draw(layer.conditional(f, z, u, None, joint, model.jitter), torch.Generator().manual_seed(4),
                               joint, layer)[0]
            r = draw - draw.mean(0)
            corr[joint] = float((r[:, a] * r[:, b]).mean() / (r[:, a].std() * r[:, b].std()))
    assert abs(target) > 0.3
    assert abs(corr[True] - target) < 0.06 and abs(corr[False]) < 0.06
    with pytest.raises(ValueError, match="draws"):
        make_model(scheme, draws="grid")
