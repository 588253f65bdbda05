"""Refining the experts' VAEs on frozen decompositions (an M-step of objective (13)).

Training (C.3) updates an expert's encoder and decoder only on the steps it wins, while the
competition is still moving; after 3,000 iterations the decoded shapes m̃ are soft blobs
(measured in ``data/scenes/README.md``), which is what layered generation draws. Here the
trained model's inference is frozen: training-distribution scenes are decomposed once
(deterministic winners and attention regions r̃_t, scopes s_t), and only the VAEs — encoder
q_φ(z | x, r, k) and decoder (μ_θ, m̃_θ) of each step's winner — are optimised on objective
(13), L_x + β L_z + γ L_r, with those regions held fixed. For fixed q_ψ(r) and fixed winners
this is ordinary coordinate ascent on the same ELBO; by default the attention nets are not touched.

Two options act on the class order a trained model explains scenes in. ``background_last``
moves the background expert's steps behind the others (footnote 2: the last layer is the
background), so an object that the model left to the last step is learnt with a scope that
also holds the background, and its decoder learns where it ends. ``attention`` fits the
attention nets to the re-ordered regions, so that inference takes the new order too.
Neither is in the paper: its models were trained far longer (5 learning-rate decays at batch 32).
``beta`` sets the KL weight β of (13) for the refinement and the saved model: C.4's best model on
uniquely coloured scenes has β = 9.54, which pulls each expert's posteriors onto the prior
N(0, I) that layered generation samples from; ``lr`` allows C.3's decayed learning rates.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from reprlab.scenes.econ import ECON
from reprlab.scenes.sprites import make_scenes


@dataclass
class FrozenSteps:
    """One row per (scene, inference step): scene index, log-scope, log-region, winner, last flag."""

    images: torch.Tensor  # (S, 3, H, W), each scene once
    scene: torch.Tensor  # (N,) row -> index into images
    log_scopes: torch.Tensor  # (N, H, W)
    log_regions: torch.Tensor  # (N, H, W)
    winners: torch.Tensor  # (N,)
    last: torch.Tensor  # (N,) bool

    def __len__(self) -> int:
        return len(self.winners)


@torch.no_grad()
def decompose_scenes(
    model: ECON, images: torch.Tensor, batch_size: int = 200,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic decompositions of ``images`` (B, 3, H, W): scopes, regions (B, S, H, W), winners (B, S)."""
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"expected a non-empty batch of images (B, 3, H, W), got shape {tuple(images.shape)}")
    dev = next(model.parameters()).device
    parts = [model.decompose(images[start:start + batch_size].to(dev), stochastic=False)
             for start in range(0, images.shape[0], batch_size)]
    return tuple(torch.cat([getattr(d, k) for d in parts]) for k in ("scopes", "regions", "winners"))


def frozen_rows(
    images: torch.Tensor, scopes: torch.Tensor, regions: torch.Tensor, winners: torch.Tensor, batch_size: int = 200,
) -> FrozenSteps:
    """One row per (scene, step) of decompositions (B, S, ...), ordered by scene batch, then step, then scene.

    That row order is the one refinement has always sampled from, so seeded runs repeat.
    """
    n, steps = winners.shape
    dev = winners.device
    scene = torch.arange(n, device=dev)[:, None].expand(n, steps)
    step = torch.arange(steps, device=dev)[None].expand(n, steps)
    order = (((scene // batch_size) * steps + step) * n + scene).flatten().argsort()
    return FrozenSteps(images=images.to(dev), scene=scene.flatten()[order],
                       log_scopes=scopes.clamp(min=1e-30).log().flatten(0, 1)[order],
                       log_regions=regions.clamp(min=1e-30).log().flatten(0, 1)[order],
                       winners=winners.flatten()[order], last=(step == steps - 1).flatten()[order])


def freeze_decompositions(
    model: ECON, images: torch.Tensor, batch_size: int = 200, background_last: int | None = None,
) -> FrozenSteps:
    """Decompose ``images`` (B, 3, H, W) deterministically and keep every step's inputs to the VAE.

    ``background_last`` (an expert index): each scene's steps won by that expert are moved
    behind the others (:func:`move_background_last`) before they are kept.
    """
    scopes, regions, winners = decompose_scenes(model, images, batch_size)
    if background_last is not None:
        scopes, regions, winners = move_background_last(regions, winners, background_last)
    return frozen_rows(images, scopes, regions, winners, batch_size)


def move_background_last(
    regions: torch.Tensor, winners: torch.Tensor, background: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Re-order a decomposition so that ``background``'s steps come last; returns scopes, regions, winners.

    Footnote 2 makes layer 1, the last inference step, the background. A
    trained model may instead explain the background before an object, cut around it, and
    leave the object to the last step, where the region KL (12) is masked by a scope that is
    the object itself: that expert's decoder never learns where the object ends. The same
    regions (B, S, H, W), which partition the image, are also a decomposition with the
    background's steps moved behind the others (stable order otherwise): scopes follow
    eq. (1)/(14) as s_t = 1 − Σ_{j<t} r_j, and the last region is the remaining scope.
    """
    if regions.ndim != 4 or winners.shape != regions.shape[:2]:
        raise ValueError(f"expected regions (B, S, H, W) and winners (B, S), got {tuple(regions.shape)} and {tuple(winners.shape)}")
    order = torch.argsort((winners == background).to(torch.int8), dim=1, stable=True)
    winners = winners.gather(1, order)
    regions = regions.gather(1, order[:, :, None, None].expand_as(regions)).clone()
    before = regions.cumsum(1) - regions  # Σ_{j<t} r_j
    scopes = (1.0 - before).clamp(min=0.0, max=1.0)
    regions[:, -1] = scopes[:, -1]
    return scopes, regions, winners


def dominant_expert(regions: torch.Tensor, winners: torch.Tensor) -> int:
    """The expert whose won regions (B, S, H, W) cover the most image area: the background, found without labels."""
    area = regions.sum((2, 3)).flatten()
    per_expert = torch.zeros(int(winners.max()) + 1, dtype=area.dtype, device=area.device)
    return int(per_expert.index_add_(0, winners.flatten(), area).argmax())


def vae_objective(model: ECON, data: FrozenSteps, index: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Objective (13) of the winners' VAEs on the frozen steps ``index`` (one value per row)."""
    x, win = data.images[data.scene[index]], data.winners[index]
    eps = None
    if generator is not None:
        eps = torch.randn(len(index), 1, model.config.latent_dim, generator=generator,
                          device=generator.device).to(x.device, x.dtype)
    terms = model.vae_terms(x, data.log_scopes[index].unsqueeze(1), data.log_regions[index].unsqueeze(1),
                            data.last[index], eps=eps, idx=win)
    return model.objective_13({k: v[:, 0] for k, v in terms.items() if k.startswith("loss_")})


def attention_distillation(model: ECON, data: FrozenSteps, index: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (nats, one value per row) of the winner's attention α against the frozen r̃ / s.

    Pixels are weighted by the scope; last steps (α = 1 by footnote 7) give 0. Used with
    re-ordered decompositions, it teaches each attention net the step it now takes. Training
    α on objective (13) with frozen scopes instead would be degenerate: attending to nothing
    costs nothing when the leftover pixels are no later step's concern.
    """
    x, win = data.images[data.scene[index]], data.winners[index]
    log_scope = data.log_scopes[index]
    logits = model.experts.attention(x, log_scope.unsqueeze(1), win)[:, 0]
    target = (data.log_regions[index] - log_scope).exp().clamp(0.0, 1.0)
    ce = nn.functional.binary_cross_entropy_with_logits(logits, target, weight=log_scope.exp(), reduction="none")
    return torch.where(data.last[index], torch.zeros_like(ce[:, 0, 0]), ce.sum((1, 2)))


def refine_vaes(
    model: ECON,
    colour_mode: str,
    steps: int,
    n_scenes: int = 4000,
    batch_size: int = 64,
    lr: float = 5e-4,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, float], bool | None] | None = None,
    background_last: bool = False,
    attention: bool = False,
    beta: float | None = None,
) -> dict:
    """Optimise the experts' encoders and decoders on frozen decompositions of new scenes.

    ``n_scenes`` training-distribution scenes (one object of each class) are decomposed
    once; then ``steps`` Adam steps on random batches of their steps. The attention nets
    keep their weights unless ``attention``. Returns the objective on all frozen steps before and after (z = μ)
    and the training curve. ``callback(step, loss)`` returning True stops early.
    ``background_last``: the expert covering the most area (:func:`dominant_expert`) is taken
    as the background and its steps are moved last in every scene (:func:`move_background_last`).
    ``attention``: the winners' attention nets are also fitted to the frozen regions
    (:func:`attention_distillation`); with ``background_last`` they learn the re-ordered steps.
    ``beta``: the KL weight β of objective (13) from now on (stored in the model's config, so
    the objective before and after are both reported at the new β). A larger β pulls the
    posteriors towards the prior N(0, I) that layered generation samples from; C.4's best
    model on uniquely coloured scenes has β = 9.54.
    """
    if steps < 0 or n_scenes < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need steps >= 0, n_scenes >= 1, batch_size >= 1, lr > 0; got {steps}, {n_scenes}, {batch_size}, {lr}")
    if beta is not None:  # a new config, so that ECONConfig validates the value
        model.config = dataclasses.replace(model.config, beta=float(beta))
    size = model.config.image_size
    scenes = make_scenes(n_scenes, size, colour_mode, random_state=np.random.default_rng([seed, 31]), classes="one_each")
    model.eval()
    images = torch.from_numpy(scenes.images)
    scopes, regions, winners = decompose_scenes(model, images)
    reorder = {}
    if background_last:
        background = dominant_expert(regions, winners)
        reorder = dict(background_expert=background, scenes_reordered=float((winners[:, -1] != background).float().mean()))
        scopes, regions, winners = move_background_last(regions, winners, background)
    data = frozen_rows(images, scopes, regions, winners)
    params = [*model.experts.encoder.parameters(), *model.experts.decoder.parameters()]
    if attention:
        params += list(model.experts.attention.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    everything = torch.arange(len(data), device=data.winners.device)

    def mean_objective() -> float:
        with torch.no_grad():
            return float(torch.cat([vae_objective(model, data, chunk) for chunk in everything.split(1000)]).mean())

    before = mean_objective()
    curve = []
    stopped = False
    with tqdm(total=steps, disable=not progress, desc="refine VAEs") as bar:
        for step in range(steps):
            pick = torch.randint(len(data), (batch_size,), generator=gen).to(everything.device)
            loss = vae_objective(model, data, pick, generator=gen).mean()
            if attention:
                loss = loss + attention_distillation(model, data, pick).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            curve.append(float(loss.item()))
            bar.update(1)
            if callback is not None and callback(step + 1, curve[-1]):
                stopped = True
                break
    return dict(objective_before=before, objective_after=mean_objective(), steps=len(curve), stopped=stopped,
                n_scenes=n_scenes, n_rows=len(data), attention=attention, beta=model.config.beta, lr=lr, **reorder, wins=torch.bincount(data.winners.cpu(), minlength=model.n_experts).tolist(),
                curve_every_100=[float(np.mean(curve[i:i + 100])) for i in range(0, len(curve), 100)])


def refine_model_file(
    source: str | os.PathLike, out: str | os.PathLike, steps: int, n_scenes: int = 4000, seed: int = 0,
    n_test: int = 200, device: str | None = None, progress: bool = True, note: str = "",
    background_last: bool = False, attention: bool = False, beta: float | None = None, lr: float = 5e-4,
) -> dict:
    """Refine a model file's VAEs, re-evaluate it, and write the result as a new model file.

    Roles are re-derived from the new evaluation (the competition uses the decoders, so
    winners may change). The training provenance (history, steps, timings) stays at the top
    level; ``refinement`` holds this run's report and ``source`` the source file's path,
    sha256, command and date.
    """
    from reprlab.io import sha256_file
    from reprlab.scenes.generate import evaluate_and_save
    from reprlab.scenes.train import TrainConfig, load_model

    model, meta = load_model(source, device=device)
    tcfg = TrainConfig.from_dict(meta.get("train_config") or {})
    start = time.monotonic()
    report = refine_vaes(model, tcfg.colour_mode, steps=steps, n_scenes=n_scenes, seed=seed, progress=progress,
                         background_last=background_last, attention=attention, beta=beta, lr=lr)
    report["seconds"] = time.monotonic() - start
    prov = refined_provenance(meta.get("provenance") or {}, report, source, sha256_file(source), note)
    metrics, roles = evaluate_and_save(model, tcfg, out, prov, n_test)
    ident = metrics["id"]
    return dict(out=str(out), roles=roles, refinement={k: v for k, v in report.items() if k != "curve_every_100"},
                id=dict(ari_fg=ident["ari_fg"], msc=ident["msc"], specialisation=ident["specialisation"]["fraction"]),
                generation=metrics["generation"], generation_fitted_latents=metrics["generation_fitted_latents"])


def refined_provenance(source_prov: dict, report: dict, source: str | os.PathLike, source_sha256: str, note: str) -> dict:
    """The training provenance (history, steps, timings) kept at top level, plus the refinement."""
    keep = {k: v for k, v in source_prov.items() if k not in ("command", "date", "refinement", "source")}
    return dict(keep, command=note, date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                refinement=report, source=dict(path=str(source), sha256=source_sha256,
                                               command=source_prov.get("command"), date=source_prov.get("date")))
