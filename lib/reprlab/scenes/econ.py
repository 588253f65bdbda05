"""ECON: ensemble of competing object networks (von Kügelgen, Ustyuzhaninov et al. 2020).

Inference runs t = T → 1 (front to back, §5). At every step all K experts attend to the
unexplained scope, encode and reconstruct; the class-conditional ELBO terms
(10) L_x, (11) L_z and (12) L_r are computed for every expert, and a winner is drawn with
P(k) ∝ exp(−(λ L_x(k) + L_r(k)) / (N τ)) (§5.2). The paper writes N = 1, but its terms are
sums over pixels (10^2–10^4 nats here), which makes that softmax a hard arg-min from the first
step; by default N = H·W (``competition_norm='pixels'``: the score in nats per pixel), which
keeps the competition stochastic while experts are still similar and decisive once they
differ — the regime the paper describes. Only the winner's terms enter the objective
(13) L_x + β L_z + γ L_r, so only winners receive gradients (``expected_loss`` in
:meth:`ECON.decompose` weights all experts' terms by their win probabilities instead).
The scope is then updated with the winner's attention (eq. 14) and the last step takes
the whole remaining scope (footnote 7). Objective (13) as derived in appendix A.1 keeps the
region KL (12) at that step too, which trains the last winner's shape decoder towards the
whole remaining scope. ``last_step_region_kl=False`` instead reads the last layer as the
background of footnote 2 (m_1 = 1): eq. (7) then gives p(r_1) = Bern(s_1) = q(r_1), so the
term is zero and the last winner's shape decoder is left alone (measured in
``data/scenes/README.md``; not the default). ``background_expert=j`` reads footnote 5 (K − 1
object classes and background) with footnote 2 literally: expert j is the background class,
so it takes the last inference step (layer t = 1) and the earlier steps compete among the
other K − 1 experts (measured: it did not change the class order; not the default, which
lets every expert compete at every step). The region KL (12) uses the scope-multiplied
generated shape s_t ⊙ m̃ (eq. 7), so decoders may inpaint full, occluded shapes.

Regions are parametrised as r̃_t = s_t ⊙ α_t with α_t = a_k(x, s_t) ∈ [0, 1], so the scope
update s_{t−1} = s_t ⊙ (1 − α_t) = s_t − r̃_t equals eq. (14) for binary scopes and makes
the regions of all steps sum to one for soft ones (as in MONET).

With ``n_experts = 1`` this is the generative extension of MONET of §5.1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from reprlab.scenes.expert import ExpertEnsemble
from reprlab.scenes.layers import paint_layers

LOG_EPS = -1e-6  # upper clamp of log-probabilities before log(1 - p)
# How the competition objective λ L_x + L_r (sums over pixels) is scaled before the softmax:
# 'sum' as written in §5.2; 'pixels' per pixel of the image (÷ H·W); 'region' per attended
# pixel (÷ Σ r̃, so the score is how well the expert explains the region it chose).
COMPETITION_NORMS: tuple[str, ...] = ("sum", "pixels", "region")


@dataclass
class ECONConfig:
    """Model hyperparameters (names follow the paper; sizes per scale live in train.py)."""

    image_size: int = 64
    n_experts: int = 4
    n_steps: int = 4
    latent_dim: int = 5
    vae_layers: int = 3
    vae_channels: int = 32
    attention_channels: tuple[int, ...] = (32, 64, 64, 64)
    attention_mlp: int = 128
    beta: float = 1.0
    gamma: float = 3.26
    lam: float = 1.0
    temperature: float = 1.0
    sigma_x: float = 0.1
    competition_norm: str = "pixels"
    last_step_region_kl: bool = True
    background_expert: int | None = None

    def __post_init__(self) -> None:
        self.attention_channels = tuple(int(c) for c in self.attention_channels)
        for name in ("image_size", "n_experts", "n_steps", "latent_dim", "vae_layers", "vae_channels", "attention_mlp"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ECONConfig.{name} must be a positive int, got {value!r}")
        for name in ("beta", "gamma", "temperature", "sigma_x"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"ECONConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.lam < 0:
            raise ValueError(f"ECONConfig.lam must be >= 0, got {self.lam!r}")
        if not isinstance(self.last_step_region_kl, bool):
            raise ValueError(f"ECONConfig.last_step_region_kl must be True or False, got {self.last_step_region_kl!r}")
        bg = self.background_expert
        if bg is not None and (isinstance(bg, bool) or not isinstance(bg, int) or not 0 <= bg < self.n_experts):
            raise ValueError(f"ECONConfig.background_expert must be None or an expert index in 0..{self.n_experts - 1}, got {bg!r}")
        if bg is not None and self.n_experts < 2:
            raise ValueError("ECONConfig.background_expert needs at least 2 experts (background + objects)")
        if self.competition_norm not in COMPETITION_NORMS:
            raise ValueError(f"ECONConfig.competition_norm must be one of {COMPETITION_NORMS}, got {self.competition_norm!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["attention_channels"] = list(self.attention_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ECONConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ECONConfig keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**d)


@dataclass
class Decomposition:
    """Result of inference; axis 1 indexes inference steps front → back (step 0 is t = T).

    winners (B, S) · scopes/regions/shapes (B, S, H, W) · appearances (B, S, 3, H, W) ·
    objective/probs (B, S, K) competition objective and win probabilities ·
    loss_x/loss_z/loss_r (B, S) the winner's ELBO terms · latents (B, S, L) ·
    loss (B,) objective (13) to minimise.
    """

    winners: torch.Tensor
    scopes: torch.Tensor
    regions: torch.Tensor
    appearances: torch.Tensor
    shapes: torch.Tensor
    objective: torch.Tensor
    probs: torch.Tensor
    loss_x: torch.Tensor
    loss_z: torch.Tensor
    loss_r: torch.Tensor
    latents: torch.Tensor
    loss: torch.Tensor
    extras: dict = field(default_factory=dict)

    @property
    def reconstruction(self) -> torch.Tensor:
        """Σ_t r̃_t ⊙ μ_t (B, 3, H, W): the image explained by the decomposition (eq. 3)."""
        return (self.regions.unsqueeze(2) * self.appearances).sum(1)

    def segmentation(self) -> torch.Tensor:
        """Hard segmentation (B, H, W): the inference step whose region is largest per pixel."""
        return self.regions.argmax(1)


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(a)) for a ≤ 0, numerically stable (clamped just below 0)."""
    a = a.clamp(max=LOG_EPS)
    return torch.where(a > -0.6931, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) summed over the last axis (eq. 11)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(-1)


def bernoulli_kl(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """Pixel-wise KL(Bern(q) ‖ Bern(p)) from log-probabilities (eq. 12)."""
    q = log_q.exp()
    return q * (log_q - log_p) + (1 - q) * (log1mexp(log_q) - log1mexp(log_p))


def shift_and_scale(eps: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, what: str = "latents") -> torch.Tensor:
    """z = loc + scale ⊙ ε (``scale`` (L,): diagonal) or loc + ε Lᵀ (``scale`` (L, L): Cholesky factor L), ε (n, L)."""
    size = eps.shape[-1]
    loc = loc.reshape(-1)
    if loc.numel() != size or scale.shape not in ((size,), (size, size)):
        raise ValueError(f"{what} must be a loc of length {size} and a scale of shape ({size},) or ({size}, {size}); "
                         f"got {tuple(loc.shape)} and {tuple(scale.shape)}")
    return loc + (scale * eps if scale.ndim == 1 else eps @ scale.T)


class ECON(nn.Module):
    """The ECON model: an :class:`ExpertEnsemble` plus competition, objective and sampling."""

    def __init__(self, config: ECONConfig | None = None, **overrides):
        super().__init__()
        cfg = config if config is not None else ECONConfig()
        if overrides:
            cfg = ECONConfig.from_dict({**cfg.to_dict(), **overrides})
        self.config = cfg
        self.experts = ExpertEnsemble(
            cfg.n_experts, cfg.image_size, cfg.latent_dim, cfg.vae_layers, cfg.vae_channels,
            cfg.attention_channels, cfg.attention_mlp,
        )

    @property
    def n_experts(self) -> int:
        return self.config.n_experts

    def _check_images(self, x: torch.Tensor) -> None:
        s = self.config.image_size
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"expected images of shape (B, 3, {s}, {s}), got {tuple(getattr(x, 'shape', ()))}")
        if not torch.isfinite(x).all():
            raise ValueError("images contain NaN or inf")
        if x.min() < -1e-6 or x.max() > 1 + 1e-6:
            raise ValueError(f"images must lie in [0, 1], found range [{x.min().item():.3g}, {x.max().item():.3g}]")

    def expert_terms(
        self,
        x: torch.Tensor,
        log_scope: torch.Tensor,
        last: bool,
        eps: torch.Tensor | None = None,
        idx: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """ELBO terms (10)–(12) at one step, per image and expert: (B, G) with G = K or 1.

        ``idx=None`` evaluates all experts (batched); a (B,) ``idx`` evaluates only expert
        ``idx[b]`` on image b. ``eps`` (B, G, L) is the reparametrisation noise (None: z = μ).
        """
        n = x.shape[0]
        g = self.config.n_experts if idx is None else 1
        ls = log_scope.unsqueeze(1)  # (B, 1, H, W); one node, so gradients sum in a fixed order
        if last:  # footnote 7: the last step takes the whole remaining scope
            log_alpha = torch.zeros(n, g, *x.shape[2:], device=x.device, dtype=x.dtype)
        else:
            log_alpha = nn.functional.logsigmoid(self.experts.attention(x, ls, idx))
        log_r = ls + log_alpha  # log r̃ = log s + log α
        return dict(log_alpha=log_alpha, **self.vae_terms(x, ls, log_r, last, eps, idx))

    def vae_terms(
        self,
        x: torch.Tensor,
        log_scope: torch.Tensor,
        log_region: torch.Tensor,
        last: bool | torch.Tensor,
        eps: torch.Tensor | None = None,
        idx: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Terms (10)–(12) of the experts' VAEs for log-scopes (B, 1, H, W) and regions log r̃ (B, G, H, W).

        ``last`` (bool, or a (B,) bool tensor per image) marks the last inference step, whose
        region KL follows ``last_step_region_kl``. Used by :meth:`expert_terms` after the
        attention nets, and on its own to refine the VAEs on frozen regions.
        """
        cfg = self.config
        r = log_region.exp()
        mu, logvar = self.experts.encoder(x, r, idx)
        z = mu if eps is None else mu + (0.5 * logvar).exp() * eps
        rgb, mlogit = self.experts.decoder(z, idx)
        loss_x = (r.unsqueeze(2) * (x.unsqueeze(1) - rgb).pow(2)).sum((2, 3, 4)) / (2 * cfg.sigma_x**2)
        loss_z = gaussian_kl(mu, logvar)
        log_p = log_scope + nn.functional.logsigmoid(mlogit)  # eq. (7): p(r) = Bern(s ⊙ m̃)
        loss_r = bernoulli_kl(log_region, log_p).sum((2, 3))
        shape = torch.sigmoid(mlogit)
        if not cfg.last_step_region_kl:  # background layer: m_1 = 1, r_1 = s_1, KL = 0
            bg = torch.as_tensor(last, device=x.device).reshape(-1, 1)  # (B or 1, 1)
            loss_r = torch.where(bg, torch.zeros_like(loss_r), loss_r)
            shape = torch.where(bg[..., None, None], torch.ones_like(shape), shape)
        return dict(regions=r, mu=mu, logvar=logvar, rgb=rgb, shape=shape,
                    loss_x=loss_x, loss_z=loss_z, loss_r=loss_r)

    def objective_13(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_x + β L_z + γ L_r of objective (13), elementwise over the terms' shape."""
        return terms["loss_x"] + self.config.beta * terms["loss_z"] + self.config.gamma * terms["loss_r"]

    def competition_objective(self, terms: dict[str, torch.Tensor], last: bool = False) -> torch.Tensor:
        """λ L_x(k) + L_r(k) of §5.2 per image and expert (B, K), scaled by ``competition_norm``.

        With a ``background_expert``, experts barred from this step (the background before the
        last step, every object expert at it) score +inf, so they never win.
        """
        cfg = self.config
        score = cfg.lam * terms["loss_x"] + terms["loss_r"]
        if cfg.competition_norm == "pixels":
            score = score / terms["regions"][0, 0].numel()
        elif cfg.competition_norm == "region":
            score = score / terms["regions"].sum((2, 3)).clamp(min=1.0)
        if cfg.background_expert is not None:
            is_bg = torch.arange(cfg.n_experts, device=score.device) == cfg.background_expert
            score = score.masked_fill(is_bg != last, float("inf"))
        return score

    def decompose(
        self,
        x: torch.Tensor,
        n_steps: int | None = None,
        stochastic: bool | None = None,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
        forced_winners: torch.Tensor | None = None,
        expected_loss: bool = False,
    ) -> Decomposition:
        """Decompose images (B, 3, H, W) in ``n_steps`` competition steps (default: config).

        ``stochastic`` (default: ``self.training``) samples winners and latents; otherwise
        the winner is the arg-min of the competition objective and z = μ. ``forced_winners``
        (B, S) fixes the expert per step (e.g. to score a given assignment). When autograd
        is on, the competition runs without gradients for all K experts and the winners
        are recomputed (same inputs, same noise) with gradients: only winners are trained.

        ``expected_loss`` (training): the returned ``loss`` is, at every step, the average of
        all K experts' terms (13) weighted by their win probabilities P(k) (held constant)
        instead of the sampled winner's terms alone. Its expectation over the winner draw
        is the same; it is the Rao–Blackwellised estimate, and it trains every expert in
        proportion to its chance of winning. The scope still follows the sampled winner.
        """
        self._check_images(x)
        cfg = self.config
        steps = cfg.n_steps if n_steps is None else int(n_steps)
        if steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        stochastic = self.training if stochastic is None else bool(stochastic)
        tau = cfg.temperature if temperature is None else float(temperature)
        if tau <= 0:
            raise ValueError(f"temperature must be > 0, got {tau}")
        if expected_loss and forced_winners is not None:
            raise ValueError("expected_loss averages over the competition; it cannot be used with forced_winners")
        if forced_winners is not None and tuple(forced_winners.shape) != (x.shape[0], steps):
            raise ValueError(f"forced_winners must have shape {(x.shape[0], steps)}, got {tuple(forced_winners.shape)}")
        n, k = x.shape[0], cfg.n_experts
        grad = torch.is_grad_enabled()
        expected = expected_loss and grad
        log_s = torch.zeros(n, *x.shape[2:], device=x.device, dtype=x.dtype)
        rows = torch.arange(n, device=x.device)
        out: dict[str, list[torch.Tensor]] = {key: [] for key in (
            "winners", "scopes", "regions", "appearances", "shapes", "objective", "probs",
            "loss_x", "loss_z", "loss_r", "latents")}
        if expected:
            out["expected"] = []
        for step in range(steps):
            last = step == steps - 1
            eps = None
            if stochastic:
                gdev = generator.device if generator is not None else x.device
                eps = torch.randn(n, k, cfg.latent_dim, generator=generator, device=gdev).to(x.device, x.dtype)
            with torch.set_grad_enabled(expected):  # competition: all experts, one batched pass
                terms = self.expert_terms(x, log_s, last, eps)
            with torch.no_grad():
                objective = self.competition_objective({key: v.detach() for key, v in terms.items()}, last)
                probs = torch.softmax(-objective / tau, dim=1)
            if expected:
                out["expected"].append((probs * self.objective_13(terms)).sum(1))
            if forced_winners is not None:
                win = forced_winners[:, step].to(x.device).long()
                if win.min() < 0 or win.max() >= k:
                    raise ValueError(f"forced_winners must lie in 0..{k - 1}")
            elif stochastic:
                src = probs.cpu() if generator is not None else probs
                win = torch.multinomial(src, 1, generator=generator)[:, 0].to(x.device)
            else:
                win = objective.argmin(1)
            if grad and not expected:  # recompute the winners only, with gradients
                w_eps = None if eps is None else eps[rows, win].unsqueeze(1)
                sel = {key: v[:, 0] for key, v in self.expert_terms(x, log_s, last, w_eps, idx=win).items()}
            else:
                sel = {key: v[rows, win] for key, v in terms.items()}
            out["winners"].append(win)
            out["scopes"].append(log_s.exp())
            out["regions"].append(sel["regions"])
            out["appearances"].append(sel["rgb"])
            out["shapes"].append(sel["shape"])
            out["objective"].append(objective)
            out["probs"].append(probs)
            for key in ("loss_x", "loss_z", "loss_r"):
                out[key].append(sel[key])
            out["latents"].append(sel["mu"])
            if not last:  # eq. (14): s_{t-1} = s_t ⊙ (1 − α_t) with the winner's attention
                log_s = log_s + log1mexp(sel["log_alpha"])
        stacked = {key: torch.stack(v, dim=1) for key, v in out.items()}
        if expected:
            loss = stacked.pop("expected").sum(1)
        else:
            loss = self.objective_13(stacked).sum(1)
        return Decomposition(**stacked, loss=loss)

    def forward(self, x: torch.Tensor, **kwargs) -> Decomposition:
        return self.decompose(x, **kwargs)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample_experts(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw z ~ N(0, I) for every expert: rgb (n, K, 3, H, W) and shapes m̃ (n, K, H, W)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        dev = next(self.parameters()).device
        z = torch.randn(n, self.n_experts, self.config.latent_dim, generator=generator,
                        device=generator.device if generator is not None else dev).to(dev)
        rgb, logit = self.experts.decoder(z)
        return rgb, torch.sigmoid(logit)

    @torch.no_grad()
    def generate(
        self,
        experts: Sequence[int] | torch.Tensor,
        n: int = 1,
        generator: torch.Generator | None = None,
        hard: bool = False,
        latents: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Layered generation (§2, Figs. 1C, 7): paint samples of ``experts`` back to front.

        ``experts`` lists the expert per layer, background first (its shape is taken to be
        all ones). Layer t decodes z = loc_t + scale_t ⊙ ε, ε ~ N(0, I); by default
        (``latents=None``) loc = 0, scale = 1, i.e. the model's prior p(z) = N(0, I).
        ``latents`` (one (loc, scale) pair per layer: loc (L,), scale (L,) standard deviations
        or an (L, L) lower Cholesky factor) draws z from another Gaussian instead, e.g. one
        fitted to an expert's posteriors (``generate.fit_role_latents``).
        Returns image (n, 3, H, W), layers (n, T, 3, H, W), shapes (n, T, H, W).
        ``hard`` binarises generated shapes at 0.5.
        """
        ks = torch.as_tensor(list(experts) if not isinstance(experts, torch.Tensor) else experts).long()
        if ks.ndim != 1 or len(ks) < 1:
            raise ValueError("experts must be a non-empty sequence of expert indices")
        if ks.min() < 0 or ks.max() >= self.n_experts:
            raise ValueError(f"expert indices must lie in 0..{self.n_experts - 1}, got {ks.tolist()}")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        latent = self.config.latent_dim
        if latents is not None and len(latents) != len(ks):
            raise ValueError(f"latents must hold one (loc, scale) pair per layer ({len(ks)}), got {len(latents)}")
        dev = next(self.parameters()).device
        layers, shapes = [], []
        for t, k in enumerate(ks.tolist()):
            eps = torch.randn(n, latent, generator=generator,
                              device=generator.device if generator is not None else dev).to(dev)
            z = eps
            if latents is not None:
                loc, scale = (torch.as_tensor(v, dtype=eps.dtype).to(dev) for v in latents[t])
                z = shift_and_scale(eps, loc, scale, what=f"latents[{t}]")
            rgb, logit = self.experts.decoder(z.unsqueeze(1), torch.full((n,), k, device=dev, dtype=torch.long))
            shp = torch.sigmoid(logit[:, 0])
            m = torch.ones_like(shp) if t == 0 else shp
            layers.append(rgb[:, 0])
            shapes.append((m > 0.5).to(m.dtype) if hard else m)
        layers_t = torch.stack(layers, 1)
        shapes_t = torch.stack(shapes, 1)
        return dict(image=paint_layers(layers_t, shapes_t), layers=layers_t, shapes=shapes_t)
