"""The peer: Portilla & Simoncelli (2000) texture synthesis through plenoptic.

The statistics are plenoptic's :class:`~plenoptic.models.PortillaSimoncelli` (steerable
pyramid, 4 orientations, up to 4 scales, 7x7 autocorrelations) compared with plenoptic's
``portilla_simoncelli_loss_factory`` (its recommended PS loss: min/max excluded, highpass
variance up-weighted). For a like-for-like comparison with the Gram synthesis, the images
are optimised by the same engine (:func:`reprlab.textures.synthesis.minimize_image`):
uniform noise in [0, 1], L-BFGS-B with the box [0, 1] (or projected Adam), same
iteration budget and callback. (plenoptic's own ``Metamer`` loop has no box constraint,
only a soft range penalty, and no per-evaluation stop hook.)

plenoptic analyses colour channels independently (the original PS colour extension with
cross-channel statistics is not part of it), so RGB textures use per-channel statistics.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from reprlab._device import device as pick_device
from reprlab.textures.synthesis import (
    SynthesisResult,
    _check_image,
    minimize_image,
    run_samples,
    uniform_noise,
)


def ps_objective(target: torch.Tensor, device: torch.device | None = None) -> tuple[Callable, str]:
    """(loss_fn, description): plenoptic's PS loss of an image (C, H, W) against ``target``."""
    import plenoptic as po

    from reprlab.textures.metrics import _ps_model

    target = _check_image(target, "target")
    dev = device or torch.device("cpu")
    model, n_scales = _ps_model(tuple(target.shape[1:]))
    model = model.to(dev)
    po.remove_grad(model)
    ref = target[None].to(dev)
    loss = po.loss.portilla_simoncelli_loss_factory(model, ref)
    with torch.no_grad():
        ref_rep = model(ref)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        return loss(model(x[None]), ref_rep)

    return loss_fn, f"PortillaSimoncelli(n_scales={n_scales})"


def ps_synthesize(
    target: torch.Tensor,
    *,
    iters: int = 2000,
    seed: int = 0,
    n_samples: int = 1,
    method: str = "lbfgsb",
    lr: float = 0.02,
    device: torch.device | str | None = None,
    callback: Callable[[int, float, dict], bool | None] | None = None,
    progress: bool = True,
) -> SynthesisResult:
    """Portilla-Simoncelli synthesis of ``n_samples`` textures like ``target`` (C, H, W).

    The output has the target's size (PS statistics depend on it); sides should be
    divisible by 2^scales (scales are reduced for small images, see
    :func:`reprlab.textures.metrics.ps_loss`). Sample i starts from uniform noise seeded
    ``seed + i``; ``callback`` as in :func:`reprlab.textures.synthesis.synthesize`.
    """
    target = _check_image(target, "target")
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive int, got {iters!r}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    t0 = time.perf_counter()
    dev = torch.device(device) if device is not None else pick_device()
    loss_fn, desc = ps_objective(target, dev)
    return run_samples(
        lambda i, step: minimize_image(loss_fn, uniform_noise(tuple(target.shape), seed + i), iters=iters,
                                       method=method, callback=callback, progress=progress, sample=i,
                                       step_offset=step, lr=lr, device=dev),
        n_samples, t0,
        meta={"method": method, "model": desc, "seed": seed, "size": tuple(target.shape[1:]), "device": str(dev)},
    )
