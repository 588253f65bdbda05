"""Most exciting images (digital-twin paper, Methods eqs. 3-8).

* :func:`neuron_meis` - eq. (3): ``x_n = argmax_x f_n(x) - γ ||x||²`` by gradient ascent from
  noise, for *all* neurons at once (one batch row per neuron), with an L2-norm budget (projection
  after every step), a pixel range of [-0.5, 0.5] and Gaussian smoothing of the gradient
  (Walker et al. 2019). On the twin (:class:`~reprlab.v1.insilico.EquivariantModel`) each
  neuron's MEI lives on the ``(2R+1)^2`` patch its receptive field can see, centred on its RF, so
  a step costs one small valid core pass per neuron; any other differentiable response model
  works on full images.
* :func:`cluster_meis` - eqs. (4)-(8): one image per cluster, ``x = β^T Ψ`` in the Hermite
  steerable basis (:mod:`reprlab.v1.hermite`), rotated for each neuron by the angle that drives
  it most (``max_φ``, eq. 7) and shifted to its RF centre (eq. 8), maximising the cluster's mean
  response. Rotations by ``j 2π/(O J)`` are a linear map of ``β`` for the ``J`` sub-angles and a
  channel shift of the readout for the ``O`` sectors, so one step costs ``K·J`` core passes
  for all ``K`` clusters and all their neurons.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from reprlab.scales import pick
from reprlab.v1.hermite import HermiteBasis
from reprlab.v1.insilico import EquivariantModel, ResponseModel, paste_at

__all__ = ["MEIConfig", "MEIResult", "cluster_meis", "mei_config", "neuron_meis", "rotate_patch_coefficients"]


@dataclass
class MEIConfig:
    """Optimisation settings for eq. (3) and eqs. (4)-(8).

    ``norm`` is the L2 budget of an MEI in stimulus units (a full-contrast Gabor of size 9 px
    has norm ~2.5); ``gamma`` the weight of ``||x||²`` in eq. (3); ``blur`` the std (pixels) of
    the Gaussian applied to gradients; ``n_max`` the Hermite ranks of cluster MEIs and
    ``angle_substeps`` the ``J`` sub-angles per ``2π/O`` sector. Per-neuron MEIs use normalised
    gradient steps of ``lr x norm`` (linearly decayed to 10 %), cluster MEIs Adam with ``cluster_lr``."""

    steps: int = 200
    lr: float = 0.1
    norm: float = 2.5
    gamma: float = 0.0
    blur: float = 1.0
    init_std: float = 0.02
    cluster_steps: int = 150
    cluster_lr: float = 0.05
    n_max: int = 8
    angle_substeps: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.cluster_steps < 1:
            raise ValueError("MEIConfig.steps and cluster_steps must be >= 1")
        if self.norm <= 0 or self.lr <= 0 or self.cluster_lr <= 0:
            raise ValueError("MEIConfig.norm, lr and cluster_lr must be > 0")
        if self.angle_substeps < 1 or self.n_max < 1:
            raise ValueError("MEIConfig.angle_substeps and n_max must be >= 1")


MEI_PRESETS = {
    "smoke": dict(steps=30, cluster_steps=25, n_max=5, angle_substeps=1, cluster_lr=0.1),
    "default": dict(steps=150, cluster_steps=100),
    "paper": dict(steps=1000, cluster_steps=500, n_max=12, angle_substeps=3, lr=0.05, cluster_lr=0.02),
}


def mei_config(scale: str | None = None, **overrides: Any) -> MEIConfig:
    return MEIConfig(**pick(MEI_PRESETS, scale, **overrides))


@dataclass
class MEIResult:
    """``images (N or K, H, W)`` full-size MEIs; ``patches`` the optimised patches; ``response``
    the model's rate to each MEI; ``history`` mean response per step; extras per method."""

    images: np.ndarray
    patches: np.ndarray
    response: np.ndarray
    history: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _gauss_kernel(sigma: float) -> torch.Tensor | None:
    if sigma <= 0:
        return None
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    return (k[:, None] * k[None, :])[None, None]


def _blur(g: torch.Tensor, kernel: torch.Tensor | None) -> torch.Tensor:
    if kernel is None:
        return g
    r = kernel.shape[-1] // 2
    return F.conv2d(F.pad(g[:, None], (r, r, r, r), mode="reflect"), kernel.to(g))[:, 0]


def _project(x: torch.Tensor, norm: float) -> torch.Tensor:
    n = x.flatten(1).norm(dim=1).clamp_min(1e-8)
    x = x * torch.clamp(norm / n, max=1.0)[:, None, None]
    return x.clamp(-0.5, 0.5)


def neuron_meis(model: ResponseModel, neurons: Any = None, config: MEIConfig | None = None,
                progress: bool = False, callback: Callable[[int, float, dict], Any] | None = None) -> MEIResult:
    """Per-neuron MEIs, eq. (3), optimised for all ``neurons`` at once (see module docstring).

    Returns full images ``(N, H, W)`` (for the twin: the ``d(2R+2)`` crop around the RF centre
    whose bilinear read-out is exactly the neuron's response),
    the patches, the final responses and the mean-response history. ``callback(step, loss,
    state)`` returning True stops early."""
    cfg = config or mei_config()
    idx = torch.arange(model.n_neurons) if neurons is None else torch.as_tensor(np.asarray(neurons), dtype=torch.long).reshape(-1)
    if len(idx) == 0:
        raise ValueError("neurons must select at least one neuron")
    if idx.min() < 0 or idx.max() >= model.n_neurons:
        raise ValueError(f"neuron indices must be in [0, {model.n_neurons})")
    gen = torch.Generator().manual_seed(int(cfg.seed))
    twin = isinstance(model, EquivariantModel)
    if twin:
        s = model.crop_size(2)  # the crop whose bilinear read-out is the neuron's response
        shape = (s, s)
        origin, frac, mask = model._crop_frame(idx)
    else:
        shape = tuple(model.image_shape)
    x = (torch.randn(len(idx), *shape, generator=gen) * cfg.init_std)
    x = _project(x, cfg.norm).requires_grad_(True)
    kern = _gauss_kernel(cfg.blur)
    history: list[float] = []

    def respond(z: torch.Tensor) -> torch.Tensor:
        if twin:
            return model._diag_crops(z, idx, frac, mask, grad=True)
        with torch.enable_grad():
            r = model.responses(z)
        return r.gather(1, idx[:, None].to(r.device))[:, 0]

    for step in tqdm(range(cfg.steps), disable=not progress, desc="neuron MEIs"):
        if x.grad is not None:
            x.grad = None
        r = respond(x)
        loss = -r.sum() + cfg.gamma * x.pow(2).sum()
        loss.backward()
        with torch.no_grad():
            # normalised gradient ascent (step = lr x norm budget), smoothed gradient, decaying lr
            g = _blur(-x.grad, kern)
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
            lr = cfg.lr * (1.0 - 0.9 * step / max(cfg.steps - 1, 1))
            x.add_(g, alpha=lr * cfg.norm)
            x.copy_(_project(x, cfg.norm))
        history.append(float(r.detach().mean()))
        if callback is not None and callback(step, float(loss.detach()), {"mean_response": history[-1]}):
            break
    with torch.no_grad():
        patches = x.detach().clone()
        final = respond(patches).detach().cpu()
        if twin:
            patches = patches * mask  # pixels off the screen do not exist
            imgs = paste_at(patches, origin, model.image_shape)
        else:
            imgs = patches
    return MEIResult(imgs.numpy().astype(np.float32), patches.numpy().astype(np.float32), final.numpy(), history)


def _stimulus_sign(basis: HermiteBasis) -> float:
    """+1 or -1: the sign of the Hermite angle that rotates like the stimuli module's orientation
    (clockwise on the display, ``gabor(φ + π/2) == rot90(gabor(φ), -1)``), checked numerically."""
    g = torch.Generator().manual_seed(0)
    c = torch.randn(basis.n_basis, generator=g, dtype=basis.basis.dtype)
    img = basis.synthesize(c)
    target = torch.rot90(img, -1, dims=(-2, -1))
    errs = {sg: float((basis.synthesize(basis.rotation_matrix(sg * math.pi / 2) @ c) - target).abs().max())
            for sg in (1.0, -1.0)}
    return min(errs, key=errs.get)


def rotate_patch_coefficients(basis: HermiteBasis, coeffs: torch.Tensor, angle: float | torch.Tensor) -> torch.Tensor:
    """Coefficients of the image rotated by ``angle`` in the *stimulus* sense (eq. 5), i.e. like
    the orientation of :func:`reprlab.v1.stimuli.gabor` (clockwise on the display)."""
    R = basis.rotation_matrix(_stimulus_sign(basis) * torch.as_tensor(angle, dtype=basis.basis.dtype))
    return torch.einsum("...ij,...j->...i", R, coeffs)


def cluster_meis(model: EquivariantModel, labels: Any, config: MEIConfig | None = None, progress: bool = False,
                 callback: Callable[[int, float, dict], Any] | None = None) -> MEIResult:
    """Per-cluster MEIs, eqs. (4)-(8), all clusters optimised jointly (see module docstring).

    Returns canonical images ``(K, H, W)`` (at the image centre, angle 0), the patches, the mean
    cluster response, and in ``extra``: ``coefficients (K, n_b)``, ``per_neuron (N,)`` rate of
    each neuron to its cluster MEI at its best angle, ``angle (N,)`` that angle (radians,
    stimulus sense)."""
    if not isinstance(model, EquivariantModel):
        raise ValueError("cluster_meis needs an EquivariantModel (the twin's core + readout)")
    cfg = config or mei_config()
    lab = np.asarray(labels).astype(np.int64).reshape(-1)
    if lab.shape[0] != model.n_neurons:
        raise ValueError(f"labels must have one entry per neuron ({model.n_neurons}), got {lab.shape[0]}")
    if (lab < 0).any():
        raise ValueError("cluster labels must be >= 0")
    K = int(lab.max()) + 1
    s = model.patch_size
    half = model.half_width
    sigma = 0.85 * half / math.sqrt(2 * (cfg.n_max - 1) + 1) if cfg.n_max > 1 else half / 2
    basis = HermiteBasis((s, s), cfg.n_max, sigma=sigma)
    O, J = model.n_rotations, cfg.angle_substeps
    delta = 2 * math.pi / O
    sub = torch.arange(J, dtype=torch.float32) * delta / J
    Rs = basis.rotation_matrix(_stimulus_sign(basis) * sub)  # (J, nb, nb): stimulus-sense rotation by sub[j]
    rot_basis = torch.einsum("jab,ahw->jbhw", Rs, basis.basis)  # image(j) = sum_b beta_b rot_basis[j, b]
    gen = torch.Generator().manual_seed(int(cfg.seed) + 1)
    beta = torch.randn(K, basis.n_basis, generator=gen) * 0.1
    lab_t = torch.as_tensor(lab)
    counts = torch.bincount(lab_t, minlength=K).clamp_min(1).float()
    Wn = model.weights  # (N, F, O)
    dev = model.device
    # W rolled for every sector k: (O, N, F, O)
    Wr = torch.stack([Wn.roll(-k * model.rotation_shift, dims=2) for k in range(O)]).reshape(O, model.n_neurons, -1)
    bias = model.bias

    def images(b: torch.Tensor) -> torch.Tensor:
        img = torch.einsum("kb,jbhw->kjhw", b, rot_basis)  # (K, J, s, s)
        n = img[:, 0].flatten(1).norm(dim=1).clamp_min(1e-8)
        return img * (cfg.norm / n)[:, None, None, None]

    def rates(b: torch.Tensor) -> torch.Tensor:
        img = images(b).clamp(-0.5, 0.5)
        z = model._features_valid(img.reshape(K * J, s, s))  # (K*J, F, O, 1, 1)
        z = z[..., 0, 0].reshape(K, J, -1)  # (K, J, C)
        zn = z[lab_t.to(dev)]  # (N, J, C): each neuron sees its cluster's image
        drive = torch.einsum("njc,knc->nkj", zn, Wr) + bias[:, None, None]
        return model.nonlinearity(drive).reshape(model.n_neurons, O * J)  # angle index k*J + j

    beta = beta.to(dev).requires_grad_(True)
    opt = torch.optim.Adam([beta], lr=cfg.cluster_lr)
    history: list[float] = []
    for step in tqdm(range(cfg.cluster_steps), disable=not progress, desc="cluster MEIs"):
        opt.zero_grad()
        r = rates(beta).max(1).values  # eq. (7): max over each neuron's angle
        per_cluster = torch.zeros(K, device=dev).index_add(0, lab_t.to(dev), r) / counts.to(dev)
        loss = -per_cluster.sum()
        loss.backward()
        opt.step()
        history.append(float(per_cluster.detach().mean()))
        if callback is not None and callback(step, float(loss.detach()), {"mean_response": history[-1]}):
            break
    with torch.no_grad():
        r_all = rates(beta)
        best, arg = r_all.max(1)
        k_idx, j_idx = arg // J, arg % J
        angle = (k_idx.float() * delta + sub[j_idx.cpu()].to(k_idx.device).float()).cpu()
        per_cluster = torch.zeros(K).index_add(0, lab_t, best.cpu()) / counts
        img0 = images(beta)[:, 0].clamp(-0.5, 0.5).cpu()
        H, W = model.image_shape
        origin = torch.tensor([[(W - s) // 2, (H - s) // 2]], dtype=torch.float32).expand(K, 2)
        full = paste_at(img0, origin, (H, W))
        coeffs = (beta * (cfg.norm / torch.einsum("kb,bhw->khw", beta, basis.basis).flatten(1).norm(dim=1)
                          .clamp_min(1e-8))[:, None]).cpu()
    return MEIResult(full.numpy().astype(np.float32), img0.numpy().astype(np.float32), per_cluster.numpy(), history,
                     dict(coefficients=coeffs.numpy(), per_neuron=best.cpu().numpy(), angle=angle.numpy(),
                          n_max=cfg.n_max, sigma=sigma))
