"""The peer: Portilla & Simoncelli (2000) texture synthesis through plenoptic.

Uses plenoptic's :class:`~plenoptic.models.PortillaSimoncelli` statistics (steerable
pyramid, 4 orientations, up to 4 scales, 7x7 autocorrelations) and its recommended
synthesis: :class:`~plenoptic.MetamerCTF` (coarse-to-fine over scales) with the
``portilla_simoncelli_loss_factory`` loss and Adam (amsgrad), from uniform noise in [0, 1].
plenoptic analyses colour channels independently (the original PS colour extension with
cross-channel statistics is not part of it), so RGB textures are synthesised with
per-channel statistics.

Returns the same :class:`~reprlab.textures.synthesis.SynthesisResult` as the Gram
synthesis so both can be compared with the same metrics and timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from reprlab._device import device as pick_device
from reprlab.textures.synthesis import SynthesisResult, _check_image, uniform_noise


def ps_synthesize(
    target: torch.Tensor,
    *,
    iters: int = 1000,
    seed: int = 0,
    n_samples: int = 1,
    lr: float = 0.02,
    ctf_iters: int = 7,
    device: torch.device | str | None = None,
    callback: Callable[[int, float, dict], bool | None] | None = None,
    chunk: int = 10,
    progress: bool = True,
) -> SynthesisResult:
    """Portilla-Simoncelli synthesis of ``n_samples`` textures like ``target`` (C, H, W).

    The output has the target's size (PS statistics depend on it); sides should be
    divisible by 2^scales (scales are reduced for small images, see
    :func:`reprlab.textures.metrics.ps_loss`). ``callback(step, loss, state)`` is called
    every ``chunk`` iterations with ``state['image']``; True stops.
    """
    import plenoptic as po
    from tqdm.auto import tqdm

    from reprlab.textures.metrics import _ps_model

    target = _check_image(target, "target")
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive int, got {iters!r}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    t0 = time.perf_counter()
    dev = torch.device(device) if device is not None else pick_device()
    c, h, w = target.shape
    model, n_scales = _ps_model((h, w))
    model = model.to(dev)
    po.remove_grad(model)
    ref = target[None].to(dev)
    loss_fn = po.loss.portilla_simoncelli_loss_factory(model, ref)
    images, losses, iterations = [], [], []
    stopped, step = False, 0
    for i in range(n_samples):
        met = po.MetamerCTF(ref, model, loss_function=loss_fn, coarse_to_fine="together")
        met.setup(uniform_noise((1, c, h, w), seed + i).to(dev), optimizer_kwargs={"lr": lr, "amsgrad": True})
        done = 0
        bar = tqdm(total=iters, desc=f"PS synthesis[{i}]", disable=not progress, leave=False)
        while done < iters:
            n = min(chunk, iters - done)
            met.synthesize(max_iter=n, change_scale_criterion=None, ctf_iters_to_check=ctf_iters,
                           stop_criterion=1e-12)
            done += n
            bar.update(n)
            step += n
            if callback is not None:
                state = {"image": met.metamer.detach()[0].clamp(0, 1).cpu(), "sample": i, "iteration": done}
                if callback(step, float(met.losses[-1]), state):
                    stopped = True
                    break
        bar.close()
        images.append(met.metamer.detach()[0].clamp(0, 1).cpu())
        losses.append([float(v) for v in met.losses])
        iterations.append(len(met.losses))
        if stopped:
            break
    return SynthesisResult(
        images=torch.stack(images), losses=losses, iterations=iterations, seconds=time.perf_counter() - t0,
        stopped=stopped, evaluations=list(iterations),
        meta={"method": "plenoptic MetamerCTF (Adam)", "model": f"PortillaSimoncelli(n_scales={n_scales})",
              "seed": seed, "size": (h, w), "device": str(dev)},
    )
