"""Texture synthesis (paper section 4): match the Gram matrices of a reference texture.

Start from uniform noise in [0, 1] and minimise eq. (5) with L-BFGS-B (scipy) under the box
constraint [0, 1], all optimiser settings at their defaults except ``maxiter`` (2000 in the
paper); the loss and its gradient are scaled by 1e7 so that the optimiser does not stop
early. ``method='torch'`` is a torch-native alternative for GPUs: projected Adam (a step,
then clipping to the box).

The optional ``callback(step, loss, state)`` is called on EVERY function evaluation, after
the forward pass and before the backward pass, with the unscaled loss and
``state = {'image': (C, H, W) CPU tensor, 'sample': i, 'iteration': k, 'evaluation': step}``.
Returning True stops the synthesis at once (it aborts scipy from inside the objective),
so a Stop button takes effect within one forward pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from reprlab._device import device as pick_device
from reprlab.textures.model import TextureModel

LOSS_SCALE = 1e7
METHODS = ("lbfgsb", "torch")

Callback = Callable[[int, float, dict], "bool | None"]


@dataclass
class SynthesisResult:
    """Synthesised images (n_samples, C, H, W) in [0, 1] and their optimisation record.

    ``losses[i]`` is sample i's eq. (5) loss after each optimiser iteration; ``iterations[i]``
    its number of iterations; ``stopped`` is True when the callback asked to stop, and then
    ``images`` holds the samples finished so far plus the interrupted one (its best point).
    """

    images: torch.Tensor
    losses: list[list[float]]
    iterations: list[int]
    seconds: float
    stopped: bool = False
    evaluations: list[int] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def final_losses(self) -> list[float]:
        """Loss of each sample's returned image (NaN when a sample never ran)."""
        return [ls[-1] if ls else float("nan") for ls in self.losses]


class _Stop(Exception):
    """Raised inside the objective when the callback asks to stop."""


def uniform_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The paper's starting point: i.i.d. uniform noise in [0, 1] (CPU float32, seeded)."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(int(seed)))


def _check_image(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor (C, H, W), got {type(x).__name__}")
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"{what} must have shape (1|3, H, W), got {tuple(x.shape)}")
    if x.shape[1] < 3 or x.shape[2] < 3:
        raise ValueError(f"{what} is too small: {tuple(x.shape[1:])}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return x


def optimize_image(
    model: TextureModel,
    target_grams: torch.Tensor,
    init: torch.Tensor,
    **kwargs,
) -> dict:
    """Minimise eq. (5) of ``model`` towards ``target_grams`` from ``init`` (C, H, W) in the box
    [0, 1]: :func:`minimize_image` with the texture loss (keywords as there)."""
    tg = target_grams.detach()

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        return model.loss(x, tg)

    dev = kwargs.get("device")
    dev = torch.device(dev) if dev is not None else pick_device()
    model.to(dev)
    tg = tg.to(dev, torch.float32)
    kwargs["device"] = dev
    return minimize_image(loss_fn, init, **kwargs)


def minimize_image(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    init: torch.Tensor,
    *,
    iters: int = 2000,
    method: str = "lbfgsb",
    free_mask: torch.Tensor | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    sample: int = 0,
    step_offset: int = 0,
    lr: float = 0.02,
    device: torch.device | None = None,
) -> dict:
    """Minimise ``loss_fn(image)`` over images in the box [0, 1], from ``init`` (C, H, W).

    The engine under :func:`synthesize` (and the PS baseline and inpainting): L-BFGS-B
    (scipy, loss and gradient scaled by 1e7) or projected Adam. ``free_mask`` (H, W or
    C, H, W; bool) marks the pixels that may change (inpainting); the others stay at their
    ``init`` values. Returns a dict with 'image' (CPU), 'losses' (per iteration),
    'iterations', 'evaluations', 'stopped', 'message'.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive int, got {iters!r}")
    dev = torch.device(device) if device is not None else pick_device()
    init = init.detach().float().clamp(0, 1).to(dev)
    shape = tuple(init.shape)
    fixed = None
    if free_mask is not None:
        fm = free_mask.to(dev).bool()
        if fm.ndim == 2:
            fm = fm.expand(shape)
        if tuple(fm.shape) != shape:
            raise ValueError(f"free_mask must be (H, W) or {shape}, got {tuple(free_mask.shape)}")
        fixed = ~fm
    from tqdm.auto import tqdm

    bar = tqdm(total=iters, desc=f"synthesis[{sample}]", disable=not progress, leave=False)
    record = {"losses": [], "evaluations": 0, "iterations": 0, "last_loss": math.nan}

    def evaluate(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        loss = loss_fn(x)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError("texture loss became NaN/inf")
        step = step_offset + record["evaluations"]
        record["evaluations"] += 1
        record["last_loss"] = value
        if callback is not None:
            state = {"image": x.detach().cpu(), "sample": sample, "iteration": record["iterations"],
                     "evaluation": step, "loss": value}
            if callback(step, value, state):
                raise _Stop
        (grad,) = torch.autograd.grad(loss, x)
        if fixed is not None:
            grad = grad.masked_fill(fixed, 0.0)
        return loss.detach(), grad

    best = {"x": init.clone(), "f": math.inf}
    stopped = False
    try:
        if method == "lbfgsb":
            from scipy.optimize import minimize

            def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
                x = torch.from_numpy(v.reshape(shape)).to(dev, torch.float32)
                loss, grad = evaluate(x)
                f = float(loss)
                if f < best["f"]:
                    best["f"], best["x"] = f, x.detach().clone()
                return f * LOSS_SCALE, grad.double().cpu().numpy().ravel() * LOSS_SCALE

            def on_iter(intermediate_result) -> None:
                record["iterations"] += 1
                record["losses"].append(float(intermediate_result.fun) / LOSS_SCALE)
                bar.update(1)
                bar.set_postfix(loss=f"{record['losses'][-1]:.3g}")

            lo = np.zeros(int(np.prod(shape)))
            hi = np.ones_like(lo)
            if fixed is not None:
                fixed_np = fixed.cpu().numpy().ravel()
                v0 = init.cpu().double().numpy().ravel()
                lo[fixed_np] = v0[fixed_np]
                hi[fixed_np] = v0[fixed_np]
            from threadpoolctl import threadpool_limits

            # scipy's BLAS threads follow torch's thread count (oversubscription stalls otherwise)
            with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
                res = minimize(fun, init.cpu().double().numpy().ravel(), jac=True, method="L-BFGS-B",
                               bounds=np.stack([lo, hi], 1), callback=on_iter, options={"maxiter": iters})
            x_final = torch.from_numpy(res.x.reshape(shape)).float()
            f_final = float(res.fun) / LOSS_SCALE
            if best["f"] < f_final:  # never return worse than the best evaluated point
                x_final, f_final = best["x"].cpu(), best["f"]
            record["message"] = str(res.message)
        else:
            x = init.clone().requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            for _ in range(iters):
                opt.zero_grad(set_to_none=True)
                loss, grad = evaluate(x)
                f = float(loss)
                if f < best["f"]:
                    best["f"], best["x"] = f, x.detach().clone()
                x.grad = grad
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
                    if fixed is not None:
                        x[fixed] = init[fixed]
                record["iterations"] += 1
                record["losses"].append(f)
                bar.update(1)
            with torch.no_grad():
                f_end = float(loss_fn(x))
            x_final, f_final = (x.detach().cpu(), f_end) if f_end <= best["f"] else (best["x"].cpu(), best["f"])
            record["message"] = "max iterations"
    except _Stop:
        stopped = True
        x_final = best["x"].cpu() if math.isfinite(best["f"]) else init.cpu()
        f_final = best["f"] if math.isfinite(best["f"]) else record["last_loss"]
        record["message"] = "stopped by callback"
    finally:
        bar.close()
    losses = list(record["losses"])
    if math.isfinite(f_final) and (not losses or losses[-1] != f_final):
        losses.append(f_final)
    return {"image": x_final.clamp(0, 1), "losses": losses, "iterations": record["iterations"],
            "evaluations": record["evaluations"], "stopped": stopped, "message": record.get("message", "")}


def synthesize(
    target: torch.Tensor,
    model: TextureModel | None = None,
    *,
    size: int | tuple[int, int] | None = None,
    iters: int = 2000,
    seed: int = 0,
    n_samples: int = 1,
    method: str = "lbfgsb",
    device: torch.device | str | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    init: torch.Tensor | None = None,
    lr: float = 0.02,
) -> SynthesisResult:
    """Synthesise ``n_samples`` textures matching the Gram matrices of ``target`` (section 4).

    target: reference texture (C, H, W) in [0, 1], C = 1 or 3.
    model: a :class:`TextureModel`; default Random-Multiscale (seed 0, ReLU) for target's C.
    size: output side (int) or (H, W); default the target's size. The Gram matrices are
        averages over positions, so any size can be synthesised from any reference.
    iters: maximum optimiser iterations per sample (paper: 2000).
    seed: sample i starts from uniform noise seeded with ``seed + i``.
    method: 'lbfgsb' (scipy, the paper) or 'torch' (projected Adam with learning rate ``lr``).
    callback: ``callback(step, loss, state) -> bool | None`` on every evaluation; True stops.
    init: optional start image(s) (C, H, W) or (n_samples, C, H, W) instead of noise.
    """
    t0 = time.perf_counter()
    target = _check_image(target, "target")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if float(target.min()) < 0 or float(target.max()) > 1:
        raise ValueError(f"target values must lie in [0, 1], found [{float(target.min()):.3g}, {float(target.max()):.3g}]")
    c = int(target.shape[0])
    if model is None:
        from reprlab.textures.filterbanks import random_multiscale_bank

        model = TextureModel(random_multiscale_bank(in_channels=c, seed=0))
    if not isinstance(model, TextureModel):
        raise ValueError(f"model must be a TextureModel, got {type(model).__name__}")
    if model.in_channels != c:
        raise ValueError(f"model expects {model.in_channels}-channel images but target has {c} channels")
    if size is None:
        hw = (int(target.shape[1]), int(target.shape[2]))
    elif isinstance(size, int) and not isinstance(size, bool):
        hw = (size, size)
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        hw = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size must be an int, (H, W) or None, got {size!r}")
    if min(hw) < 3:
        raise ValueError(f"size must be at least 3 pixels, got {hw}")
    if init is not None:
        init = init.detach().float()
        if init.ndim == 3:
            init = init[None].expand(n_samples, *init.shape)
        if tuple(init.shape) != (n_samples, c, *hw):
            raise ValueError(f"init must be ({c}, {hw[0]}, {hw[1]}) or ({n_samples}, {c}, {hw[0]}, {hw[1]}), got {tuple(init.shape)}")
    dev = torch.device(device) if device is not None else pick_device()
    model = model.to(dev)
    with torch.no_grad():
        tg = model.grams(target.to(dev))[0]

    return run_samples(
        lambda i, step: optimize_image(model, tg, init[i] if init is not None else uniform_noise((c, *hw), seed + i),
                                       iters=iters, method=method, callback=callback, progress=progress, sample=i,
                                       step_offset=step, lr=lr, device=dev),
        n_samples, t0,
        meta={"method": method, "seed": seed, "size": hw, "model": repr(model.bank), "nonlinearity": model.nonlinearity,
              "device": str(dev)},
    )


def run_samples(optimize_one: Callable[[int, int], dict], n_samples: int, t0: float, meta: dict) -> SynthesisResult:
    """Optimise samples 0..n_samples-1 in turn with ``optimize_one(i, step_offset)`` (a
    :func:`minimize_image` report) and collect them; stops after a sample the callback stopped."""
    images, losses, iterations, evaluations = [], [], [], []
    stopped, step = False, 0
    for i in range(n_samples):
        out = optimize_one(i, step)
        step += out["evaluations"]
        images.append(out["image"])
        losses.append(out["losses"])
        iterations.append(out["iterations"])
        evaluations.append(out["evaluations"])
        if out["stopped"]:
            stopped = True
            break
    return SynthesisResult(images=torch.stack(images), losses=losses, iterations=iterations,
                           seconds=time.perf_counter() - t0, stopped=stopped, evaluations=evaluations, meta=meta)
