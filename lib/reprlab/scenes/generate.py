"""Controlled layered generation, its checks, full evaluation, export and random search.

Generation follows §2 / Figs. 1C, 7: a background sample from the background expert, then
objects painted back to front by the experts specialised on the requested classes. The
check classifies each generated full shape by its bounding-box fill ratio, checks its
colour, and re-decomposes the generated scene with the model to see whether the requested
depth order is recovered.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reprlab.scenes.econ import ECON
from reprlab.scenes.metrics import evaluate, order_gap
from reprlab.scenes.sprites import (
    CLASSES,
    OBJECT_RANGE,
    UNIQUE_COLOURS,
    classify_shape,
    default_size_range,
    make_scenes,
    shape_mask,
)

if TYPE_CHECKING:
    from reprlab.scenes.train import TrainConfig

TEST_SETS: dict[str, dict[str, Any]] = {
    # in distribution: one object of each class, random depth order
    "id": dict(classes="one_each"),
    # out of distribution (Figs. 4, 8): 4–5 objects, classes drawn with replacement
    "ood_4to5": dict(classes="random", n_objects=(4, 5)),
    # 0–5 objects of any classes
    "ood_0to5": dict(classes="random", n_objects=(0, 5)),
}


def experts_for(objects: Sequence[str], roles: dict[str, int | None]) -> list[int]:
    """Expert indices (background first) for object class names listed back to front."""
    if not roles or roles.get("background") is None:
        raise ValueError("the model file has no expert roles (export it with `scenes export` first)")
    out = [int(roles["background"])]
    for name in objects:
        if name not in CLASSES:
            raise ValueError(f"unknown object class {name!r}; expected one of {CLASSES}")
        if roles.get(name) is None:
            raise ValueError(f"no expert specialised on {name!r} (roles: {roles})")
        out.append(int(roles[name]))
    return out


def fit_role_latents(
    model: ECON, scenes, roles: dict[str, int | None], min_count: int = 5,
) -> dict[str, dict[str, Any]]:
    """Full-covariance Gaussian over the posterior means of each role (class or background).

    Scenes are decomposed deterministically; every visible object is credited to its best
    matching step (as in the specialisation metric); when that step was won by the role's
    expert, the step's posterior mean μ(z) is collected. Returns {role: {expert, loc, scale
    (standard deviations), chol (Cholesky factor of the covariance: a role's posterior means are
    strongly correlated, so a diagonal fit samples off them), n}} for roles with at least
    ``min_count`` such latents. Decoding z from these Gaussians
    instead of p(z) = N(0, I) is ex-post density estimation of the aggregate posterior — a
    way to sample when an expert's posteriors do not (yet) match its prior.
    """
    from reprlab.scenes.metrics import assign_objects

    names = (*CLASSES, "background")
    with torch.no_grad():
        d = model.decompose(torch.from_numpy(scenes.images).to(next(model.parameters()).device), stochastic=False)
    lat = d.latents.cpu().numpy()
    items = assign_objects(scenes, d.segmentation().cpu().numpy(), d.winners.cpu().numpy(), with_steps=True)
    out: dict[str, dict[str, Any]] = {}
    for row, name in enumerate(names):
        k = roles.get(name)
        if k is None:
            continue
        zs = np.array([lat[i, step] for i, r, e, step in items if r == row and e == k])
        if len(zs) < min_count:
            continue
        cov = np.cov(zs.T, bias=True).reshape(zs.shape[1], zs.shape[1]) + 1e-6 * np.eye(zs.shape[1])
        out[name] = dict(expert=int(k), loc=zs.mean(0).tolist(), scale=(zs.std(0) + 1e-3).tolist(),
                         chol=np.linalg.cholesky(cov).tolist(), n=len(zs))
    return out


def latents_for(objects: Sequence[str], role_latents: dict[str, dict[str, Any]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(loc, scale) per layer (background first) for :meth:`ECON.generate`.

    scale is the Cholesky factor of the fitted covariance; files written before it was
    stored (diagonal fits) give their standard deviations.
    """
    out = []
    for name in ("background", *objects):
        if name not in role_latents:
            raise ValueError(f"no fitted latent Gaussian for {name!r} (have {sorted(role_latents)})")
        fit = role_latents[name]
        out.append((torch.tensor(fit["loc"]), torch.tensor(fit["chol"] if "chol" in fit else fit["scale"])))
    return out


def check_generation(
    out: dict[str, torch.Tensor], objects: Sequence[str], colour_mode: str, model: ECON | None = None,
    roles: dict[str, int | None] | None = None,
) -> dict[str, Any]:
    """Does each generated layer show the requested class (shape, colour) in the requested order?

    shape_accuracy: generated full shapes classified as the requested class (fill ratio) and
    within a factor 2 of that class's area at the training size (a layer covering the canvas
    is no square);
    colour_accuracy: unique colours — the dominant channel matches the class colour; random —
    all channels in the object range; order_accuracy (needs ``model`` and ``roles``): the
    model's deterministic decomposition of the generated image picks the requested
    experts front to back; all_correct: scenes where every layer passes shape and colour.
    """
    shapes = out["shapes"].cpu().numpy()
    layers = out["layers"].cpu().numpy()
    n, t = shapes.shape[:2]
    if t != len(objects) + 1:
        raise ValueError(f"expected {len(objects) + 1} layers (background + objects), got {t}")
    side = default_size_range(shapes.shape[-1])[0]
    areas = {name: float(shape_mask(CLASSES.index(name), side, 0, 0, side).sum()) for name in set(objects)}
    shape_ok = np.zeros((n, len(objects)), bool)
    colour_ok = np.zeros((n, len(objects)), bool)
    for i in range(n):
        for j, name in enumerate(objects):
            mask = shapes[i, j + 1] > 0.5
            in_size = 0.5 * areas[name] <= mask.sum() <= 2.0 * areas[name]
            shape_ok[i, j] = in_size and classify_shape(mask) == CLASSES.index(name)
            if mask.sum() == 0:
                continue
            col = layers[i, j + 1][:, mask].mean(1)
            if colour_mode == "unique":
                target = np.array(UNIQUE_COLOURS[name]) / 255.0
                colour_ok[i, j] = bool(np.abs(col - target).max() < 0.3)
            else:
                colour_ok[i, j] = bool((col >= OBJECT_RANGE[0] / 255.0 - 0.1).all())
    report = dict(
        n_scenes=n,
        shape_accuracy=float(shape_ok.mean()) if objects else float("nan"),
        colour_accuracy=float(colour_ok.mean()) if objects else float("nan"),
        all_correct=float((shape_ok & colour_ok).all(1).mean()) if objects else float("nan"),
    )
    if model is not None and roles:
        want = experts_for(objects, roles)[::-1]  # front to back
        with torch.no_grad():
            d = model.decompose(out["image"].clamp(0, 1), n_steps=len(want), stochastic=False)
        got = d.winners.cpu().numpy()
        report["order_accuracy"] = float((got == np.array(want)[None]).all(1).mean())
    return report


def evaluate_all(
    model: ECON, colour_mode: str, n: int = 200, seed: int = 123, generation_samples: int = 50,
    roles: dict[str, int | None] | None = None,
) -> dict[str, Any]:
    """Metrics on the ID and OOD test sets (+ similar colours for random) and generation checks."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    size = model.config.image_size
    sets = dict(TEST_SETS)
    if colour_mode == "random":
        sets["ood_similar_colours"] = dict(classes="random", n_objects=(2, 4), similar_colours=True)
    results: dict[str, Any] = {}
    for i, (name, kw) in enumerate(sets.items()):
        scenes = make_scenes(n, size, colour_mode, random_state=np.random.default_rng([seed, i]), **kw)
        steps = int(scenes.n_objects.max()) + 1 if name != "id" else model.config.n_steps
        ev = evaluate(model, scenes, n_steps=max(steps, 1))
        ev["specialisation"]["table"] = np.asarray(ev["specialisation"]["table"]).tolist()
        ev["n_steps"] = steps
        results[name] = ev
        if name == "id":
            id_scenes = scenes
    roles = roles or dict(results["id"]["specialisation"]["top_expert"])
    results["roles"] = roles
    if all(roles.get(c) is not None for c in (*CLASSES, "background")):  # greedy vs true depth order
        results["id"]["order_gap"] = order_gap(model, id_scenes, roles)
    # latent Gaussians per role, fitted on a separate set of training-distribution scenes
    fit_scenes = make_scenes(n, size, colour_mode, random_state=np.random.default_rng([seed, 77]))
    role_latents = fit_role_latents(model, fit_scenes, roles)
    results["role_latents"] = role_latents
    gen_checks: dict[str, Any] = {}
    gen_fitted: dict[str, Any] = {}
    if all(roles.get(c) is not None for c in (*CLASSES, "background")):
        rng = np.random.default_rng([seed, 99])
        requests = []
        for objects in (None, "two", "four"):
            if objects is None:
                requests.append(("one_each", [CLASSES[j] for j in rng.permutation(len(CLASSES))]))
            else:
                requests.append((f"{objects}_random", [CLASSES[j] for j in rng.integers(0, len(CLASSES), size=2 if objects == "two" else 4)]))
        g = torch.Generator().manual_seed(seed)
        for label, objs in requests:  # the paper's generation: z ~ p(z) = N(0, I)
            out = model.generate(experts_for(objs, roles), n=generation_samples, generator=g)
            gen_checks[label] = dict(objects=objs, **check_generation(out, objs, colour_mode, model, roles))
        if all(name in role_latents for name in (*CLASSES, "background")):
            g = torch.Generator().manual_seed(seed)
            for label, objs in requests:  # z from the fitted posterior Gaussians of the roles
                out = model.generate(experts_for(objs, roles), n=generation_samples, generator=g,
                                     latents=latents_for(objs, role_latents))
                gen_fitted[label] = dict(objects=objs, **check_generation(out, objs, colour_mode, model, roles))
    results["generation"] = gen_checks
    results["generation_fitted_latents"] = gen_fitted
    return results


def evaluate_and_save(
    model: ECON, train_config: TrainConfig, out: str | os.PathLike, provenance: dict, n_test: int = 200,
) -> tuple[dict[str, Any], dict[str, int | None]]:
    """:func:`evaluate_all` the model, then write it with its roles, role latents and metrics.

    Returns (metrics without roles and role latents, roles).
    """
    from reprlab.scenes.train import save_model

    metrics = evaluate_all(model, train_config.colour_mode, n=n_test)
    roles = metrics.pop("roles")
    role_latents = metrics.pop("role_latents")
    save_model(out, model, train_config, roles=roles, metrics=metrics, provenance=provenance, role_latents=role_latents)
    return metrics, roles


def export_model(
    checkpoint: str | os.PathLike, out: str | os.PathLike, n_test: int = 200, device: str | None = None, note: str = ""
) -> dict[str, Any]:
    """Evaluate a training checkpoint's best model and write it as a small model file."""
    from reprlab.io import load_checkpoint, sha256_file
    from reprlab.scenes.train import TrainConfig, load_model

    model, _ = load_model(checkpoint, device=device)
    saved = load_checkpoint(checkpoint)
    if saved.get("kind") != "reprlab.scenes.train":
        raise ValueError(f"{checkpoint} is not a training checkpoint")
    tcfg = TrainConfig.from_dict(saved["train_config"])
    st = saved["state"]
    prov = dict(
        command=note, date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        steps_trained=st["step"], best_step=st.get("best_step"), best_val_loss=st["best_val"],
        elapsed_s=st["elapsed"], s_per_step=st["elapsed"] / max(1, st["step"]), stop_reason=st.get("stop_reason"),
        seed=tcfg.seed, source_checkpoint_sha256=sha256_file(checkpoint),
        history=[{k: v for k, v in h.items() if k != "table"} for h in st["history"]],
    )
    metrics, roles = evaluate_and_save(model, tcfg, out, prov, n_test)
    size = Path(out).stat().st_size
    summary = {name: {k: m[k] for k in ("ari_fg", "msc", "mse")} | dict(
        spec_fraction=m["specialisation"]["fraction"], dedicated=m["specialisation"]["dedicated"])
        for name, m in metrics.items() if not name.startswith("generation")}
    return dict(out=str(out), bytes=size, roles=roles, metrics=summary, generation=metrics["generation"],
                generation_fitted_latents=metrics["generation_fitted_latents"],
                steps=st["step"], best_step=st.get("best_step"), elapsed_s=st["elapsed"])


C4_RANGES: dict[str, dict[str, tuple]] = {
    "unique": dict(latent_dim=(2, 3), vae_layers=(2, 4), vae_channels=(4, 32), beta=(0.5, 2.0), gamma=(0.1, 10.0)),
    "random": dict(latent_dim=(4, 5), vae_layers=(3, 4), vae_channels=(16, 32), beta=(1.0, 1.0), gamma=(0.5, 5.0)),
}


def sample_c4(colour_mode: str, rng: np.random.Generator, image_size: int) -> dict[str, Any]:
    """One random configuration from the appendix C.4 ranges (γ log-uniform)."""
    r = C4_RANGES[colour_mode]
    max_layers = int(math.log2(image_size)) - 1
    layers = int(rng.integers(r["vae_layers"][0], min(r["vae_layers"][1], max_layers) + 1))
    return dict(
        latent_dim=int(rng.integers(r["latent_dim"][0], r["latent_dim"][1] + 1)),
        vae_layers=layers,
        vae_channels=int(rng.integers(r["vae_channels"][0], r["vae_channels"][1] + 1)),
        beta=float(rng.uniform(*r["beta"])),
        gamma=float(np.exp(rng.uniform(np.log(r["gamma"][0]), np.log(r["gamma"][1])))),
    )


def random_search(
    colour_mode: str = "unique", scale: str | None = None, n_trials: int = 4, steps: int | None = None,
    seed: int = 0, out: str | os.PathLike | None = None, device: str | None = None, threads: int | None = None,
) -> dict[str, Any]:
    """Random search over C.4; each trial trains briefly and is ranked by validation loss."""
    from reprlab.io import atomic_write_json
    from reprlab.scenes.train import make_configs, train

    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n_trials):
        base_model, _ = make_configs(scale, colour_mode)
        params = sample_c4(colour_mode, rng, base_model.image_size)
        extra = dict(seed=seed + i, threads=threads)
        if steps is not None:
            extra["max_steps"] = steps
        model_cfg, train_cfg = make_configs(scale, colour_mode, **params, **extra)
        if train_cfg.max_steps is None:
            raise ValueError("pass steps= for the paper scale (its runs stop on learning-rate decays)")
        train_cfg.eval_every = min(train_cfg.eval_every, max(1, train_cfg.max_steps))
        _, rep = train(model_cfg, train_cfg, checkpoint=None, device=device, progress=False)
        last = rep["history"][-1] if rep["history"] else {}
        trials.append(dict(trial=i, params=params, best_val=rep["best_val"], steps=rep["steps"],
                           ari_fg=last.get("ari_fg"), spec_min=last.get("spec_min"), elapsed_s=rep["elapsed_s"]))
    best = min(trials, key=lambda t: t["best_val"])
    report = dict(colour_mode=colour_mode, n_trials=n_trials, best=best, trials=trials)
    if out is not None:
        atomic_write_json(out, report)
    return report
