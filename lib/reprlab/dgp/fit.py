"""Building and fitting DGPs: a scheme factory, an Adam loop with one learning rate per stage
(the paper's text: 1e-3 divided by 10 twice; the original code in effect kept 1e-3, which
Table 1 uses, see ``experiments.TABLE1_PRESETS``), optional per-replica gradient clipping, and a scikit-learn
style estimator.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from reprlab._device import device as pick_device
from reprlab._device import torch_threads
from reprlab.dgp.dsvi import DSVI, build_layers
from reprlab.dgp.ipail import InducingLocationsDGP
from reprlab.dgp.joint import JointlyGaussianDGP
from reprlab.dgp.layers import DeepGP, check_data

__all__ = ["SCHEMES", "DeepGPRegressor", "ReplicaGradClipper", "fit_dgp", "make_model", "single_thread"]

SCHEMES: dict[str, str] = {
    "dsvi": "DSVI (factorised q(u_ℓ), §2)",
    "joint": "jointly Gaussian u, full S, nested sampling (§4.1)",
    "joint-chain": "jointly Gaussian u, chain S (eq. 14), analytic marginalisation (eqs. 15-17)",
    "ipail": "inducing points as inducing locations (§4.2)",
}

Callback = Callable[[int, float, dict], "bool | None"]


def single_thread() -> contextlib.AbstractContextManager[None]:
    """Run torch on one intra-op thread (restored afterwards): :func:`reprlab.torch_threads` (1).

    The DGP tensors are tiny; on a busy CPU, OpenMP threads spin-waiting for each other made
    a fit ~20× slower than a single thread in our measurements.
    """
    return torch_threads(1)


def make_model(scheme: str, kernels: Sequence[str] = ("se", "periodic"), n_inducing: int = 10,
               noise_std: float = 0.01, z_range: tuple[float, float] = (-1.0, 1.0),
               random_state: int = 0, device=None, n_replicas: int = 1, inner_mean: str = "identity",
               draws: str = "marginal", **kwargs) -> DeepGP:
    """A DGP of the given ``scheme`` (see :data:`SCHEMES`) with the original initialisation.

    ``n_replicas`` independent copies are trained side by side (e.g. the trials of Table 1);
    ``inner_mean`` is the mean function of the inner layers ('identity' as in the paper, or 'zero');
    ``draws`` how the ELBO draws the inner layers at the data ('marginal' or 'joint', see
    :attr:`DeepGP.draws`).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    if draws not in DeepGP.DRAWS:
        raise ValueError(f"draws must be one of {DeepGP.DRAWS}, got {draws!r}")
    torch.manual_seed(int(random_state))
    if scheme == "ipail":
        layers = build_layers(kernels, n_inducing, with_z=False, z_range=z_range, n_replicas=n_replicas,
                              inner_mean=inner_mean)
        z0 = torch.linspace(z_range[0], z_range[1], int(n_inducing), dtype=torch.float64)
        g = torch.Generator().manual_seed(int(random_state))
        model = InducingLocationsDGP(layers, z0, noise_std=noise_std, generator=g, **kwargs)
    else:
        layers = build_layers(kernels, n_inducing, with_z=True, z_range=z_range, n_replicas=n_replicas,
                              inner_mean=inner_mean)
        if scheme == "dsvi":
            model = DSVI(layers, noise_std=noise_std, **kwargs)
        elif scheme == "joint":
            model = JointlyGaussianDGP(layers, noise_std=noise_std, structure="full", marginalise="sample", **kwargs)
        else:
            model = JointlyGaussianDGP(layers, noise_std=noise_std, structure="chain", marginalise="analytic", **kwargs)
    model.set_draws(draws)
    return model.to(pick_device(device) if device is not None else torch.device("cpu"))


def fit_dgp(model: DeepGP, x, y, steps: int | Sequence[int] = 3000, lrs: Sequence[float] = (1e-3, 1e-4, 1e-5),
            n_samples: int = 10, random_state: int = 0, callback: Callback | None = None,
            progress: bool = False, log_every: int = 50, clip: float | None = None) -> list[float]:
    """Maximise the ELBO with Adam, one stage per learning rate in ``lrs``.

    ``steps`` is the number of steps per stage (an int, or one per stage). ``callback(step,
    loss, state)`` is called every ``log_every`` steps and may return True to stop early.
    Replicas are optimised together (the loss is the sum of their negative ELBOs; Adam acts
    element-wise, so they do not interact). ``clip`` (None: off) clips each replica's gradient
    norm at ``clip`` × its running typical norm (:class:`ReplicaGradClipper`). Returns the
    negative-ELBO trace, averaged over replicas, one value per logged step.
    """
    xt, yt = check_data(x, y, device=model.ref.device)
    stage_steps = [int(steps)] * len(lrs) if isinstance(steps, (int, float)) else [int(s) for s in steps]
    if len(stage_steps) != len(lrs):
        raise ValueError(f"need one step count per learning rate: got {len(stage_steps)} and {len(lrs)}")
    if any(s < 0 for s in stage_steps) or any(not (lr > 0) for lr in lrs):
        raise ValueError("steps must be >= 0 and learning rates > 0")
    with single_thread():
        return _fit_loop(model, xt, yt, stage_steps, lrs, n_samples, random_state, callback, progress, log_every,
                         clip)


class ReplicaGradClipper:
    """Per-replica clipping of the gradient norm at ``factor`` × a running typical norm.

    The Monte-Carlo gradients of the DGP ELBOs are heavy-tailed (a draw that makes a kernel
    matrix near-singular gives a gradient 10³-10⁶ times the typical one). Each replica's
    gradient (every parameter has a leading replica dimension, and replicas do not interact)
    is rescaled to norm ``≤ factor · exp(r)``, where ``r`` is an exponential moving average
    (rate ``rate``) of the log of the replica's clipped norms, i.e. a running geometric mean
    that a spike cannot inflate. Only the step changes, never the objective: the direction of
    every gradient is kept.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], n_replicas: int, factor: float = 10.0,
                 rate: float = 0.01) -> None:
        if not (factor > 1.0) or not math.isfinite(factor):
            raise ValueError(f"clip factor must be a finite number > 1, got {factor!r}")
        self.params = [p for p in params if p.requires_grad]
        self.n_replicas = int(n_replicas)
        for p in self.params:
            if p.dim() < 1 or p.shape[0] != self.n_replicas:
                raise ValueError(f"per-replica clipping needs parameters with a leading dimension of "
                                 f"{self.n_replicas} replicas, found shape {tuple(p.shape)}")
        self.log_factor = math.log(float(factor))
        self.rate = float(rate)
        self.log_ref: torch.Tensor | None = None
        self.n_clipped = torch.zeros(self.n_replicas, dtype=torch.long)

    def norms(self) -> torch.Tensor:
        total = self.params[0].new_zeros(self.n_replicas)
        for p in self.params:
            if p.grad is not None:
                total = total + p.grad.detach().reshape(self.n_replicas, -1).pow(2).sum(-1)
        return total.sqrt()

    @torch.no_grad()
    def __call__(self) -> torch.Tensor:
        """Clip the gradients in place; returns the per-replica norms before clipping."""
        norms = self.norms()
        log_n = norms.clamp_min(1e-300).log()
        if self.log_ref is None:
            self.log_ref = log_n.clone()
        log_thr = self.log_ref + self.log_factor
        scale = torch.exp(log_thr - log_n).clamp(max=1.0)
        self.n_clipped += (scale < 1.0).long().cpu()
        for p in self.params:
            if p.grad is not None:
                p.grad.mul_(scale.view(-1, *([1] * (p.dim() - 1))))
        self.log_ref = self.log_ref + self.rate * (torch.minimum(log_n, log_thr) - self.log_ref)
        return norms


def _fit_loop(model, xt, yt, stage_steps, lrs, n_samples, random_state, callback, progress, log_every,
              clip=None) -> list[float]:
    gen = torch.Generator().manual_seed(int(random_state))
    opt = torch.optim.Adam(model.parameters(), lr=lrs[0], foreach=True)
    clipper = None if clip is None else ReplicaGradClipper(list(model.parameters()), model.n_replicas, clip)
    trace: list[float] = []
    total = sum(stage_steps)
    bar = tqdm(total=total, disable=not progress, desc=f"fit {model.scheme}", leave=False)
    step = 0
    try:
        for lr, n in zip(lrs, stage_steps):
            for group in opt.param_groups:
                group["lr"] = lr
            for _ in range(n):
                opt.zero_grad(set_to_none=True)
                elbo, parts = model.elbo(xt, yt, n_samples, gen)
                loss = -elbo.sum()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at step {step} ({model.scheme})")
                loss.backward()
                if clipper is not None:
                    clipper()
                opt.step()
                step += 1
                bar.update(1)
                if step % log_every == 0 or step == total:
                    value = float(loss.detach()) / elbo.shape[0]
                    trace.append(value)
                    bar.set_postfix(loss=f"{value:.2f}")
                    if callback is not None and callback(step, value, {"lr": lr, **{k: float(v.mean()) for k, v in parts.items()}}):
                        return trace
    finally:
        bar.close()
    return trace


class DeepGPRegressor:
    """scikit-learn style DGP regressor: ``fit(x, y)``, ``predict``, ``sample_functions``.

    Fitted attributes: ``model_`` (the :class:`DeepGP`, one replica), ``loss_trace_``,
    ``elbo_`` and ``elbo_sem_`` (a low-variance final ELBO estimate and its MC standard error),
    ``variance_at_zero_`` (``Var[f_ℓ(0)]`` per layer).
    """

    def __init__(self, scheme: str = "dsvi", kernels: Sequence[str] = ("se", "periodic"), n_inducing: int = 10,
                 n_samples: int = 10, steps: int | Sequence[int] = 3000, lrs: Sequence[float] = (1e-3, 1e-4, 1e-5),
                 noise_std: float = 0.01, eval_samples: int = 1000, random_state: int = 0, device=None,
                 progress: bool = False) -> None:
        self.scheme = scheme
        self.kernels = tuple(kernels)
        self.n_inducing = n_inducing
        self.n_samples = n_samples
        self.steps = steps
        self.lrs = tuple(lrs)
        self.noise_std = noise_std
        self.eval_samples = eval_samples
        self.random_state = random_state
        self.device = device
        self.progress = progress

    def fit(self, x, y, callback: Callback | None = None) -> DeepGPRegressor:
        xt, yt = check_data(x, y, self.n_inducing)
        lo, hi = float(xt.min()), float(xt.max())
        if not math.isfinite(hi - lo) or hi <= lo:
            raise ValueError("x must span a non-empty interval")
        self.model_ = make_model(self.scheme, self.kernels, self.n_inducing, self.noise_std, (lo, hi),
                                 self.random_state, self.device)
        self.loss_trace_ = fit_dgp(self.model_, xt, yt, self.steps, self.lrs, self.n_samples, self.random_state,
                                   callback, self.progress)
        gen = torch.Generator().manual_seed(int(self.random_state) + 1)
        with single_thread():
            ev = self.model_.evaluate_elbo(xt, yt, self.eval_samples, generator=gen)
            self.variance_at_zero_ = [float(v) for v in self.model_.variance_at(0.0, 2000, gen)[0]]
        self.elbo_ = float(ev["elbo"][0])
        self.elbo_sem_ = float(ev["elbo_sem"][0])
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ValueError("this DeepGPRegressor is not fitted yet; call fit(x, y) first")

    def predict(self, x, n_samples: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_fitted()
        gen = torch.Generator().manual_seed(int(self.random_state) + 2)
        mean, var = self.model_.predict(x, n_samples, gen)
        return mean[0], var[0]

    def sample_functions(self, grid, n_samples: int = 25) -> dict[str, list[torch.Tensor]]:
        self._check_fitted()
        gen = torch.Generator().manual_seed(int(self.random_state) + 3)
        out = self.model_.sample_functions(grid, n_samples, gen)
        return {k: [t[0] for t in v] for k, v in out.items()}
