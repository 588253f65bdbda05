"""DGP layers and the machinery shared by the three inference schemes.

A :class:`GPLayer` is one ``f_ℓ ~ GP(μ_ℓ, k_ℓ)`` of the composition ``f_L ∘ … ∘ f_1``
(paper eq. (1)): a kernel, a mean function (identity for inner layers, zero for the last,
as in the original work) and, for inducing-point schemes, learnable inducing locations
``z_{ℓ-1}``. :class:`DeepGP` holds the layers, the Gaussian likelihood ``p(y | f_L)`` and the
sampling code every scheme uses: propagation of samples through the layers given inducing
values (eq. (3)), whole-function samples on a grid (for figures) and the ELBO (eq. (5)).

Shapes. A model holds ``T`` independent *replicas* (``n_replicas``; 1 for a single model),
trained side by side so that e.g. the 10 trials of Table 1 cost one batched optimisation.
Every parameter has a leading ``T`` dimension, samples are ``(T, S, N)`` and the ELBO is a
``(T,)`` tensor; replicas share the data but never interact (their losses are summed and
Adam's update is element-wise, so each replica follows its own optimisation path).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from reprlab.dgp.conditionals import (
    DEFAULT_JITTER,
    conditional,
    identity_mean,
    stable_cholesky,
    zero_mean,
)
from reprlab.dgp.kernels import Kernel, make_kernel

__all__ = ["DeepGP", "GPLayer", "as_tensor_1d", "check_data", "randn", "tril_param"]


def as_tensor_1d(values, name: str, dtype=torch.float64, device=None) -> torch.Tensor:
    """Validate 1-D finite numeric data and return it as a float64 tensor of shape (n,)."""
    try:
        t = torch.as_tensor(values, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be numeric 1-D data, got {type(values).__name__}: {err}") from None
    if t.dim() == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (n,) or (n, 1), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf)")
    return t


def check_data(x, y, n_inducing: int | None = None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a regression data set ``(x, y)`` for a DGP with ``n_inducing`` inducing points."""
    xt = as_tensor_1d(x, "x", device=device)
    yt = as_tensor_1d(y, "y", device=device)
    if xt.shape != yt.shape:
        raise ValueError(f"x and y must have the same length, got {xt.shape[0]} and {yt.shape[0]}")
    if n_inducing is not None and xt.shape[0] < n_inducing:
        raise ValueError(
            f"too few data points for {n_inducing} inducing points: got {xt.shape[0]}, "
            f"need at least {n_inducing}"
        )
    return xt, yt


def randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of ``shape`` with ``like``'s dtype/device from ``generator``.

    The generator lives on the CPU so results are identical across devices for a seed.
    """
    eps = torch.randn(shape, generator=generator, dtype=like.dtype)
    return eps.to(like.device)


def tril_param(n_replicas: int, n: int, scale: float) -> nn.Parameter:
    """A free ``(T, n, n)`` parameter whose lower triangle is a Cholesky factor, init ``scale·I``."""
    return nn.Parameter(scale * torch.eye(n, dtype=torch.float64).repeat(int(n_replicas), 1, 1))


class GPLayer(nn.Module):
    """One DGP layer: kernel ``k_ℓ``, mean ``μ_ℓ`` ('identity' or 'zero'), optional locations ``z`` (T, M)."""

    def __init__(self, kernel: Kernel | str, mean: str = "identity", z_init=None, index: int = 0,
                 n_replicas: int = 1) -> None:
        super().__init__()
        self.kernel = make_kernel(kernel, n_replicas=n_replicas)
        if self.kernel.log_variance.shape[0] != int(n_replicas):
            raise ValueError(f"kernel has {self.kernel.log_variance.shape[0]} replicas, layer expects {n_replicas}")
        if mean not in ("identity", "zero"):
            raise ValueError(f"mean must be 'identity' or 'zero', got {mean!r}")
        self.mean = mean
        self.index = int(index)
        self.n_replicas = int(n_replicas)
        if z_init is not None:
            self.z = nn.Parameter(as_tensor_1d(z_init, "z_init").clone().repeat(self.n_replicas, 1))
        else:
            self.z = None

    @property
    def mean_fn(self):
        return identity_mean if self.mean == "identity" else zero_mean

    @property
    def name(self) -> str:
        return f"layer {self.index + 1} ({type(self.kernel).__name__})"

    def prior_scale_tril(self, z: torch.Tensor, jitter: float) -> torch.Tensor:
        """Cholesky factor of ``K(z, z)`` (prior covariance of inducing values)."""
        return stable_cholesky(self.kernel(z, z), jitter, where=f"{self.name} prior K(z, z)")

    def conditional(self, x, z, u_mean, u_scale_tril=None, full_cov=False, jitter=DEFAULT_JITTER):
        """Eq. (3) (sampled inducing values) or eqs. (7)-(8) (Gaussian ones) at inputs ``x``."""
        return conditional(
            self.kernel, self.mean_fn, z, x, u_mean, u_scale_tril, full_cov, jitter, where=self.name
        )


class DeepGP(nn.Module):
    """Base of the inference schemes: layers, likelihood, sampling and the ELBO.

    Subclasses implement :meth:`draw_inducing` (one joint draw of every layer's inducing
    locations and values per Monte-Carlo sample) and :meth:`kl`, and override
    :meth:`sample_f` where they can do better than nested sampling.
    """

    scheme = "base"
    # How the ELBO draws the inner layers at the data: 'marginal' (each point independently, as
    # the paper's text describes, Salimbeni & Deisenroth's estimator) or 'joint' (jointly over the
    # points with the full conditional covariance, as the original code does). Both are unbiased
    # for the same ELBO (f_ℓ(x_n) depends on f_{ℓ-1} only through f_{ℓ-1}(x_n)); only the noise of
    # the gradient differs. The last layer is always drawn marginally (only its marginals enter
    # the likelihood).
    draws = "marginal"
    DRAWS = ("marginal", "joint")

    def __init__(self, layers: Sequence[GPLayer], noise_std: float = 0.01, jitter: float = DEFAULT_JITTER) -> None:
        super().__init__()
        if len(layers) < 1:
            raise ValueError("a DGP needs at least one layer")
        noise_std = float(noise_std)
        if not math.isfinite(noise_std) or noise_std <= 0:
            raise ValueError(f"noise_std must be positive and finite, got {noise_std!r}")
        reps = {layer.n_replicas for layer in layers}
        if len(reps) != 1:
            raise ValueError(f"all layers must have the same number of replicas, got {sorted(reps)}")
        self.layers = nn.ModuleList(layers)
        self.n_replicas = reps.pop()
        self.noise_std = noise_std
        self.jitter = float(jitter)

    # --- to implement -------------------------------------------------------------------
    def draw_inducing(self, n_samples: int, generator=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer ``(z, u)``: locations (T, 1|S, M) and sampled values (T, S, M)."""
        raise NotImplementedError

    def kl(self, generator=None, n_samples: int = 1) -> torch.Tensor:
        """The KL term(s) of the ELBO, per replica: shape (T,)."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def ref(self) -> torch.Tensor:
        return next(self.parameters())

    def _inputs(self, x) -> torch.Tensor:
        return as_tensor_1d(x, "x", device=self.ref.device)

    def _expand(self, x: torch.Tensor, n_samples: int) -> torch.Tensor:
        return x.expand(self.n_replicas, int(n_samples), -1)

    def set_draws(self, draws: str) -> DeepGP:
        """Choose how the ELBO draws the inner layers: 'marginal' or 'joint' (see :attr:`draws`)."""
        if draws not in self.DRAWS:
            raise ValueError(f"draws must be one of {self.DRAWS}, got {draws!r}")
        self.draws = draws
        return self

    def sample_f(self, x: torch.Tensor, n_samples: int, generator=None, full_cov: bool = False) -> torch.Tensor:
        """Samples of the last layer ``f_L`` at inputs ``x`` (N,): shape (T, S, N).

        Default: nested sampling — draw inducing values, then each layer given them (eq. (3)),
        marginally per point, or (``full_cov``) the inner layers jointly over the points.
        """
        return self._propagate(x, self.draw_inducing(n_samples, generator), generator, full_cov)

    def _propagate(self, x: torch.Tensor, inducing, generator=None, full_cov: bool = False) -> torch.Tensor:
        """Each layer from its GP conditional given its inducing pair (eq. (3)); the inner layers
        jointly over the points if ``full_cov``, the last one always marginally."""
        f = self._expand(x, inducing[0][1].shape[1])
        last = self.n_layers - 1
        for i, (layer, (z, u)) in enumerate(zip(self.layers, inducing)):
            joint = full_cov and i < last
            f = self._draw(layer.conditional(f, z, u, None, joint, self.jitter), generator, joint, layer)
        return f

    def _draw(self, moments, generator, full_cov: bool, layer: GPLayer) -> torch.Tensor:
        """One draw of a layer from its Gaussian conditional, with ``jitter`` white noise added.

        Every draw is from ``N(μ, Σ + jitter·I)``: the full-covariance draw needs the jitter for its
        Cholesky factor, and the marginal draw adds the same variance so that both give the same
        marginals. This is also what the original code samples (``chol(Σ + 1e-6·I)`` in every
        layer) and it matters: without it a layer's conditional variance can shrink to ~0 at the
        data, the gradient stops penalising steep later layers (whose cost then only shows in rare
        draws) and Adam at a constant 1e-3 drifts to large kernel variances and much lower ELBOs.
        """
        mean, second = moments
        eps = randn(mean.shape, mean, generator)
        if full_cov:
            chol = stable_cholesky(second, self.jitter, where=f"{layer.name} predictive covariance")
            return mean + (chol @ eps.unsqueeze(-1)).squeeze(-1)
        return mean + (second + self.jitter).sqrt() * eps

    def expected_log_lik(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Monte-Carlo ``E_q[log p(y | f_L)]`` from samples ``f`` (T, S, N): Gaussian likelihood."""
        r = (y - f) / self.noise_std
        ll = -0.5 * r * r - math.log(self.noise_std) - 0.5 * math.log(2 * math.pi)
        return ll.sum(-1).mean(-1)

    def elbo(self, x, y, n_samples: int = 10, generator=None) -> tuple[torch.Tensor, dict]:
        """Doubly stochastic ELBO (eq. (5)), per replica: ``(elbo (T,), {'ell', 'kl'})``."""
        xt, yt = check_data(x, y, device=self.ref.device)
        n_samples = int(n_samples)
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        f = self.sample_f(xt, n_samples, generator, full_cov=self.draws == "joint")
        ell = self.expected_log_lik(f, yt)
        kl = self.kl(generator=generator, n_samples=n_samples)
        return ell - kl, {"ell": ell.detach(), "kl": kl.detach()}

    def forward(self, x, y, n_samples: int = 10, generator=None) -> tuple[torch.Tensor, dict]:
        """Same as :meth:`elbo` (so ``torch.func.functional_call`` can evaluate the ELBO)."""
        return self.elbo(x, y, n_samples, generator)

    @torch.no_grad()
    def evaluate_elbo(self, x, y, n_samples: int = 1000, batch: int = 100, generator=None) -> dict[str, torch.Tensor]:
        """Low-variance ELBO per replica: mean and MC standard error over ``n_samples`` draws."""
        values, ells, kls = [], [], []
        for _ in range(max(1, math.ceil(n_samples / batch))):
            e, parts = self.elbo(x, y, batch, generator)
            values.append(e)
            ells.append(parts["ell"])
            kls.append(parts["kl"])
        v = torch.stack(values)
        sem = v.std(0) / math.sqrt(v.shape[0]) if v.shape[0] > 1 else torch.full_like(v[0], float("nan"))
        return {"elbo": v.mean(0), "elbo_sem": sem, "ell": torch.stack(ells).mean(0), "kl": torch.stack(kls).mean(0)}

    @torch.no_grad()
    def sample_functions(self, grid, n_samples: int = 25, generator=None) -> dict[str, list[torch.Tensor]]:
        """Coherent whole-function samples for figures (paper Fig. 5).

        For each draw, every layer is sampled jointly (full covariance) at the grid and at the
        previous layer's outputs, given one draw of all inducing values. Returns
        ``{'layers': [f_ℓ(grid)], 'hidden': [(f_ℓ ∘ … ∘ f_1)(grid)]}``, each (T, S, G).
        """
        g = self._inputs(grid)
        n = g.shape[0]
        inducing = self.draw_inducing(int(n_samples), generator)
        grid_s = self._expand(g, n_samples)
        prev = grid_s
        layers_out, hidden = [], []
        for index, (layer, (z, u)) in enumerate(zip(self.layers, inducing)):
            inputs = prev if index == 0 else torch.cat([grid_s, prev], dim=-1)
            out = self._draw(layer.conditional(inputs, z, u, None, True, self.jitter), generator, True, layer)
            layers_out.append(out[..., :n])
            hidden.append(out if index == 0 else out[..., n:])
            prev = hidden[-1]
        return {"layers": layers_out, "hidden": hidden}

    @torch.no_grad()
    def variance_at(self, x0: float = 0.0, n_samples: int = 2000, generator=None) -> torch.Tensor:
        """``Var[f_ℓ(x0)]`` of each layer's function at input ``x0`` (Table 1): shape (T, L)."""
        out = self.sample_functions([float(x0)], n_samples, generator)
        return torch.stack([f[..., 0].var(-1) for f in out["layers"]], dim=-1)

    @torch.no_grad()
    def predict(self, x, n_samples: int = 100, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictive mean and variance of ``f_L`` at ``x``: each (T, N), from propagated samples."""
        f = self.sample_f(self._inputs(x), int(n_samples), generator)
        return f.mean(-2), f.var(-2)
