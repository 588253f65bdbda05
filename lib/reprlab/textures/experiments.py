"""The chapter's experiments as functions, sized by a scale preset (used by notebooks/ch3_textures).

- :data:`PRESETS` / :func:`preset`: sizes per scale (``smoke`` seconds, ``default`` minutes on a
  2-core CPU, ``paper`` the paper's 256 px / 2000 iterations / 1e7 patches);
- :func:`build_model`: a model from a spec: any bank name of section 2, ``single-<k>`` (one
  filter size with as many maps as Random-Multiscale, Fig. 2), ``multiscale-linear`` /
  ``multiscale-sigmoid`` (nonlinearity ablation, Fig. 2);
- :func:`run_models`: synthesise each texture with each model, time it and score it with the
  download-free metrics (and VGG when weights are configured);
- :func:`run_ps_baseline`: the Portilla-Simoncelli peer on the same textures and budget;
- :func:`metric_table`: the records as a pandas DataFrame.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch

from reprlab.scales import pick
from reprlab.textures.filterbanks import (
    MULTISCALE_SIZES,
    make_bank,
    random_bank,
    random_multiscale_bank,
)
from reprlab.textures.model import TextureModel

PRESETS: dict[str, dict] = {
    "smoke": dict(
        size=24, iters=3, n_patches=1500,
        fig1_textures=["petals"],
        fig1_models=["random-363", "fourier-363", "pca-363", "kmeans-363", "random-3267", "random-multiscale"],
        fig2_texture="gravel", fig2_models=["single-3", "single-11", "single-55", "random-multiscale",
                                            "multiscale-linear"],
        var_texture="brick", var_size=32, var_seeds=2, var_iters=3,
        sim_patches=3, sim_patch_size=32,
        inpaint_texture="brick", inpaint_patch=32, inpaint_frames=[0.1, 0.2], inpaint_patches=10,
        inpaint_iters=3,
        torch_threads=1,
    ),
    "default": dict(
        size=64, iters=60, n_patches=40_000,
        fig1_textures=["petals"],
        fig1_models=["random-363", "fourier-363", "pca-363", "kmeans-363", "kmeans-nonwhite", "kmeans-sample",
                     "random-3267", "fourier-3267", "kmeans-3267", "random-multiscale"],
        fig2_texture="gravel", fig2_models=["single-3", "single-7", "single-11", "single-23", "single-55",
                                            "random-multiscale", "multiscale-linear", "multiscale-sigmoid"],
        var_texture="brick", var_size=96, var_seeds=3, var_iters=100,
        sim_patches=8, sim_patch_size=48,
        inpaint_texture="brick", inpaint_patch=64, inpaint_frames=[0.1, 0.2], inpaint_patches=100,
        inpaint_iters=60,
        torch_threads=None,
    ),
    "paper": dict(
        size=256, iters=2000, n_patches=10_000_000,
        fig1_textures=["petals", "gravel", "brick"],
        fig1_models=["random-363", "fourier-363", "pca-363", "kmeans-363", "kmeans-nonwhite", "kmeans-sample",
                     "random-3267", "fourier-3267", "kmeans-3267", "random-multiscale"],
        fig2_texture="gravel", fig2_models=["single-3", "single-5", "single-7", "single-11", "single-23",
                                            "single-55", "random-multiscale", "multiscale-linear",
                                            "multiscale-sigmoid"],
        var_texture="brick", var_size=256, var_seeds=3, var_iters=2000,
        sim_patches=10, sim_patch_size=128,
        inpaint_texture="brick", inpaint_patch=256, inpaint_frames=[0.1, 0.15, 0.2], inpaint_patches=500,
        inpaint_iters=2000,
        torch_threads=None,
    ),
}


def preset(scale: str | None = None, **overrides) -> dict:
    """The chapter's sizes for ``scale`` (default: ``$REPRLAB_SCALE``), with overrides."""
    return pick(PRESETS, scale, **overrides)


def build_model(spec: str, in_channels: int, *, target: torch.Tensor | None = None, seed: int = 0,
                n_patches: int | None = None) -> TextureModel:
    """A :class:`TextureModel` from a spec string (see module docstring)."""
    if not isinstance(spec, str):
        raise ValueError(f"model spec must be a string, got {type(spec).__name__}")
    if spec.startswith("single-"):
        try:
            k = int(spec.split("-", 1)[1])
        except ValueError as err:
            raise ValueError(f"single-scale spec must be 'single-<odd size>', got {spec!r}") from err
        maps = 128 * len(MULTISCALE_SIZES)  # as many maps as the multi-scale model (Fig. 2)
        bank = random_bank(k, maps, in_channels, seed)
        bank.name = spec
        return TextureModel(bank)
    if spec in ("multiscale-linear", "multiscale-sigmoid"):
        nl = "none" if spec.endswith("linear") else "sigmoid"
        bank = random_multiscale_bank(in_channels=in_channels, seed=seed)
        bank.name = spec
        return TextureModel(bank, nonlinearity=nl)
    kw = {}
    if n_patches is not None and (spec.startswith("pca") or spec.startswith("kmeans")):
        kw["n_patches"] = n_patches
    return TextureModel(make_bank(spec, in_channels=in_channels, seed=seed, target=target, **kw))


def vgg_weights_configured() -> bool:
    """True when ``$REPRLAB_VGG19_WEIGHTS`` names an existing file."""
    path = os.environ.get("REPRLAB_VGG19_WEIGHTS")
    return bool(path) and os.path.isfile(path)


def run_models(
    textures: Mapping[str, torch.Tensor],
    specs: Sequence[str],
    *,
    iters: int,
    seeds: Sequence[int] = (0,),
    n_patches: int | None = None,
    metrics: Sequence[str] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Synthesise every texture with every model spec (one sample per seed) and score it.

    Returns one record per (texture, model): images (n_seeds, C, H, W), final losses, seconds,
    iterations, n_maps, and the mean metric values (``ps``, ``gram``, ``pixel``, plus ``vgg``
    when weights are configured and ``metrics`` is None).
    """
    from tqdm.auto import tqdm

    from reprlab.textures.metrics import evaluate
    from reprlab.textures.synthesis import synthesize

    if metrics is None:
        metrics = ("ps", "gram", "pixel") + (("vgg",) if vgg_weights_configured() else ())
    records = []
    jobs = [(t, s) for t in textures for s in specs]
    for tname, spec in tqdm(jobs, desc="models", disable=not progress):
        target = textures[tname]
        model = build_model(spec, int(target.shape[0]), target=target, n_patches=n_patches)
        images, losses, seconds, its = [], [], 0.0, []
        for seed in seeds:
            res = synthesize(target, model, iters=iters, seed=seed, progress=False)
            images.append(res.images[0])
            losses.append(res.final_losses[0])
            seconds += res.seconds
            its.append(res.iterations[0])
        images_t = torch.stack(images)
        rec = {"texture": tname, "model": spec, "n_maps": model.n_maps, "images": images_t,
               "loss": float(sum(losses) / len(losses)), "seconds": seconds / len(seeds), "iterations": its}
        rec.update(evaluate(target, images_t, metrics=metrics))
        records.append(rec)
        del model
    return records


def run_ps_baseline(textures: Mapping[str, torch.Tensor], *, iters: int, seeds: Sequence[int] = (0,),
                    metrics: Sequence[str] | None = None, progress: bool = True) -> list[dict]:
    """The Portilla-Simoncelli peer (:func:`reprlab.textures.baseline.ps_synthesize`), scored like
    :func:`run_models` (its ``loss`` is the PS loss it optimises)."""
    from tqdm.auto import tqdm

    from reprlab.textures.baseline import ps_synthesize
    from reprlab.textures.metrics import evaluate

    if metrics is None:
        metrics = ("ps", "gram", "pixel") + (("vgg",) if vgg_weights_configured() else ())
    records = []
    for tname in tqdm(list(textures), desc="PS baseline", disable=not progress):
        target = textures[tname]
        res = ps_synthesize(target, iters=iters, seed=seeds[0], n_samples=len(seeds), progress=False)
        rec = {"texture": tname, "model": "portilla-simoncelli", "n_maps": None, "images": res.images,
               "loss": float(sum(res.final_losses) / len(res.final_losses)),
               "seconds": res.seconds / len(seeds), "iterations": res.iterations}
        rec.update(evaluate(target, res.images, metrics=metrics))
        records.append(rec)
    return records


def metric_table(records: Sequence[dict]):
    """Records -> pandas DataFrame (texture, model, n_maps, loss, metrics, seconds), images dropped."""
    import pandas as pd

    rows = [{k: v for k, v in r.items() if k not in ("images", "iterations")} for r in records]
    return pd.DataFrame(rows)
