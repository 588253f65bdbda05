"""Peer check against GPyTorch's deep GP (doubly stochastic VI, Salimbeni & Deisenroth 2017).

GPyTorch's ``DeepGP`` implements the same model as :class:`reprlab.dgp.DSVI`: factorised
``q(u_ℓ)`` per layer, marginals propagated by sampling, closed-form KL. It parametrises ``q``
in whitened form (``u = μ(z) + L v``, ``L = chol K_zz``); :func:`to_reprlab` converts a fitted
GPyTorch model into an equivalent :class:`DSVI` so both ELBOs can be compared for identical
parameters, and :func:`fit_gpytorch_dgp` trains it with the same schedule as :func:`fit_dgp`.
GPyTorch is imported lazily (only this module needs it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from reprlab.dgp.dsvi import DSVI, build_layers
from reprlab.dgp.fit import single_thread
from reprlab.dgp.layers import check_data

__all__ = ["build_gpytorch_dgp", "fit_gpytorch_dgp", "gpytorch_elbo", "to_reprlab"]


def _kernel(name: str, batch_shape: torch.Size):
    import gpytorch

    if name == "se":
        base = gpytorch.kernels.RBFKernel(batch_shape=batch_shape)
    elif name == "periodic":
        base = gpytorch.kernels.PeriodicKernel(batch_shape=batch_shape)
        base.period_length = math.pi  # same initialisation as reprlab's Periodic
    else:
        raise ValueError(f"kernel must be 'se' or 'periodic', got {name!r}")
    base.lengthscale = 1.0
    scaled = gpytorch.kernels.ScaleKernel(base, batch_shape=batch_shape)
    scaled.outputscale = 1.0
    return scaled


def build_gpytorch_dgp(kernels: Sequence[str] = ("se", "periodic"), n_inducing: int = 10, noise_std: float = 0.01,
                       z_range: tuple[float, float] = (-1.0, 1.0)):
    """A GPyTorch ``DeepGP`` matching :func:`reprlab.dgp.make_model` ('dsvi'): returns ``(model, likelihood)``.

    Identity mean in inner layers, zero mean in the last, ``z`` on a linspace, fixed noise.
    """
    import gpytorch
    from gpytorch.models.deep_gps import DeepGP, DeepGPLayer
    from gpytorch.variational import CholeskyVariationalDistribution, VariationalStrategy

    if len(kernels) < 1:
        raise ValueError("need at least one kernel (one per layer)")

    class IdentityMean(gpytorch.means.Mean):
        def forward(self, x):
            return x[..., 0]

    class Layer(DeepGPLayer):
        def __init__(self, kernel: str, last: bool):
            out_dims = None if last else 1
            batch = torch.Size([]) if last else torch.Size([1])
            z = torch.linspace(z_range[0], z_range[1], int(n_inducing), dtype=torch.float64)[:, None]
            if not last:
                z = z[None]
            dist = CholeskyVariationalDistribution(int(n_inducing), batch_shape=batch)
            strategy = VariationalStrategy(self, z, dist, learn_inducing_locations=True)
            super().__init__(strategy, input_dims=1, output_dims=out_dims)
            self.mean_module = gpytorch.means.ZeroMean() if last else IdentityMean()
            self.covar_module = _kernel(kernel, batch)

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    class Model(DeepGP):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.ModuleList([Layer(k, False) for k in kernels[:-1]])
            self.last = Layer(kernels[-1], True)

        def forward(self, x):
            h = x
            for layer in self.hidden:
                h = layer(h)
            return self.last(h)

    likelihood = gpytorch.likelihoods.GaussianLikelihood(
        noise_constraint=gpytorch.constraints.GreaterThan(1e-10))
    likelihood.noise = float(noise_std) ** 2
    likelihood.raw_noise.requires_grad_(False)
    model = Model().double()
    # the original initialisation: m = μ(z) (whitened: m_v = 0) and S = 1e-4·I as in reprlab
    with torch.no_grad():
        for layer in [*model.hidden, model.last]:
            vd = layer.variational_strategy._variational_distribution
            vd.variational_mean.zero_()
            kzz = layer.covar_module(layer.variational_strategy.inducing_points).to_dense()
            lzz = torch.linalg.cholesky(kzz + 1e-6 * torch.eye(kzz.shape[-1], dtype=kzz.dtype))
            eye = torch.eye(kzz.shape[-1], dtype=kzz.dtype).expand_as(lzz)
            vd.chol_variational_covar.copy_(torch.linalg.solve_triangular(lzz, 1e-2 * eye, upper=False))
            layer.variational_strategy.variational_params_initialized.fill_(1)  # keep this init
    return model, likelihood.double()


def gpytorch_elbo(model, likelihood, x, y, n_samples: int = 1000) -> float:
    """GPyTorch's ELBO (total, not per data point), averaged over ``n_samples`` propagated samples."""
    import gpytorch

    xt, yt = check_data(x, y)
    mll = gpytorch.mlls.DeepApproximateMLL(gpytorch.mlls.VariationalELBO(likelihood, model, num_data=xt.shape[0]))
    with torch.no_grad(), single_thread(), gpytorch.settings.num_likelihood_samples(int(n_samples)):
        return float(mll(model(xt[:, None]), yt)) * xt.shape[0]


def fit_gpytorch_dgp(model, likelihood, x, y, steps: int | Sequence[int] = 1000,
                     lrs: Sequence[float] = (1e-3, 1e-4, 1e-5), n_samples: int = 10, random_state: int = 0) -> list[float]:
    """Adam on GPyTorch's ELBO with the staged schedule of :func:`reprlab.dgp.fit_dgp`."""
    import gpytorch

    xt, yt = check_data(x, y)
    stage_steps = [int(steps)] * len(lrs) if isinstance(steps, (int, float)) else [int(s) for s in steps]
    if len(stage_steps) != len(lrs):
        raise ValueError(f"need one step count per learning rate: got {len(stage_steps)} and {len(lrs)}")
    torch.manual_seed(int(random_state))
    mll = gpytorch.mlls.DeepApproximateMLL(gpytorch.mlls.VariationalELBO(likelihood, model, num_data=xt.shape[0]))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lrs[0], foreach=True)
    trace = []
    model.train()
    with single_thread(), gpytorch.settings.num_likelihood_samples(int(n_samples)):
        for lr, n in zip(lrs, stage_steps):
            for group in opt.param_groups:
                group["lr"] = lr
            for step in range(n):
                opt.zero_grad(set_to_none=True)
                loss = -mll(model(xt[:, None]), yt) * xt.shape[0]
                loss.backward()
                opt.step()
                if step % 50 == 0:
                    trace.append(float(loss.detach()))
    model.eval()
    return trace


@torch.no_grad()
def to_reprlab(model, likelihood) -> DSVI:
    """An equivalent :class:`DSVI`: same kernels, locations and (unwhitened) ``q(u_ℓ)``.

    With ``L = chol(K_zz + jitter)`` of reprlab's prior, ``m = μ(z) + L m_v`` and
    ``S = L S_v Lᵀ``, reprlab's KL equals GPyTorch's whitened ``KL[q(v) || N(0, I)]``; both use
    an absolute jitter of 1e-6 in float64. GPyTorch's periodic lengthscale is our ``ℓ²``.
    """
    layers_gp = [*model.hidden, model.last]
    kernels = []
    for layer in layers_gp:
        base = layer.covar_module.base_kernel
        kernels.append("periodic" if base.__class__.__name__ == "PeriodicKernel" else "se")
    n_inducing = layers_gp[0].variational_strategy.inducing_points.shape[-2]
    noise_std = float(likelihood.noise.sqrt())
    dsvi = DSVI(build_layers(kernels, n_inducing), noise_std=noise_std)
    for i, (ours, theirs) in enumerate(zip(dsvi.layers, layers_gp)):
        k_gp = theirs.covar_module
        ours.kernel.log_variance.fill_(float(k_gp.outputscale.reshape(-1)[0].log()))
        ell = float(k_gp.base_kernel.lengthscale.reshape(-1)[0])
        # GPyTorch's PeriodicKernel is exp(-2 sin²(π r / p) / ℓ): its ℓ is our ℓ²
        ours.kernel.set_lengthscale(ell**0.5 if kernels[i] == "periodic" else ell)
        if kernels[i] == "periodic":
            ours.kernel.log_period.fill_(float(k_gp.base_kernel.period_length.reshape(-1)[0].log()))
        z = theirs.variational_strategy.inducing_points.reshape(-1)
        ours.z.copy_(z[None])
        vd = theirs.variational_strategy._variational_distribution
        m_v = vd.variational_mean.reshape(-1)
        l_v = vd.chol_variational_covar.reshape(n_inducing, n_inducing).tril()
        lzz = ours.prior_scale_tril(ours.z, dsvi.jitter)[0]
        dsvi.q_mean[i].copy_((ours.mean_fn(z) + lzz @ m_v)[None])
        dsvi.q_scale[i].copy_((lzz @ l_v)[None])
    return dsvi
