"""Texture-quality and variability measures (paper section 5, appendix A Figs. 3 and 6).

The paper measures quality by the VGG-19 Gram loss (eq. (7), :mod:`reprlab.textures.vgg`),
which needs pretrained weights that cannot be downloaded here. The default metrics need
no download:

- ``ps``: the Portilla-Simoncelli statistics loss (plenoptic's PS model and its standard
  statistics weighting) between reference and synthesis;
- ``gram``: the eq. (6)-style relative Gram error under an *independent* Random-Multiscale
  model (a different seed from the one used for synthesis, so it is not the optimised loss).

:func:`similarity_matrices` reproduces appendix Fig. 6 (SSIM and feature-space distances,
eq. (2), between random patches of several textures; median per texture pair), and
:func:`variability` the check of Fig. 3 (samples differ from the reference and from each
other at the pixel level, even up to shifts, while matching the statistics).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import torch

from reprlab.textures.filterbanks import random_multiscale_bank
from reprlab.textures.model import TextureModel, pixel_distance

#: seed of the independent evaluation model (synthesis models use seed 0 by default)
EVAL_SEED = 1234


def _img(x: torch.Tensor, what: str = "image") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"{what} must be (1|3, H, W), got {tuple(x.shape)}")
    return x.detach().float().cpu()


_EVAL_MODELS: dict[tuple, TextureModel] = {}


def evaluation_model(in_channels: int, seed: int = EVAL_SEED, maps_per_scale: int = 128) -> TextureModel:
    """The independent Random-Multiscale ReLU model used by the ``gram`` metric (cached)."""
    key = (in_channels, seed, maps_per_scale)
    if key not in _EVAL_MODELS:
        _EVAL_MODELS[key] = TextureModel(random_multiscale_bank(maps_per_scale=maps_per_scale,
                                                               in_channels=in_channels, seed=seed))
    return _EVAL_MODELS[key]


def gram_loss(reference: torch.Tensor, y: torch.Tensor, model: TextureModel | None = None) -> float:
    """Relative Gram error ``sum (G(ref) - G(y))^2 / sum G(ref)^2`` (eqs. (5)/(6)) under ``model``
    (default: :func:`evaluation_model`, independent of the synthesis filters)."""
    reference, y = _img(reference, "reference"), _img(y, "y")
    if reference.shape[0] != y.shape[0]:
        raise ValueError(f"reference and y need the same channels, got {reference.shape[0]} and {y.shape[0]}")
    model = model or evaluation_model(reference.shape[0])
    dev = next(iter(model.buffers())).device
    with torch.no_grad():
        gr = model.grams(reference.to(dev))[0]
        return float(model.loss(y.to(dev), gr))


def _ps_model(shape: tuple[int, int]):
    import plenoptic as po

    h, w = shape
    n_scales = 4
    while n_scales > 1 and (h % 2 ** n_scales or w % 2 ** n_scales or min(h, w) // 2 ** n_scales < 8):
        n_scales -= 1
    return po.models.PortillaSimoncelli((h, w), n_scales=n_scales).eval(), n_scales


def ps_loss(reference: torch.Tensor, y: torch.Tensor) -> float:
    """Portilla-Simoncelli statistics distance via plenoptic: its PS synthesis loss
    (L2 norm of the weighted statistics difference, min/max excluded), channels analysed
    independently. Images must have the same size; sides should be divisible by 2^scales
    (scales are reduced automatically for small images)."""
    import plenoptic as po

    reference, y = _img(reference, "reference"), _img(y, "y")
    if reference.shape != y.shape:
        raise ValueError(f"PS statistics are size dependent: reference {tuple(reference.shape)} vs y {tuple(y.shape)}")
    model, _ = _ps_model(tuple(reference.shape[1:]))
    ref = reference[None].double()
    model = model.double()
    loss = po.loss.portilla_simoncelli_loss_factory(model, ref)
    with torch.no_grad():
        return float(loss(model(y[None].double()), model(ref)))


def evaluate(
    reference: torch.Tensor,
    samples: torch.Tensor | Sequence[torch.Tensor],
    *,
    metrics: Sequence[str] = ("ps", "gram"),
    vgg_weights: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Mean (over samples) of each metric: 'ps', 'gram', 'vgg' (needs weights), 'pixel' (eq. (3)).

    Lower is better for all. ``samples`` is (n, C, H, W) or a list of (C, H, W). The reference
    is centre-cropped/resized to the samples' size when they differ (PS and pixel metrics
    compare equal sizes).
    """
    from reprlab.textures.images import _resize

    reference = _img(reference, "reference")
    if isinstance(samples, torch.Tensor) and samples.ndim == 3:
        samples = samples[None]
    samples = [_img(s, "sample") for s in samples]
    if not samples:
        raise ValueError("evaluate needs at least one sample")
    allowed = ("ps", "gram", "vgg", "pixel")
    bad = [m for m in metrics if m not in allowed]
    if bad:
        raise ValueError(f"unknown metrics {bad}; expected a subset of {allowed}")
    h, w = samples[0].shape[1:]
    ref_eq = reference
    if reference.shape[1:] != (h, w):
        if h != w:
            raise ValueError(f"samples of size {h}x{w} vs reference {tuple(reference.shape[1:])}: resize one first")
        ref_eq = _resize(reference, h)
    out: dict[str, float] = {}
    vgg = None
    if "vgg" in metrics:
        from reprlab.textures.vgg import VGGGramLoss

        vgg = VGGGramLoss(vgg_weights)
    for m in metrics:
        vals = []
        for s in samples:
            if m == "ps":
                vals.append(ps_loss(ref_eq, s))
            elif m == "gram":
                vals.append(gram_loss(reference, s))
            elif m == "pixel":
                vals.append(pixel_distance(ref_eq, s))
            else:
                with torch.no_grad():
                    vals.append(float(vgg(reference, s)))
        out[m] = float(np.mean(vals))
    return out


def random_patches(image: torch.Tensor, n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` patches of ``image`` (C, H, W) -> (n, C, size, size)."""
    from reprlab.textures.images import natural_image_patches

    image = _img(image)
    if min(image.shape[1:]) < size:
        raise ValueError(f"image {tuple(image.shape[1:])} is smaller than the patch size {size}")
    return natural_image_patches(n, size, seed=seed, images=[image])


def _ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    from skimage.metrics import structural_similarity

    x, y = a.numpy().transpose(1, 2, 0), b.numpy().transpose(1, 2, 0)
    return float(structural_similarity(x, y, data_range=1.0, channel_axis=2))


def similarity_matrices(
    textures: Mapping[str, torch.Tensor],
    models: Mapping[str, TextureModel] | None = None,
    *,
    n_patches: int = 10,
    patch_size: int = 64,
    seed: int = 0,
) -> dict:
    """Appendix Fig. 6: per pair of textures (i, j), the median over patch pairs of

    - 'ssim': SSIM between pixel patches (a similarity: higher = more alike),
    - '<model name>': eq. (2) normalised Gram distance under each model (lower = more alike),

    with ``n_patches`` random patches per texture (pairs of a patch with itself excluded).
    Also returns, per measure, the leave-one-out nearest-neighbour accuracy of assigning each
    patch to its texture ('accuracy'), a summary of how well the measure separates textures.
    All textures must have the same number of channels.
    """
    names = list(textures)
    if len(names) < 2:
        raise ValueError("similarity_matrices needs at least two textures")
    if n_patches < 2:
        raise ValueError(f"n_patches must be >= 2, got {n_patches}")
    imgs = [_img(textures[n], n) for n in names]
    if len({im.shape[0] for im in imgs}) != 1:
        raise ValueError("all textures must have the same number of channels")
    c = imgs[0].shape[0]
    if models is None:
        models = {"random-multiscale": evaluation_model(c)}
    patches = torch.cat([random_patches(im, n_patches, patch_size, seed + k) for k, im in enumerate(imgs)])
    labels = np.repeat(np.arange(len(names)), n_patches)
    p = len(patches)
    measures: dict[str, np.ndarray] = {}
    s = np.full((p, p), np.nan)
    for i, j in combinations(range(p), 2):
        s[i, j] = s[j, i] = _ssim(patches[i], patches[j])
    measures["ssim"] = s
    for mname, model in models.items():
        dev = next(iter(model.buffers())).device
        with torch.no_grad():
            g = torch.cat([model.grams(patches[k:k + 16].to(dev)).cpu() for k in range(0, p, 16)]).double()
        norms = g.flatten(1).norm(dim=1)
        sq = torch.cdist(g.flatten(1), g.flatten(1)) ** 2
        d = (sq / (norms[:, None] * norms[None, :])).numpy()
        np.fill_diagonal(d, np.nan)
        measures[mname] = d
    t = len(names)
    out: dict = {"names": names, "n_patches": n_patches, "patch_size": patch_size, "matrices": {}, "accuracy": {}}
    for mname, d in measures.items():
        mat = np.zeros((t, t))
        for a in range(t):
            for b in range(t):
                block = d[np.ix_(labels == a, labels == b)]
                mat[a, b] = np.nanmedian(block)
        out["matrices"][mname] = mat
        score = -d if mname != "ssim" else d  # higher = nearer
        score = np.where(np.isnan(score), -np.inf, score)
        nn_idx = score.argmax(1)
        out["accuracy"][mname] = float((labels[nn_idx] == labels).mean())
    return out


def max_normalized_xcorr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max over all circular shifts of the normalised cross-correlation of mean-removed images
    (1 = b is a shifted copy of a). Both (C, H, W) of the same size."""
    a, b = _img(a).double(), _img(b).double()
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a - a.mean(dim=(1, 2), keepdim=True)
    b = b - b.mean(dim=(1, 2), keepdim=True)
    xc = torch.fft.irfft2(torch.fft.rfft2(a) * torch.fft.rfft2(b).conj(), s=a.shape[1:]).sum(0)
    den = float(a.norm() * b.norm())
    return float(xc.max()) / den if den > 0 else 0.0


def variability(reference: torch.Tensor, samples: torch.Tensor, model: TextureModel | None = None) -> dict:
    """Fig. 3 check: are samples new textures rather than copies of the reference?

    Returns mean eq. (3) pixel distances sample-reference and sample-sample, the mean max
    normalised cross-correlation over shifts (sample-reference, sample-sample; near 1 would
    mean shifted copies), and the mean eq. (2) Gram distances (statistics should match:
    small) under ``model`` (default the independent evaluation model). The reference is
    centre-cropped/resized to the samples' size for the pixel-level measures.
    """
    from reprlab.textures.images import _resize
    from reprlab.textures.model import gram_distance

    reference = _img(reference, "reference")
    samples = samples if samples.ndim == 4 else samples[None]
    samples = [_img(s) for s in samples]
    h, w = samples[0].shape[1:]
    ref_eq = reference if reference.shape[1:] == (h, w) else _resize(reference, h)
    model = model or evaluation_model(reference.shape[0])
    dev = next(iter(model.buffers())).device
    out = {
        "pixel_to_reference": float(np.mean([pixel_distance(ref_eq, s) for s in samples])),
        "xcorr_to_reference": float(np.mean([max_normalized_xcorr(ref_eq, s) for s in samples])),
        "gram_to_reference": float(np.mean([gram_distance(reference.to(dev), s.to(dev), model) for s in samples])),
    }
    pairs = list(combinations(range(len(samples)), 2))
    if pairs:
        out["pixel_between_samples"] = float(np.mean([pixel_distance(samples[i], samples[j]) for i, j in pairs]))
        out["xcorr_between_samples"] = float(np.mean([max_normalized_xcorr(samples[i], samples[j]) for i, j in pairs]))
        out["gram_between_samples"] = float(np.mean([gram_distance(samples[i].to(dev), samples[j].to(dev), model)
                                                      for i, j in pairs]))
    return out
