"""Texture inpainting (appendix A, Fig. 7).

Take a patch of the texture, keep a frame of relative width ``frame`` (10%, 15%, 20% in
Fig. 7) around its border, replace the inside by uniform noise and optimise only the
inside pixels so that the whole patch matches a target Gram matrix, either

- ``'regular'``: the Gram matrix of the patch itself (whose frame we keep), or
- ``'estimate'``: the mean Gram matrix over many (500 in the paper) random patches of the
  same size from the texture.

Optimisation as in section 4 (L-BFGS-B, box [0, 1]; the frame pixels are fixed by equal
lower and upper bounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reprlab.textures.metrics import random_patches
from reprlab.textures.model import TextureModel
from reprlab.textures.synthesis import Callback, _check_image, optimize_image, uniform_noise

MODES = ("regular", "estimate")


@dataclass
class InpaintingResult:
    """``image`` the inpainted patch, ``original`` the true patch, ``init`` the start (frame +
    noise), ``mask`` the free (inpainted) pixels (H, W), ``losses`` per iteration."""

    image: torch.Tensor
    original: torch.Tensor
    init: torch.Tensor
    mask: torch.Tensor
    losses: list[float]
    mode: str
    frame: float
    stopped: bool = False


def frame_mask(size: int, frame: float) -> torch.Tensor:
    """Bool (size, size) mask, True inside (to inpaint), False on a border of width round(frame*size)."""
    if not 0 < frame < 0.5:
        raise ValueError(f"frame must be a fraction in (0, 0.5), got {frame!r}")
    wdt = max(1, int(round(frame * size)))
    m = torch.zeros(size, size, dtype=torch.bool)
    m[wdt:size - wdt, wdt:size - wdt] = True
    return m


def inpaint(
    texture: torch.Tensor,
    model: TextureModel,
    *,
    patch_size: int = 128,
    frame: float = 0.15,
    mode: str = "regular",
    n_patches: int = 500,
    iters: int = 2000,
    seed: int = 0,
    method: str = "lbfgsb",
    device: torch.device | str | None = None,
    callback: Callback | None = None,
    progress: bool = True,
) -> InpaintingResult:
    """Inpaint the inside of a random ``patch_size`` patch of ``texture`` (C, H, W) (Fig. 7)."""
    texture = _check_image(texture, "texture")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if texture.shape[0] != model.in_channels:
        raise ValueError(f"model expects {model.in_channels} channels, texture has {texture.shape[0]}")
    if min(texture.shape[1:]) < patch_size:
        raise ValueError(f"texture {tuple(texture.shape[1:])} is smaller than patch_size {patch_size}")
    mask = frame_mask(patch_size, frame)
    original = random_patches(texture, 1, patch_size, seed=seed)[0]
    init = torch.where(mask, uniform_noise(tuple(original.shape), seed), original)
    dev = torch.device(device) if device is not None else None
    from reprlab._device import device as pick_device

    dev = dev or pick_device()
    model = model.to(dev)
    with torch.no_grad():
        if mode == "regular":
            tg = model.grams(original.to(dev))[0]
        else:
            if n_patches < 1:
                raise ValueError(f"n_patches must be >= 1, got {n_patches}")
            pats = random_patches(texture, n_patches, patch_size, seed=seed + 1)
            tg = torch.zeros(model.n_maps, model.n_maps, device=dev)
            for k in range(0, n_patches, 8):
                tg += model.grams(pats[k:k + 8].to(dev)).sum(0)
            tg /= n_patches
    out = optimize_image(model, tg, init, iters=iters, method=method, free_mask=mask, callback=callback,
                         progress=progress, device=dev)
    return InpaintingResult(image=out["image"], original=original, init=init, mask=mask, losses=out["losses"],
                            mode=mode, frame=frame, stopped=out["stopped"])
