"""In silico experiments on a digital twin (digital-twin paper, Methods eqs. 1-2 and 9-18).

Everything here works with any *response model*: a callable population ``f(stimuli (B, H, W))
-> (B, N)`` wrapped in :class:`FunctionModel`, the ground-truth :class:`PopulationModel`, or the
fast :class:`EquivariantModel` view of a rotation-equivariant twin (core + point readout).

Why the twin is fast (the point of a digital twin)
--------------------------------------------------
A neuron of the twin reads the core's feature vector ``Φ(x)[:, :, p_n]`` (``F x O`` values) at
its RF position ``p_n``. The core is translation-equivariant, and rotating the input by a
multiple of ``2π/O`` cyclically shifts the orientation axis ``O``. Hence

* the response of *every* neuron to a stimulus centred on its own RF equals its readout of the
  feature vector at the centre of *one* centred copy of the stimulus (one core pass for all
  neurons, :meth:`EquivariantModel.bank`), and an offset ``e`` of the stimulus is a read at
  ``c - e`` of the same feature map;
* rotations by ``k·2π/O`` are channel shifts: one core pass per orientation *within* one sector
  ``[0, 2π/O)``; the ``O`` rotations are ``O`` rolled copies of the readout weights;
* the core only needs the crop that a neuron can see: its receptive field is
  ``2R+1`` pixels wide (``R = Σ (k_l - 1)/2`` over the layers' kernels), so a core pass without
  padding ("valid") on a ``(2R+w) x (2R+w)`` crop gives exactly the full model's ``w x w``
  central feature window, 10-30x fewer multiply-adds than a full-image pass.

Per-neuron stimuli (tuning curves) use :meth:`ResponseModel.diag`: the response of neuron
``n_b`` to stimulus ``b`` only, which for the twin is one valid core pass on the neuron's crop.

Parameters and conventions
--------------------------
Gabor parameters are rows ``(center_x, center_y, size, spatial_frequency, contrast,
orientation, phase)`` (:data:`GABOR_PARAMS`, conventions of :mod:`reprlab.v1.stimuli`);
DoG parameters ``(center_x, center_y, sigma_center, sigma_surround, contrast_center,
contrast_surround)`` (:data:`DOG_PARAMS`, eqs. 9-10). Orientations are reported in ``[0, π)``
(``(φ + π, τ) ≡ (φ, -τ)``), phases in ``[0, 2π)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from reprlab.scales import pick
from reprlab.v1 import stimuli as stim

__all__ = [
    "ApertureModel",
    "DOG_PARAMS",
    "GABOR_PARAMS",
    "INDEX_NAMES",
    "DogGrid",
    "EquivariantModel",
    "ExperimentConfig",
    "FunctionModel",
    "GaborGrid",
    "OptimalStimuli",
    "PopulationModel",
    "ResponseModel",
    "canonical_gabor",
    "cluster_dog_params",
    "cluster_gabor_params",
    "cluster_optimal_dogs",
    "cluster_optimal_gabors",
    "contrast_index",
    "dog_grid",
    "energy_comparison",
    "experiment_config",
    "fk_f0",
    "gabor_candidates",
    "gabor_grid",
    "natural_surround_probe",
    "nonlinearity_index",
    "optimal_dogs",
    "optimal_gabors",
    "orientation_phase_tuning",
    "paste_at",
    "paste_patches",
    "plaid_index",
    "plaid_tuning",
    "render_dogs",
    "render_gabors",
    "run_experiments",
    "size_contrast_tuning",
    "suppression_index",
]

GABOR_PARAMS: tuple[str, ...] = (
    "center_x", "center_y", "size", "spatial_frequency", "contrast", "orientation", "phase",
)
DOG_PARAMS: tuple[str, ...] = (
    "center_x", "center_y", "sigma_center", "sigma_surround", "contrast_center", "contrast_surround",
)
INDEX_NAMES: tuple[str, ...] = (
    "orientation", "phase", "f2_f0_phase", "suppression", "contrast", "plaid",
    "gabor_vs_dog", "gabor_vs_mei", "dog_vs_mei",
)
"""Per-neuron indices: ``orientation`` = F2/F0 of orientation tuning, ``phase`` = F1/F0 of phase
tuning (eq. 11), ``suppression`` (eq. 12), ``contrast`` (eq. 13), ``plaid`` (COI, eq. 14), the
energy ratios (eqs. 15-17); ``nonlinearity`` (eq. 18) is added when GLM correlations are known."""

Callback = Callable[[int, float, dict], Any]


# =========================================================================== response models
class ResponseModel:
    """A population ``stimuli (B, H, W) -> rates (B, N)`` with a per-neuron evaluator.

    Subclasses implement :meth:`responses`; :meth:`diag` (neuron ``neurons[b]`` to stimulus
    ``b``) defaults to computing all neurons and gathering. ``centers`` (N, 2) are RF centres
    ``(x, y)`` in pixels when known (needed by searches that place stimuli on the RF).
    """

    n_neurons: int
    image_shape: tuple[int, int]
    centers: torch.Tensor | None = None
    batch_size: int = 256

    def responses(self, stimuli: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def diag(self, stimuli: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        """Responses ``(B,)`` of neuron ``neurons[b]`` to ``stimuli[b]`` (full images)."""
        stimuli, neurons = self._check_diag(stimuli, neurons)
        out = []
        for s in range(0, len(stimuli), self.batch_size):
            r = self.responses(stimuli[s:s + self.batch_size])
            out.append(r.gather(1, neurons[s:s + self.batch_size, None])[:, 0])
        return torch.cat(out) if out else stimuli.new_zeros(0)

    def _check_diag(self, stimuli: Any, neurons: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(stimuli, dtype=torch.float32)
        if x.dim() != 3 or tuple(x.shape[-2:]) != tuple(self.image_shape):
            raise ValueError(f"stimuli must be (B, {self.image_shape[0]}, {self.image_shape[1]}), got {tuple(x.shape)}")
        idx = torch.as_tensor(neurons, dtype=torch.long).reshape(-1)
        if idx.shape[0] != x.shape[0]:
            raise ValueError(f"need one neuron index per stimulus, got {idx.shape[0]} for {x.shape[0]} stimuli")
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n_neurons):
            raise ValueError(f"neuron indices must be in [0, {self.n_neurons}), found [{int(idx.min())}, {int(idx.max())}]")
        return x, idx

    # Stimuli rendered relative to each neuron ---------------------------------------------
    def diag_gabors(self, params: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        """Responses ``(B,)`` of neuron ``neurons[b]`` to the Gabor ``params[b]`` (image coords)."""
        return self._diag_render(render_gabors, params, neurons)

    def diag_plaids(self, params: torch.Tensor, contrast_orth: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        """Plaids: Gabor ``params[b]`` plus its orthogonal copy at contrast ``contrast_orth[b]``."""
        def render(p: torch.Tensor, shape: Sequence[int], origin: torch.Tensor | None = None) -> torch.Tensor:
            return _render_plaid(p, shape, origin)
        p = torch.cat([torch.as_tensor(params, dtype=torch.float32),
                       torch.as_tensor(contrast_orth, dtype=torch.float32).reshape(-1, 1)], 1)
        return self._diag_render(render, p, neurons)

    def diag_dogs(self, params: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        return self._diag_render(render_dogs, params, neurons)

    def diag_patches(self, patches: torch.Tensor, neurons: torch.Tensor, centers: torch.Tensor | None = None) -> torch.Tensor:
        """Responses to image ``patches (B, h, w)`` pasted with their centre pixel on
        ``centers[b]`` (default: the neuron's RF centre), rounded to whole pixels."""
        patches = torch.as_tensor(patches, dtype=torch.float32)
        neurons = torch.as_tensor(neurons, dtype=torch.long).reshape(-1)
        c = self._centers_for(neurons, centers)
        out = []
        for s in range(0, len(patches), self.batch_size):
            imgs = paste_patches(patches[s:s + self.batch_size], c[s:s + self.batch_size], self.image_shape)
            out.append(self.diag(imgs, neurons[s:s + self.batch_size]))
        return torch.cat(out) if out else patches.new_zeros(0)

    def _centers_for(self, neurons: torch.Tensor, centers: torch.Tensor | None) -> torch.Tensor:
        if centers is not None:
            c = torch.as_tensor(centers, dtype=torch.float32).reshape(-1, 2)
            if c.shape[0] != neurons.shape[0]:
                raise ValueError(f"centers must be (B, 2) with B = {neurons.shape[0]}, got {tuple(c.shape)}")
            return c
        if self.centers is None:
            raise ValueError("this model has no RF centres; pass centers=(B, 2) explicitly")
        return self.centers[neurons]

    def _diag_render(self, render: Callable, params: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        params = torch.as_tensor(params, dtype=torch.float32)
        neurons = torch.as_tensor(neurons, dtype=torch.long).reshape(-1)
        out = []
        for s in range(0, len(params), self.batch_size):
            imgs = render(params[s:s + self.batch_size], self.image_shape)
            out.append(self.diag(imgs, neurons[s:s + self.batch_size]))
        return torch.cat(out) if out else params.new_zeros(0)


class FunctionModel(ResponseModel):
    """Wrap a generic population ``f(stimuli (B, H, W)) -> (B, N)`` (torch or numpy)."""

    def __init__(self, fn: Callable[[torch.Tensor], Any], n_neurons: int,
                 image_shape: Sequence[int] = stim.DEFAULT_SHAPE, centers: Any = None,
                 batch_size: int = 256):
        if not callable(fn):
            raise ValueError(f"fn must be callable stimuli -> responses, got {type(fn).__name__}")
        self.fn = fn
        self.n_neurons = int(n_neurons)
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.centers = None if centers is None else torch.as_tensor(np.asarray(centers), dtype=torch.float32)
        self.batch_size = int(batch_size)

    def responses(self, stimuli: torch.Tensor) -> torch.Tensor:
        r = self.fn(torch.as_tensor(stimuli, dtype=torch.float32))
        r = torch.as_tensor(r, dtype=torch.float32)
        if r.dim() != 2 or r.shape != (stimuli.shape[0], self.n_neurons):
            raise ValueError(f"fn must return (B, N) = ({stimuli.shape[0]}, {self.n_neurons}), got {tuple(r.shape)}")
        return r


class PopulationModel(ResponseModel):
    """The ground-truth :class:`~reprlab.v1.population.Population` as a response model.

    :meth:`diag` evaluates each neuron only on its own stimuli (``population.subset``), so
    per-neuron experiments cost ``B`` neuron evaluations instead of ``B x N``.
    """

    def __init__(self, population: Any, batch_size: int = 512):
        self.population = population
        self.n_neurons = len(population)
        self.image_shape = tuple(int(s) for s in population.image_shape)
        self.centers = torch.as_tensor(population.center, dtype=torch.float32).cpu()
        self.batch_size = int(batch_size)
        self._subs: dict[int, Any] = {}

    @torch.no_grad()
    def responses(self, stimuli: torch.Tensor) -> torch.Tensor:
        return self.population.rate(torch.as_tensor(stimuli, dtype=torch.float32)).float().cpu()

    def _sub(self, n: int) -> Any:
        if n not in self._subs:
            if len(self._subs) > 4096:
                self._subs.clear()
            self._subs[n] = self.population.subset([n])
        return self._subs[n]

    @torch.no_grad()
    def diag(self, stimuli: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        x, idx = self._check_diag(stimuli, neurons)
        out = torch.empty(len(idx))
        for n in torch.unique(idx).tolist():
            sel = torch.nonzero(idx == n)[:, 0]
            out[sel] = self._sub(n).rate(x[sel]).float().cpu()[:, 0]
        return out

    @torch.no_grad()
    def _diag_render(self, render: Callable, params: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        """Group the stimuli by neuron: one rate call per neuron (and chunk of 1024 stimuli)."""
        params = torch.as_tensor(params, dtype=torch.float32)
        neurons = torch.as_tensor(neurons, dtype=torch.long).reshape(-1)
        out = torch.empty(len(params))
        for n in torch.unique(neurons).tolist():
            sel = torch.nonzero(neurons == n)[:, 0]
            for c0 in range(0, len(sel), 1024):
                s = sel[c0:c0 + 1024]
                out[s] = self._sub(n).rate(render(params[s], self.image_shape)).float().cpu()[:, 0]
        return out


class ApertureModel(ResponseModel):
    """A response model that sees only a square aperture around each neuron's RF centre.

    ``diag`` greys (sets to 0) every pixel farther than ``half_width`` pixels (in x or y) from
    neuron ``n``'s centre before asking ``model``. With ``half_width`` = a twin core's
    receptive-field radius (:attr:`EquivariantModel.half_width`) and the ground truth as
    ``model``, this is the best any twin of that architecture can do: in silico indices
    measured on it bound what a perfectly fitted twin could recover (chapter 7 diagnostics).
    ``responses`` (all neurons on one image) is not defined for per-neuron apertures.
    """

    def __init__(self, model: ResponseModel, half_width: float, centers: Any = None):
        if not half_width > 0:
            raise ValueError(f"half_width must be > 0 pixels, got {half_width}")
        self.model = model
        self.half_width = float(half_width)
        self.n_neurons = model.n_neurons
        self.image_shape = tuple(model.image_shape)
        c = model.centers if centers is None else torch.as_tensor(np.asarray(centers), dtype=torch.float32)
        if c is None or tuple(c.shape) != (self.n_neurons, 2):
            raise ValueError(f"need RF centres ({self.n_neurons}, 2): pass centers= or use a model with centres")
        self.centers = c.float().cpu()
        self.batch_size = model.batch_size

    def responses(self, stimuli: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("ApertureModel has one aperture per neuron: use diag / diag_* methods")

    def masks(self, neurons: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` 0/1 apertures of ``neurons``."""
        H, W = self.image_shape
        c = self.centers[neurons]
        yy = torch.arange(H, dtype=torch.float32)[None, :, None]
        xx = torch.arange(W, dtype=torch.float32)[None, None, :]
        inside = ((xx - c[:, 0, None, None]).abs() <= self.half_width) & \
                 ((yy - c[:, 1, None, None]).abs() <= self.half_width)
        return inside.float()

    def diag(self, stimuli: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        x, idx = self._check_diag(stimuli, neurons)
        return self.model.diag(x * self.masks(idx), idx)

    def _diag_render(self, render: Callable, params: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        params = torch.as_tensor(params, dtype=torch.float32)
        neurons = torch.as_tensor(neurons, dtype=torch.long).reshape(-1)
        out = []
        for s in range(0, len(params), 1024):
            imgs = render(params[s:s + 1024], self.image_shape)
            out.append(self.diag(imgs, neurons[s:s + 1024]))
        return torch.cat(out) if out else params.new_zeros(0)


def _valid_core_forward(core: torch.nn.Module, x: torch.Tensor,
                        weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """``core(x)`` without padding: every output pixel sees only real input (Ecker et al. core,
    including its optional average pooling after the first layer)."""
    n = len(core.convs)
    pool = int(getattr(core, "pool", 1))
    for i, (conv, norm) in enumerate(zip(core.convs, core.norms)):
        x = norm(F.conv2d(x, conv.weight() if weights is None else weights[i]))
        if i < n - 1 or core.final_nonlinearity:
            x = F.elu(x)
        if i == 0 and pool > 1:
            x = F.avg_pool2d(x, pool)
    return x


class EquivariantModel(ResponseModel):
    """Fast view of a rotation-equivariant twin: core + point readout (see module docstring).

    Args:
        core: a :class:`~reprlab.v1.cores.RotationEquivariantCore` (eval mode is enforced).
        weights: readout feature weights ``(N, F, O)``.
        bias: ``(N,)`` readout biases.
        positions: ``(N, 2)`` readout positions ``(x, y)`` in input pixels (RF centres).
        nonlinearity: output nonlinearity applied to ``drive + bias``.
        image_shape: ``(H, W)`` of the model's input.
        input_transform: stimulus -> core input (e.g. z-scoring); must be pixel-wise.
        downsample: integer average-pooling factor ``d`` applied before the core; crops are
            aligned to multiples of ``d`` and bank offsets are in units of ``d`` input pixels.
        rotation_shift: +1/-1, the channel shift that a rotation of the stimulus by
            ``+2π/O`` (the stimuli module's orientation sense) causes; ``None`` calibrates it.
        full_model: the twin's own forward pass ``images -> (B, N)`` (used by
            :meth:`responses`); default: core with padding + bilinear point readout.
    """

    def __init__(self, core: torch.nn.Module, weights: Any, bias: Any, positions: Any,
                 nonlinearity: Callable[[torch.Tensor], torch.Tensor], image_shape: Sequence[int],
                 input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 downsample: int = 1, rotation_shift: int | None = None, batch_size: int = 512,
                 full_model: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.core = core.eval()
        dev = next(core.parameters()).device
        self.device = dev
        self.weights = torch.as_tensor(weights, dtype=torch.float32).to(dev)
        if self.weights.dim() != 3:
            raise ValueError(f"weights must be (N, F, O), got {tuple(self.weights.shape)}")
        self.n_neurons, self.n_features, self.n_rotations = (int(s) for s in self.weights.shape)
        if self.n_features * self.n_rotations != core.out_channels:
            raise ValueError(f"weights (N, {self.n_features}, {self.n_rotations}) do not match the core's "
                             f"{core.out_channels} channels")
        self.bias = torch.as_tensor(bias, dtype=torch.float32).to(dev).reshape(-1)
        self.centers = torch.as_tensor(positions, dtype=torch.float32).detach().cpu().reshape(-1, 2)
        if self.bias.shape[0] != self.n_neurons or self.centers.shape[0] != self.n_neurons:
            raise ValueError("bias and positions must have one entry per neuron")
        self.nonlinearity = nonlinearity
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.input_transform = input_transform or (lambda x: x)
        self.d = int(downsample)
        if self.d < 1:
            raise ValueError(f"downsample must be a positive int, got {downsample}")
        ks = [int(k) for k in core.kernel_sizes]
        self.p = int(getattr(core, "pool", 1))
        self.R1 = (ks[0] - 1) // 2
        self.R2 = sum((k - 1) // 2 for k in ks[1:])
        self.R = self.R1 + self.R2  # receptive-field radius in layer-1 pixels when pool = 1
        self.stride = self.d * self.p
        self.batch_size = int(batch_size)
        self.full_model = full_model
        with torch.no_grad():
            self._conv_weights = [conv.weight().detach() for conv in core.convs]
        self.rotation_shift = int(rotation_shift) if rotation_shift is not None else self._calibrate_rotation()

    # ---------------------------------------------------------------- construction helpers
    @classmethod
    def from_twin(cls, model: Any, animals: Sequence[str] | None = None, **kwargs: Any) -> EquivariantModel:
        """View of a :class:`~reprlab.v1.model.V1Twin` with the neurons of ``animals`` (all by
        default) concatenated in order."""
        from reprlab.v1.readouts import output_nonlinearity

        animals = list(animals) if animals is not None else list(model.animals)
        W = torch.cat([model.readout_weights(a) for a in animals])
        b = torch.cat([model.readout_bias(a) for a in animals])
        p = torch.cat([model.rf_centers(a).detach() for a in animals])
        mean = float(model.config.get("image_mean", 0.0))
        std = float(model.config.get("image_std", 1.0))
        kind = model.config["readout"].get("nonlinearity", "elu1")
        model.eval()

        def full(images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([model(images, a) for a in animals], 1)

        return cls(model.core, W, b, p, lambda z: output_nonlinearity(z, kind), model.input_shape,
                   input_transform=lambda x: (x - mean) / std, downsample=getattr(model, "downsample", 1),
                   full_model=full, **kwargs)

    def _calibrate_rotation(self) -> int:
        """Find the channel shift caused by rotating a stimulus by +2π/O (sign convention)."""
        O = self.n_rotations
        if O == 1:
            return 0
        s = self.bank_shape(0)[0]
        c = self.bank_center(0)
        phi = torch.tensor([0.3, 0.3 + 2 * math.pi / O])
        g = stim.gabor(c, c, 0.6 * self.half_width + 2, 0.12 / self.stride, phi, 0.4, 1.0, shape=(s, s))
        with torch.no_grad():
            f = self._features_valid(g)[:, :, :, 0, 0]  # (2, F, O)
        errs = {k: float((f[1] - f[0].roll(k, dims=-1)).norm()) for k in (1, -1)}
        return min(errs, key=errs.get)

    # ---------------------------------------------------------------- core primitives
    def crop_size(self, w: int) -> int:
        """Input pixels of the crop whose valid core pass gives a ``w x w`` feature window."""
        return self.d * (self.p * (w + 2 * self.R2) + 2 * self.R1)

    def crop_origin(self, q0: torch.Tensor) -> torch.Tensor:
        """Input-pixel origin of the crop whose first valid output is feature pixel ``q0``."""
        return self.d * (self.p * (q0 - self.R2) - self.R1)

    @property
    def half_width(self) -> float:
        """Receptive-field radius in input pixels."""
        return float(self.d * (self.p * self.R2 + self.R1))

    def _features_valid(self, crops: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Valid core pass on stimulus crops ``(B, h, w)`` (input pixels, sized by
        :meth:`crop_size`) -> ``(B, F, O, w, w)``."""
        x = self.input_transform(crops.to(self.device, torch.float32))
        if masks is not None:
            x = x * masks.to(x)
        x = x[:, None]
        if self.d > 1:
            x = F.avg_pool2d(x, self.d)
        z = _valid_core_forward(self.core, x, self._conv_weights)
        b, _, h, w = z.shape
        return z.reshape(b, self.n_features, self.n_rotations, h, w)

    def _drive(self, feats: torch.Tensor, neurons: torch.Tensor, shift: int | torch.Tensor = 0) -> torch.Tensor:
        """``Σ w[n] · roll(feats, shift)`` per row: feats ``(B, F, O)``, neurons ``(B,)``."""
        w = self.weights[neurons.to(self.device)]
        if isinstance(shift, torch.Tensor) or shift:
            sh = torch.as_tensor(shift, device=self.device).reshape(-1).expand(len(neurons))
            O = self.n_rotations
            idx = (torch.arange(O, device=self.device)[None, :] + sh[:, None] * self.rotation_shift) % O
            w = torch.gather(w, 2, idx[:, None, :].expand_as(w))
        return (feats.to(self.device) * w).sum((1, 2)) + self.bias[neurons.to(self.device)]

    @torch.no_grad()
    def responses(self, stimuli: torch.Tensor) -> torch.Tensor:
        """All neurons' rates on full images (the twin's own forward pass, in batches)."""
        x = torch.as_tensor(stimuli, dtype=torch.float32)
        out = []
        for s in range(0, len(x), 64):
            xb = x[s:s + 64].to(self.device)
            if self.full_model is not None:
                out.append(self.full_model(xb).float().cpu())
                continue
            z = self.input_transform(xb)[:, None]
            if self.d > 1:
                z = F.avg_pool2d(z, self.d)
            out.append(self._read_points(self.core(z)).cpu())
        return torch.cat(out) if out else x.new_zeros(0, self.n_neurons)

    def _to_feature_px(self, p: torch.Tensor) -> torch.Tensor:
        return (p - (self.stride - 1) / 2.0) / self.stride

    def _read_points(self, z: torch.Tensor) -> torch.Tensor:
        h, w = z.shape[-2:]
        p = self._to_feature_px(self.centers.to(z))
        grid = torch.stack([p[:, 0] / max(w - 1, 1), p[:, 1] / max(h - 1, 1)], 1) * 2 - 1
        zs = F.grid_sample(z, grid[None, :, None].expand(z.shape[0], -1, -1, -1), mode="bilinear",
                           align_corners=True, padding_mode="border")[..., 0]  # (B, C, N)
        drive = torch.einsum("bcn,nc->bn", zs, self.weights.reshape(self.n_neurons, -1)) + self.bias
        return self.nonlinearity(drive)

    def _mask(self, origin: torch.Tensor, size: int) -> torch.Tensor:
        gx, gy = stim.grid((size, size))
        xs = origin[:, 0, None, None] + gx
        ys = origin[:, 1, None, None] + gy
        H, W = self.image_shape
        return ((xs >= 0) & (xs <= W - 1) & (ys >= 0) & (ys <= H - 1)).float()

    def _crop_frame(self, neurons: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Origin (input px) of each neuron's 2x2-feature crop, bilinear fractions, in-image mask."""
        pf = self._to_feature_px(self.centers[neurons.cpu()])
        fl = torch.floor(pf)
        frac = pf - fl
        origin = self.crop_origin(fl)
        return origin, frac, self._mask(origin, self.crop_size(2))

    def _bilinear(self, z: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
        """``z (B, F, O, 2, 2)`` -> value at fractional offset ``frac (B, 2)`` (x, y)."""
        fx, fy = (frac[:, 0].to(z)[:, None, None], frac[:, 1].to(z)[:, None, None])
        return ((1 - fx) * (1 - fy) * z[..., 0, 0] + fx * (1 - fy) * z[..., 0, 1]
                + (1 - fx) * fy * z[..., 1, 0] + fx * fy * z[..., 1, 1])

    def _diag_crops(self, crops: torch.Tensor, neurons: torch.Tensor, frac: torch.Tensor,
                    mask: torch.Tensor, grad: bool = False) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            z = self._features_valid(crops, mask)
            return self.nonlinearity(self._drive(self._bilinear(z, frac), neurons))

    @torch.no_grad()
    def diag(self, stimuli: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        x, idx = self._check_diag(stimuli, neurons)
        s = self.crop_size(2)
        out = []
        for b0 in range(0, len(x), self.batch_size):
            nb = idx[b0:b0 + self.batch_size]
            origin, frac, mask = self._crop_frame(nb)
            xp = F.pad(x[b0:b0 + self.batch_size], (s, s, s, s))
            ox = (origin[:, 0] + s).long()
            oy = (origin[:, 1] + s).long()
            ar = torch.arange(s)
            crops = xp[torch.arange(len(nb))[:, None, None], (oy[:, None] + ar)[:, :, None],
                       (ox[:, None] + ar)[:, None, :]]
            out.append(self._diag_crops(crops, nb, frac, mask).cpu())
        return torch.cat(out) if out else x.new_zeros(0)

    def _diag_render(self, render: Callable, params: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        """Render each stimulus directly in its neuron's crop (no full image needed)."""
        params = torch.as_tensor(params, dtype=torch.float32)
        neurons = torch.as_tensor(neurons, dtype=torch.long).reshape(-1)
        s = self.crop_size(2)
        out = []
        with torch.no_grad():
            for b0 in range(0, len(params), self.batch_size):
                nb = neurons[b0:b0 + self.batch_size]
                origin, frac, mask = self._crop_frame(nb)
                crops = render(params[b0:b0 + self.batch_size], (s, s), origin)
                out.append(self._diag_crops(crops, nb, frac, mask).cpu())
        return torch.cat(out) if out else params.new_zeros(0)

    # ---------------------------------------------------------------- patches (MEIs)
    @property
    def patch_size(self) -> int:
        """Side (input pixels) of the patch a neuron's receptive field sees (one feature pixel)."""
        return self.crop_size(1)

    def patch_origins(self, neurons: torch.Tensor, centers: torch.Tensor | None = None) -> torch.Tensor:
        """Top-left input pixel of each neuron's patch (the crop of its nearest feature pixel)."""
        c = self._centers_for(torch.as_tensor(neurons, dtype=torch.long).reshape(-1), centers)
        return self.crop_origin(torch.round(self._to_feature_px(c)))

    def diag_patches(self, patches: torch.Tensor, neurons: torch.Tensor, centers: torch.Tensor | None = None,
                     grad: bool = False) -> torch.Tensor:
        """Patches ``(B, p, p)`` (``p = patch_size``; other sizes are centre-cropped / padded)
        placed on each neuron's RF (nearest feature pixel, or ``centers``); differentiable with
        ``grad=True`` (used by the MEIs)."""
        if not isinstance(patches, torch.Tensor):
            patches = torch.as_tensor(np.asarray(patches), dtype=torch.float32)
        neurons = torch.as_tensor(neurons, dtype=torch.long).reshape(-1)
        origins = self.patch_origins(neurons, centers)
        out = []
        for b0 in range(0, len(patches), self.batch_size):
            nb = neurons[b0:b0 + self.batch_size]
            crops = _fit_patch(patches[b0:b0 + self.batch_size], self.patch_size)
            mask = self._mask(origins[b0:b0 + self.batch_size], self.patch_size)
            with torch.set_grad_enabled(grad):
                z = self._features_valid(crops, mask)
                r = self.nonlinearity(self._drive(z[..., 0, 0], nb))
            out.append(r if grad else r.detach().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def paste(self, patches: torch.Tensor, neurons: torch.Tensor, centers: torch.Tensor | None = None) -> torch.Tensor:
        """Full images with each patch where :meth:`diag_patches` places it."""
        origins = self.patch_origins(neurons, centers)
        return paste_at(_fit_patch(torch.as_tensor(patches, dtype=torch.float32), self.patch_size), origins,
                        self.image_shape)

    # ---------------------------------------------------------------- the shared bank
    def bank_shape(self, window: int) -> tuple[int, int]:
        """Input-pixel size of centred bank stimuli for a ``(2·window+1)^2`` feature window."""
        s = self.crop_size(2 * window + 1)
        return (s, s)

    def bank_center(self, window: int) -> float:
        """Input coordinate (x = y) of the stimulus centre in a bank patch (the centre of its
        middle feature pixel)."""
        return self.d * (self.p * (window + self.R2) + self.R1 + (self.p - 1) / 2.0) + (self.d - 1) / 2.0

    @torch.no_grad()
    def bank(self, patches: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Core features of *centred* stimuli ``(M, s, s)`` (:meth:`bank_shape`, centre at
        :meth:`bank_center`) -> ``(M, F, O, 2·window+1, 2·window+1)``.

        Entry ``[..., window - e_y, window - e_x]`` is what a neuron reads when the stimulus is
        centred ``stride·e`` input pixels from its RF centre (translation equivariance)."""
        bs = batch_size or self.batch_size
        out = [self._features_valid(patches[i:i + bs]).cpu() for i in range(0, len(patches), bs)]
        return torch.cat(out)

    @torch.no_grad()
    def read_bank(self, feats: torch.Tensor, neurons: torch.Tensor | None = None) -> torch.Tensor:
        """All neurons x all rotations on bank entries: ``feats (M, F, O, P)`` ->
        rates ``(M, O_rot, P, N)`` where rotation ``k`` means the stimulus turned by ``k·2π/O``."""
        W = self.weights if neurons is None else self.weights[neurons.to(self.device)]
        O = self.n_rotations
        # roll(feats, k·shift)[o] = feats[o - k·shift]  <=>  weights rolled by -k·shift
        Wr = torch.stack([W.roll(-k * self.rotation_shift, dims=2) for k in range(O)])  # (O, N, F, O)
        M, Fd, Od, P = feats.shape
        f = feats.to(self.device).reshape(M, Fd * Od, P)
        drive = torch.einsum("mcp,knc->mkpn", f, Wr.reshape(O, W.shape[0], Fd * Od))
        b = self.bias if neurons is None else self.bias[neurons.to(self.device)]
        return self.nonlinearity(drive + b)


def _fit_patch(patches: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop or zero-pad ``(B, h, w)`` patches to ``(B, size, size)``."""
    h, w = patches.shape[-2:]
    if h > size:
        patches = patches[..., (h - size) // 2:(h - size) // 2 + size, :]
    if w > size:
        patches = patches[..., :, (w - size) // 2:(w - size) // 2 + size]
    h, w = patches.shape[-2:]
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(patches, (left, size - w - left, top, size - h - top))


def paste_at(patches: torch.Tensor, origins: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Full images ``(B, H, W)`` with each patch's top-left pixel at integer ``origins[b]`` (x, y)."""
    patches = torch.as_tensor(patches, dtype=torch.float32)
    B, h, w = patches.shape
    H, W = int(shape[0]), int(shape[1])
    o = torch.round(torch.as_tensor(origins, dtype=torch.float32)).long()
    out = torch.zeros(B, H + 2 * h, W + 2 * w)
    for b in range(B):
        y0, x0 = int(o[b, 1]) + h, int(o[b, 0]) + w
        if 0 <= y0 <= H + h and 0 <= x0 <= W + w:
            out[b, y0:y0 + h, x0:x0 + w] = patches[b]
    return out[:, h:h + H, w:w + W]


# =========================================================================== rendering
def _origin_shift(params: torch.Tensor, origin: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    cx, cy = params[:, 0], params[:, 1]
    if origin is not None:
        cx = cx - origin[:, 0].to(cx)
        cy = cy - origin[:, 1].to(cy)
    return cx, cy


def render_gabors(params: Any, shape: Sequence[int] = stim.DEFAULT_SHAPE, origin: torch.Tensor | None = None) -> torch.Tensor:
    """Images ``(B, H, W)`` of Gabor rows ``(B, 7)`` (:data:`GABOR_PARAMS`); ``origin (B, 2)``
    renders in a crop whose top-left pixel is at image coordinates ``origin``."""
    p = torch.as_tensor(params, dtype=torch.float32).reshape(-1, len(GABOR_PARAMS))
    cx, cy = _origin_shift(p, origin)
    return stim.gabor(cx, cy, p[:, 2], p[:, 3], p[:, 5], p[:, 6], p[:, 4], shape=shape)


def _render_plaid(params: torch.Tensor, shape: Sequence[int], origin: torch.Tensor | None = None) -> torch.Tensor:
    p = torch.as_tensor(params, dtype=torch.float32)
    cx, cy = _origin_shift(p, origin)
    return stim.plaid(cx, cy, p[:, 2], p[:, 3], p[:, 5], p[:, 6], p[:, 4], p[:, 7], shape=shape)


def render_dogs(params: Any, shape: Sequence[int] = stim.DEFAULT_SHAPE, origin: torch.Tensor | None = None) -> torch.Tensor:
    """Images ``(B, H, W)`` of DoG rows ``(B, 6)`` (:data:`DOG_PARAMS`, eqs. 9-10)."""
    p = torch.as_tensor(params, dtype=torch.float32).reshape(-1, len(DOG_PARAMS))
    cx, cy = _origin_shift(p, origin)
    return stim.dog(cx, cy, p[:, 2], p[:, 3], p[:, 4], p[:, 5], shape=shape)


def paste_patches(patches: torch.Tensor, centers: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Full images ``(B, H, W)`` with each patch's centre pixel at ``round(centers[b])``."""
    patches = torch.as_tensor(patches, dtype=torch.float32)
    B, h, w = patches.shape
    H, W = int(shape[0]), int(shape[1])
    c = torch.round(torch.as_tensor(centers, dtype=torch.float32)).long()
    out = torch.zeros(B, H + 2 * h, W + 2 * w)
    for b in range(B):
        y0 = int(c[b, 1]) - h // 2 + h
        x0 = int(c[b, 0]) - w // 2 + w
        if 0 <= y0 <= H + h and 0 <= x0 <= W + w:
            out[b, y0:y0 + h, x0:x0 + w] = patches[b]
    return out[:, h:h + H, w:w + W]


def canonical_gabor(params: Any) -> torch.Tensor:
    """Map ``(φ, τ)`` to ``φ ∈ [0, π)``, ``τ ∈ [0, 2π)`` using ``(φ + π, τ) ≡ (φ, -τ)``."""
    p = torch.as_tensor(params, dtype=torch.float32).clone().reshape(-1, len(GABOR_PARAMS))
    phi = torch.remainder(p[:, 5], 2 * math.pi)
    flip = phi >= math.pi
    p[:, 5] = torch.where(flip, phi - math.pi, phi)
    p[:, 6] = torch.remainder(torch.where(flip, -p[:, 6], p[:, 6]), 2 * math.pi)
    return p


# =========================================================================== search grids
@dataclass
class GaborGrid:
    """Candidate Gabors (Methods, "Per neuron optimal Gabors"): every combination of the
    values below, at orientations ``2π j / (O·J)`` (``J = orientation_substeps``; on the generic
    path ``n_orientations`` over ``[0, π)``) and at offsets ``{-w..w}·offset_step`` pixels from
    the RF centre in both axes (``w = offset_window``)."""

    sizes: tuple[float, ...] = (4.0, 6.0, 9.0, 13.0, 19.0)
    spatial_frequencies: tuple[float, ...] = (0.04, 0.06, 0.09, 0.13, 0.18)
    contrasts: tuple[float, ...] = (0.5, 1.0)
    n_phases: int = 8
    orientation_substeps: int = 2
    n_orientations: int = 8
    offset_window: int = 1
    offset_step: int = 2
    refine_rounds: int = 2

    def __post_init__(self) -> None:
        for name in ("sizes", "spatial_frequencies", "contrasts"):
            vals = tuple(float(v) for v in getattr(self, name))
            if not vals or min(vals) <= 0:
                raise ValueError(f"GaborGrid.{name} must be non-empty positive values, got {vals}")
            setattr(self, name, vals)
        for name in ("n_phases", "orientation_substeps", "n_orientations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GaborGrid.{name} must be >= 1")
        if self.offset_window < 0 or self.offset_step < 1:
            raise ValueError("GaborGrid.offset_window must be >= 0 and offset_step >= 1")

    @property
    def phases(self) -> np.ndarray:
        return np.arange(self.n_phases) * 2 * np.pi / self.n_phases

    def shared(self) -> np.ndarray:
        """Rows ``(size, sf, contrast, phase)`` of the location/orientation-free candidates."""
        g = np.meshgrid(self.sizes, self.spatial_frequencies, self.contrasts, self.phases, indexing="ij")
        return np.stack([a.ravel() for a in g], 1)

    def offsets(self) -> np.ndarray:
        r = np.arange(-self.offset_window, self.offset_window + 1) * self.offset_step
        ox, oy = np.meshgrid(r, r, indexing="xy")
        return np.stack([ox.ravel(), oy.ravel()], 1).astype(np.float64)

    @property
    def n_candidates_per_neuron(self) -> int:
        return len(self.shared()) * self.n_orientations * len(self.offsets())


@dataclass
class DogGrid:
    """Candidate DoGs (eqs. 9-10): centre widths, surround/centre width ratios, signed centre
    contrasts (negative = OFF centre) and surround strengths, at the grid offsets."""

    sigma_centers: tuple[float, ...] = (1.5, 2.5, 4.0, 6.0)
    surround_ratios: tuple[float, ...] = (2.0, 3.0)
    contrasts_center: tuple[float, ...] = (-0.5, -0.25, 0.25, 0.5)
    contrasts_surround: tuple[float, ...] = (0.0, 0.5, 1.0)
    offset_window: int = 1
    offset_step: int = 2
    refine_rounds: int = 1

    def shared(self) -> np.ndarray:
        g = np.meshgrid(self.sigma_centers, self.surround_ratios, self.contrasts_center,
                        self.contrasts_surround, indexing="ij")
        sc, ratio, ac, asur = (a.ravel() for a in g)
        return np.stack([sc, sc * ratio, ac, asur], 1)

    def offsets(self) -> np.ndarray:
        return GaborGrid.offsets(self)  # type: ignore[arg-type]


GRID_PRESETS = {
    "smoke": dict(sizes=(5.0, 9.0, 15.0), spatial_frequencies=(0.05, 0.09, 0.15), contrasts=(1.0,),
                  n_phases=4, orientation_substeps=1, n_orientations=4, offset_window=1, refine_rounds=1),
    "default": dict(),
    "paper": dict(sizes=(3.0, 4.0, 5.5, 7.5, 10.0, 13.0, 17.0, 22.0), n_phases=12, orientation_substeps=3,
                  spatial_frequencies=(0.03, 0.045, 0.06, 0.08, 0.1, 0.13, 0.17, 0.22),
                  contrasts=(0.25, 0.5, 0.75, 1.0), n_orientations=12, offset_window=2, refine_rounds=3),
}
DOG_PRESETS = {
    "smoke": dict(sigma_centers=(2.0, 4.0), surround_ratios=(2.5,), contrasts_center=(-0.5, 0.5),
                  contrasts_surround=(0.0, 1.0), refine_rounds=0),
    "default": dict(),
    "paper": dict(sigma_centers=(1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0), surround_ratios=(1.5, 2.0, 3.0, 4.0),
                  contrasts_center=(-1.0, -0.5, -0.25, 0.25, 0.5, 1.0), contrasts_surround=(0.0, 0.25, 0.5, 1.0),
                  offset_window=2, refine_rounds=2),
}


def gabor_grid(scale: str | None = None, **overrides: Any) -> GaborGrid:
    return GaborGrid(**pick(GRID_PRESETS, scale, **overrides))


def dog_grid(scale: str | None = None, **overrides: Any) -> DogGrid:
    return DogGrid(**pick(DOG_PRESETS, scale, **overrides))


# =========================================================================== optimal stimuli
@dataclass
class OptimalStimuli:
    """Result of a search: ``params (N, P)`` (see :data:`GABOR_PARAMS` / :data:`DOG_PARAMS`),
    ``response (N,)`` predicted at the optimum, and search statistics."""

    params: np.ndarray
    response: np.ndarray
    names: tuple[str, ...]
    stats: dict[str, Any] = field(default_factory=dict)


def _neurons_arg(model: ResponseModel, neurons: Any) -> torch.Tensor:
    if neurons is None:
        return torch.arange(model.n_neurons)
    idx = torch.as_tensor(np.asarray(neurons), dtype=torch.long).reshape(-1)
    if len(idx) == 0:
        raise ValueError("neurons must select at least one neuron")
    if idx.min() < 0 or idx.max() >= model.n_neurons:
        raise ValueError(f"neuron indices must be in [0, {model.n_neurons})")
    return idx


def _centers_arg(model: ResponseModel, idx: torch.Tensor, centers: Any) -> torch.Tensor:
    if centers is not None:
        c = torch.as_tensor(np.asarray(centers), dtype=torch.float32).reshape(-1, 2)
        if c.shape[0] != len(idx):
            raise ValueError(f"centers must be ({len(idx)}, 2), got {tuple(c.shape)}")
        return c
    if model.centers is None:
        raise ValueError("the model has no RF centres: pass centers=(N, 2) (x, y) pixels")
    return model.centers[idx].float()


def optimal_gabors(model: ResponseModel, grid: GaborGrid | None = None, neurons: Any = None,
                   centers: Any = None, fast: bool | None = None, progress: bool = False,
                   callback: Callback | None = None, straightforward: bool = False) -> OptimalStimuli:
    """Per-neuron optimal Gabors (Methods eqs. 1-2): grid search, then coordinate refinement.

    The fast path (``EquivariantModel``) renders each location/orientation-free candidate once,
    centred, at ``J`` orientations per ``2π/O`` sector, and reads every neuron at every rotation
    and offset from one valid core pass. The generic path renders every candidate at every
    neuron's RF centre (``centers`` or ``model.centers``) and evaluates it with ``model.diag``
    (``straightforward=True``: full images through the model's own forward pass, the baseline
    of ``bench/bench_v1_insilico.py``). Both finish with ``grid.refine_rounds`` rounds of per-neuron
    coordinate ascent (halving steps in size, frequency, orientation, phase and position).
    """
    grid = grid or gabor_grid()
    idx = _neurons_arg(model, neurons)
    c = _centers_arg(model, idx, centers)
    fast = isinstance(model, EquivariantModel) if fast is None else bool(fast)
    if fast and not isinstance(model, EquivariantModel):
        raise ValueError("fast=True needs an EquivariantModel (a rotation-equivariant twin view)")
    import time

    t0 = time.perf_counter()
    if fast:
        params, resp, n_evals = _gabor_search_fast(model, grid, idx, c, progress, callback)
    else:
        params, resp, n_evals = _gabor_search_loop(model, grid, idx, c, progress, callback, straightforward)
    t_grid = time.perf_counter() - t0
    params, resp, n_ref = _refine(model, params, resp, idx, grid.refine_rounds, _GABOR_STEPS, model.diag_gabors,
                                  _clip_gabor, c)
    params = canonical_gabor(params).numpy()
    stats = dict(path="fast" if fast else "loop", n_neurons=len(idx), neuron_stimulus_evaluations=int(n_evals),
                 refine_evaluations=int(n_ref), seconds_grid=t_grid, seconds_total=time.perf_counter() - t0)
    return OptimalStimuli(params, resp.numpy(), GABOR_PARAMS, stats)


def _orientations_fast(model: EquivariantModel, J: int) -> np.ndarray:
    return np.arange(J) * (2 * np.pi / model.n_rotations) / J


def _bank_offsets(model: EquivariantModel, grid: Any) -> tuple[np.ndarray, int]:
    """Grid offsets (input px) rounded to whole feature pixels, unique, and the window radius."""
    offs = np.unique(np.round(grid.offsets() / model.stride), axis=0).astype(int)
    return offs, int(np.abs(offs).max()) if len(offs) else 0


def _gabor_search_fast(model: EquivariantModel, grid: GaborGrid, idx: torch.Tensor, centers: torch.Tensor,
                       progress: bool, callback: Callback | None):
    offs, win = _bank_offsets(model, grid)  # (P, 2) feature pixels (x, y)
    O, J = model.n_rotations, grid.orientation_substeps
    subs = _orientations_fast(model, J)
    shared = grid.shared()
    n = len(idx)
    best = torch.full((n,), -float("inf"))
    best_arg = torch.zeros(n, 4, dtype=torch.long)  # shared row, j, k, offset
    chunk = max(1, 64 // J)
    s = model.bank_shape(win)[0]
    cc = model.bank_center(win)
    wy = (win - offs[:, 1]).astype(int)
    wx = (win - offs[:, 0]).astype(int)
    n_evals = 0
    it = range(0, len(shared), chunk)
    for step, c0 in enumerate(tqdm(it, disable=not progress, desc="optimal Gabors (fast)")):
        sh = shared[c0:c0 + chunk]
        rows = np.array([[*r, j] for r in sh for j in range(J)])
        p = np.column_stack([np.full(len(rows), cc), np.full(len(rows), cc), rows[:, 0], rows[:, 1], rows[:, 2],
                             subs[rows[:, 4].astype(int)], rows[:, 3]])
        feats = model.bank(render_gabors(p, (s, s)))  # (M, F, O, w, w)
        feats = feats[:, :, :, wy, wx]  # (M, F, O, P)
        r = model.read_bank(feats, idx).cpu()  # (M, O, P, N)
        n_evals += r.numel()
        flat = r.reshape(-1, n)
        val, arg = flat.max(0)
        upd = val > best
        if upd.any():
            m, rem = np.divmod(arg[upd].numpy(), O * len(offs))
            k, e = np.divmod(rem, len(offs))
            best[upd] = val[upd]
            best_arg[upd, 0] = torch.as_tensor(c0 + m // J)
            best_arg[upd, 1] = torch.as_tensor(m % J)
            best_arg[upd, 2] = torch.as_tensor(k)
            best_arg[upd, 3] = torch.as_tensor(e)
        if callback is not None and callback(step, float(best.mean()), {"best": best}):
            break
    a = best_arg.numpy()
    sh = shared[a[:, 0]]
    ang = subs[a[:, 1]] + a[:, 2] * 2 * np.pi / O
    # an offset e at rotation k means the stimulus sits at R_k e (grid aligned with the Gabor)
    e = offs[a[:, 3]] * model.stride
    ck, sk = np.cos(a[:, 2] * 2 * np.pi / O), np.sin(a[:, 2] * 2 * np.pi / O)
    ex = ck * e[:, 0] - sk * e[:, 1]
    ey = sk * e[:, 0] + ck * e[:, 1]
    params = np.column_stack([centers[:, 0].numpy() + ex, centers[:, 1].numpy() + ey, sh[:, 0], sh[:, 1], sh[:, 2],
                              ang, sh[:, 3]])
    return torch.as_tensor(params, dtype=torch.float32), best, n_evals


def gabor_candidates(grid: GaborGrid, n_rotations: int | None = None, downsample: int = 1) -> np.ndarray:
    """Candidate rows ``(dx, dy, size, sf, contrast, orientation, phase)`` relative to the RF centre.

    With ``n_rotations = O`` this is exactly the set the fast path evaluates: orientations
    ``2π i / (O·J)`` over ``[0, 2π)`` and offsets rotated with the stimulus (``R_k e`` for the
    ``k``-th ``2π/O`` sector); otherwise ``grid.n_orientations`` orientations over ``[0, π)``."""
    shared = grid.shared()
    offs = grid.offsets()
    rows = []
    if n_rotations:
        O, J = int(n_rotations), grid.orientation_substeps
        for sh in shared:
            for i in range(O * J):
                ang = i * 2 * np.pi / (O * J)
                k = i // J
                ck, sk = np.cos(k * 2 * np.pi / O), np.sin(k * 2 * np.pi / O)
                for ex, ey in offs:
                    rows.append([ck * ex - sk * ey, sk * ex + ck * ey, sh[0], sh[1], sh[2], ang, sh[3]])
    else:
        oris = np.arange(grid.n_orientations) * np.pi / grid.n_orientations
        for sh in shared:
            for o in oris:
                for ex, ey in offs:
                    rows.append([ex, ey, sh[0], sh[1], sh[2], o, sh[3]])
    return np.asarray(rows, dtype=np.float64)


def _full_diag_gabors(model: ResponseModel, params: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
    """The straightforward evaluation: full images through the model's own forward pass."""
    out = []
    for s in range(0, len(params), 64):
        imgs = render_gabors(params[s:s + 64], model.image_shape)
        out.append(ResponseModel.diag(model, imgs, neurons[s:s + 64]))
    return torch.cat(out)


def _gabor_search_loop(model: ResponseModel, grid: GaborGrid, idx: torch.Tensor, centers: torch.Tensor,
                       progress: bool, callback: Callback | None, straightforward: bool = False):
    """Generic search: every candidate rendered at every neuron's RF centre, one neuron at a time."""
    eq = isinstance(model, EquivariantModel)
    cand = gabor_candidates(grid, model.n_rotations if eq else None, model.stride if eq else 1)
    n = len(idx)
    best = torch.full((n,), -float("inf"))
    best_p = torch.zeros(n, len(GABOR_PARAMS))
    n_evals = 0
    for step, i in enumerate(tqdm(range(n), disable=not progress, desc="optimal Gabors (loop)")):
        p = cand.copy()
        p[:, 0] += centers[i, 0].item()
        p[:, 1] += centers[i, 1].item()
        p = torch.as_tensor(p, dtype=torch.float32)
        nb = torch.full((len(p),), int(idx[i]))
        r = _full_diag_gabors(model, p, nb) if straightforward else model.diag_gabors(p, nb)
        n_evals += len(p)
        j = int(torch.argmax(r))
        best[i], best_p[i] = r[j], p[j]
        if callback is not None and callback(step, float(best[: i + 1].mean()), {"best": best}):
            break
    return best_p, best, n_evals


# steps (absolute for position/angles, multiplicative for sizes/frequency) per parameter
_GABOR_STEPS = {0: ("add", 1.0), 1: ("add", 1.0), 2: ("mul", 1.25), 3: ("mul", 1.2), 5: ("add", math.pi / 16),
                6: ("add", math.pi / 8)}
_DOG_STEPS = {0: ("add", 1.0), 1: ("add", 1.0), 2: ("mul", 1.25), 3: ("mul", 1.25), 4: ("mul", 1.25),
              5: ("add", 0.2)}


def _clip_gabor(p: torch.Tensor) -> torch.Tensor:
    p[:, 2] = p[:, 2].clamp(1.0, 80.0)
    p[:, 3] = p[:, 3].clamp(0.005, 0.5)
    return p


def _clip_dog(p: torch.Tensor) -> torch.Tensor:
    p[:, 2] = p[:, 2].clamp(0.5, 40.0)
    p[:, 3] = torch.maximum(p[:, 3].clamp(0.5, 80.0), p[:, 2] * 1.05)
    p[:, 4] = p[:, 4].clamp(-1.0, 1.0)
    p[:, 5] = p[:, 5].clamp(0.0, 2.0)
    return p


def _refine(model: ResponseModel, params: torch.Tensor, resp: torch.Tensor, idx: torch.Tensor, rounds: int,
            steps: dict, evaluate: Callable, clip: Callable, centers: torch.Tensor):
    """Per-neuron coordinate ascent: try ±step in every parameter, keep the best, halve steps."""
    params = params.clone()
    # re-evaluate the grid optimum exactly (fast path approximations, image borders)
    resp = evaluate(params, idx)
    n_evals = len(params)
    for r in range(int(rounds)):
        scale = 0.5 ** r
        cands, owner = [], []
        for j, (mode, st) in steps.items():
            for sign in (-1.0, 1.0):
                p = params.clone()
                if mode == "add":
                    p[:, j] = p[:, j] + sign * st * scale
                else:
                    p[:, j] = p[:, j] * (st ** (sign * scale))
                cands.append(clip(p))
                owner.append(torch.arange(len(params)))
        P = torch.cat(cands)
        own = torch.cat(owner)
        rr = evaluate(P, idx[own])
        n_evals += len(P)
        rr = rr.reshape(len(cands), len(params))
        v, a = rr.max(0)
        upd = v > resp
        if upd.any():
            params[upd] = P.reshape(len(cands), len(params), -1)[a[upd], torch.nonzero(upd)[:, 0]]
            resp = torch.where(upd, v, resp)
    # keep the optimum within ~3 px of the RF centre estimate (the stimulus defines it)
    return params, resp, n_evals


def optimal_dogs(model: ResponseModel, grid: DogGrid | None = None, neurons: Any = None, centers: Any = None,
                 fast: bool | None = None, progress: bool = False, callback: Callback | None = None) -> OptimalStimuli:
    """Per-neuron optimal differences of Gaussians (eqs. 9-10): grid search + refinement.

    DoGs are isotropic, so the fast path needs one centred core pass per candidate for all
    neurons and offsets; the generic path evaluates every candidate at every RF centre."""
    grid = grid or dog_grid()
    idx = _neurons_arg(model, neurons)
    c = _centers_arg(model, idx, centers)
    fast = isinstance(model, EquivariantModel) if fast is None else bool(fast)
    shared = grid.shared()
    offs = grid.offsets()
    n = len(idx)
    import time

    t0 = time.perf_counter()
    best = torch.full((n,), -float("inf"))
    best_p = torch.zeros(n, len(DOG_PARAMS))
    n_evals = 0
    if fast:
        offs, win = _bank_offsets(model, grid)
        s = model.bank_shape(win)[0]
        cc = model.bank_center(win)
        wy = (win - offs[:, 1]).astype(int)
        wx = (win - offs[:, 0]).astype(int)
        for c0 in tqdm(range(0, len(shared), 64), disable=not progress, desc="optimal DoGs (fast)"):
            sh = shared[c0:c0 + 64]
            p = np.column_stack([np.full(len(sh), cc), np.full(len(sh), cc), sh])
            feats = model.bank(render_dogs(p, (s, s)))[:, :, :, wy, wx]
            r = model.read_bank(feats, idx)[:, 0].cpu()  # rotation 0 only: (M, P, N)
            n_evals += r.numel()
            val, arg = r.reshape(-1, n).max(0)
            upd = val > best
            if upd.any():
                m, e = np.divmod(arg[upd].numpy(), len(offs))
                best[upd] = val[upd]
                rows = sh[m]
                best_p[upd] = torch.as_tensor(np.column_stack([c[upd, 0].numpy() + model.stride * offs[e, 0],
                                                               c[upd, 1].numpy() + model.stride * offs[e, 1],
                                                               rows]), dtype=torch.float32)
    else:
        cand = np.array([[ox, oy, *sh] for sh in shared for ox, oy in offs])
        for i in tqdm(range(n), disable=not progress, desc="optimal DoGs (loop)"):
            p = torch.as_tensor(np.column_stack([c[i, 0].item() + cand[:, 0], c[i, 1].item() + cand[:, 1], cand[:, 2:]]),
                                dtype=torch.float32)
            r = model.diag_dogs(p, torch.full((len(p),), int(idx[i])))
            n_evals += len(p)
            j = int(torch.argmax(r))
            best[i], best_p[i] = r[j], p[j]
    t_grid = time.perf_counter() - t0
    params, resp, n_ref = _refine(model, best_p, best, idx, grid.refine_rounds, _DOG_STEPS, model.diag_dogs,
                                  _clip_dog, c)
    stats = dict(path="fast" if fast else "loop", n_neurons=n, neuron_stimulus_evaluations=int(n_evals),
                 refine_evaluations=int(n_ref), seconds_grid=t_grid, seconds_total=time.perf_counter() - t0)
    return OptimalStimuli(params.numpy(), resp.numpy(), DOG_PARAMS, stats)


# --------------------------------------------------------------------------- per-cluster
def _check_labels(labels: Any, n: int) -> np.ndarray:
    lab = np.asarray(labels).astype(np.int64).reshape(-1)
    if lab.shape[0] != n:
        raise ValueError(f"labels must have one entry per neuron ({n}), got {lab.shape[0]}")
    if (lab < 0).any():
        raise ValueError("cluster labels must be >= 0")
    return lab


def _cluster_means(r: np.ndarray, lab: np.ndarray, K: int) -> np.ndarray:
    """``r (M, N)`` -> cluster means ``(M, K)``."""
    onehot = np.zeros((len(lab), K))
    onehot[np.arange(len(lab)), lab] = 1.0
    counts = np.maximum(onehot.sum(0), 1.0)
    return (r @ onehot) / counts


def _bank_cluster_scores(model: EquivariantModel, rows: np.ndarray, render_rows: Callable, angles: np.ndarray | None,
                         offsets_px: np.ndarray, lab: np.ndarray, K: int, J: int, progress: bool, desc: str) -> np.ndarray:
    """Approximate mean cluster rates ``(M, K)`` of shared candidates ``rows`` from the bank: each
    neuron reads the candidate rotated to its own orientation (nearest of ``O·J``) at its own
    offset (nearest feature pixel)."""
    N, O = model.n_neurons, model.n_rotations
    d = model.stride
    if angles is None:
        jj = np.zeros(N, int)
        kk = np.zeros(N, int)
        e_rot = offsets_px
    else:
        i = np.round(np.remainder(angles, 2 * np.pi) / (2 * np.pi / (O * J))).astype(int) % (O * J)
        jj, kk = i % J, i // J
        th = -kk * 2 * np.pi / O  # undo the sector rotation: offsets in the stimulus' own frame
        e_rot = np.stack([np.cos(th) * offsets_px[:, 0] - np.sin(th) * offsets_px[:, 1],
                          np.sin(th) * offsets_px[:, 0] + np.cos(th) * offsets_px[:, 1]], 1)
    e = np.round(e_rot / d).astype(int)
    win = int(min(3, np.abs(e).max())) if len(e) else 0
    e = np.clip(e, -win, win)
    s = model.bank_shape(win)[0]
    cc = model.bank_center(win)
    W = model.weights
    idx = torch.arange(N)
    shift = torch.as_tensor(kk)
    Oi = (torch.arange(O)[None, :] + shift[:, None] * model.rotation_shift) % O
    Wk = torch.gather(W.cpu(), 2, Oi[:, None, :].expand(N, W.shape[1], O))  # neuron weights rolled by its k
    b = model.bias.cpu()
    out = np.zeros((len(rows), K))
    chunk = max(1, 32 // J)
    for c0 in tqdm(range(0, len(rows), chunk), disable=not progress, desc=desc):
        rr = rows[c0:c0 + chunk]
        patches = render_rows(rr, J, s, cc)  # (len(rr) * J, s, s)
        feats = model.bank(patches)  # (M*J, F, O, w, w)
        feats = feats.reshape(len(rr), J, *feats.shape[1:])
        f = feats.permute(0, 1, 4, 5, 2, 3)[:, jj, win - e[:, 1], win - e[:, 0]]  # (M, N, F, O)
        r = model.nonlinearity((f * Wk[None]).sum((2, 3)) + b).numpy()
        out[c0:c0 + len(rr)] = _cluster_means(r, lab, K)
    _ = idx
    return out


def cluster_optimal_gabors(model: ResponseModel, labels: Any, neuron_gabors: np.ndarray,
                           grid: GaborGrid | None = None, top: int = 3, progress: bool = False) -> OptimalStimuli:
    """Per-cluster optimal Gabors (Methods; Fig. 2B): one ``(size, sf, contrast, phase)`` for the
    cluster, placed at each neuron's own optimal-Gabor centre and rotated to its own optimal
    orientation, maximising the mean cluster response.

    On the twin the whole grid is scored from the shared bank (orientation rounded to
    ``2π/(O·J)``, offsets to feature pixels) and the ``top`` best candidates per cluster are then
    evaluated exactly; other models evaluate every candidate exactly. Returns ``params (K, 7)``
    in the canonical frame (centre 0, orientation 0), ``response (K,)`` the mean cluster rate,
    and ``stats['per_neuron'] (N,)``: each neuron's rate to its cluster's Gabor (for the ~87 %
    check of the paper)."""
    grid = grid or gabor_grid()
    ng = np.asarray(neuron_gabors, dtype=np.float64)
    lab = _check_labels(labels, model.n_neurons)
    if ng.shape != (model.n_neurons, len(GABOR_PARAMS)):
        raise ValueError(f"neuron_gabors must be (N, 7) = ({model.n_neurons}, 7), got {ng.shape}")
    shared = grid.shared()
    K = int(lab.max()) + 1
    N = model.n_neurons
    idx = torch.arange(N)

    def exact(rows: np.ndarray, neurons: np.ndarray) -> np.ndarray:
        P = np.repeat(ng[neurons][None], len(rows), 0).copy()  # (M, n, 7)
        P[:, :, 2] = rows[:, None, 0]
        P[:, :, 3] = rows[:, None, 1]
        P[:, :, 4] = rows[:, None, 2]
        P[:, :, 6] = rows[:, None, 3]
        r = model.diag_gabors(torch.as_tensor(P.reshape(-1, 7), dtype=torch.float32),
                              idx[neurons].repeat(len(rows)))
        return r.reshape(len(rows), len(neurons)).numpy()

    if isinstance(model, EquivariantModel):
        J = grid.orientation_substeps
        subs = _orientations_fast(model, J)

        def render_rows(rr: np.ndarray, J: int, s: int, cc: float) -> torch.Tensor:
            p = np.array([[cc, cc, r[0], r[1], r[2], subs[j], r[3]] for r in rr for j in range(J)])
            return render_gabors(p, (s, s))

        offs = ng[:, :2] - model.centers.numpy()
        approx = _bank_cluster_scores(model, shared, render_rows, ng[:, 5], offs, lab, K, J, progress,
                                      "cluster Gabors (bank)")
        cand = np.argsort(-approx, axis=0)[:max(1, int(top))]  # (top, K)
        best = np.zeros(K, int)
        best_val = np.full(K, -np.inf)
        per_neuron = np.zeros(N, np.float32)
        for k in range(K):
            members = np.flatnonzero(lab == k)
            if not len(members):
                continue
            r = exact(shared[cand[:, k]], members)
            m = r.mean(1)
            t = int(np.argmax(m))
            best[k], best_val[k] = cand[t, k], m[t]
            per_neuron[members] = r[t]
        n_eval = int(len(shared) * N + max(1, int(top)) * N)
    else:
        r = np.concatenate([exact(shared[c0:c0 + 16], np.arange(N)) for c0 in
                            tqdm(range(0, len(shared), 16), disable=not progress, desc="cluster Gabors")])
        means = _cluster_means(r, lab, K)
        best = means.argmax(0)
        best_val = means[best, np.arange(K)]
        per_neuron = r[best[lab], np.arange(N)].astype(np.float32)
        n_eval = int(len(shared) * N)
    params = np.zeros((K, len(GABOR_PARAMS)))
    params[:, 2:5] = shared[best, :3]
    params[:, 6] = shared[best, 3]
    return OptimalStimuli(params, best_val, GABOR_PARAMS, dict(per_neuron=per_neuron, n_evaluations=n_eval))


def cluster_gabor_params(cluster_params: np.ndarray, labels: np.ndarray, neuron_gabors: np.ndarray) -> np.ndarray:
    """Per-neuron Gabor rows of the cluster Gabors: cluster shape, each neuron's centre and orientation."""
    lab = np.asarray(labels).astype(int)
    p = np.asarray(cluster_params)[lab].copy()
    p[:, [0, 1, 5]] = np.asarray(neuron_gabors)[:, [0, 1, 5]]
    return p


def cluster_optimal_dogs(model: ResponseModel, labels: Any, neuron_dogs: np.ndarray, grid: DogGrid | None = None,
                         top: int = 3, progress: bool = False) -> OptimalStimuli:
    """Per-cluster optimal DoGs: shared shape, each neuron's own optimal-DoG centre (Fig. 3A);
    bank-scored on the twin with exact evaluation of the ``top`` candidates per cluster."""
    grid = grid or dog_grid()
    nd = np.asarray(neuron_dogs, dtype=np.float64)
    lab = _check_labels(labels, model.n_neurons)
    if nd.shape != (model.n_neurons, len(DOG_PARAMS)):
        raise ValueError(f"neuron_dogs must be (N, 6) = ({model.n_neurons}, 6), got {nd.shape}")
    shared = grid.shared()
    K = int(lab.max()) + 1
    N = model.n_neurons

    def exact(rows: np.ndarray, neurons: np.ndarray) -> np.ndarray:
        P = np.repeat(nd[neurons][None], len(rows), 0).copy()
        P[:, :, 2:] = rows[:, None, :]
        r = model.diag_dogs(torch.as_tensor(P.reshape(-1, 6), dtype=torch.float32),
                            torch.as_tensor(neurons).repeat(len(rows)))
        return r.reshape(len(rows), len(neurons)).numpy()

    if isinstance(model, EquivariantModel):
        def render_rows(rr: np.ndarray, J: int, s: int, cc: float) -> torch.Tensor:
            p = np.column_stack([np.full(len(rr), cc), np.full(len(rr), cc), rr])
            return render_dogs(p, (s, s))

        approx = _bank_cluster_scores(model, shared, render_rows, None, nd[:, :2] - model.centers.numpy(), lab, K, 1,
                                      progress, "cluster DoGs (bank)")
        cand = np.argsort(-approx, axis=0)[:max(1, int(top))]
        best = np.zeros(K, int)
        best_val = np.full(K, -np.inf)
        per_neuron = np.zeros(N, np.float32)
        for k in range(K):
            members = np.flatnonzero(lab == k)
            if not len(members):
                continue
            r = exact(shared[cand[:, k]], members)
            m = r.mean(1)
            t = int(np.argmax(m))
            best[k], best_val[k] = cand[t, k], m[t]
            per_neuron[members] = r[t]
    else:
        r = np.concatenate([exact(shared[c0:c0 + 16], np.arange(N)) for c0 in range(0, len(shared), 16)])
        means = _cluster_means(r, lab, K)
        best = means.argmax(0)
        best_val = means[best, np.arange(K)]
        per_neuron = r[best[lab], np.arange(N)].astype(np.float32)
    params = np.zeros((K, len(DOG_PARAMS)))
    params[:, 2:] = shared[best]
    return OptimalStimuli(params, best_val, DOG_PARAMS, dict(per_neuron=per_neuron))


def cluster_dog_params(cluster_params: np.ndarray, labels: np.ndarray, neuron_dogs: np.ndarray) -> np.ndarray:
    """Per-neuron DoG rows of the cluster DoGs: cluster shape at each neuron's own DoG centre."""
    p = np.asarray(cluster_params)[np.asarray(labels).astype(int)].copy()
    p[:, :2] = np.asarray(neuron_dogs)[:, :2]
    return p


# =========================================================================== indices
def fk_f0(curves: Any, values: Any, k: int) -> np.ndarray:
    """Eq. (11): ``|Σ_j r_j exp(i k s_j)| / Σ_j r_j`` along the last axis.

    (The paper also describes this as "amplitude of the best-fitting sine over the mean", which
    is twice eq. (11); we follow the equation. A half-wave rectified linear neuron has
    F1/F0 = π/4, a phase-invariant energy neuron 0.)"""
    r = np.asarray(curves, dtype=np.float64)
    s = np.asarray(values, dtype=np.float64)
    num = np.abs((r * np.exp(1j * k * s)).sum(-1))
    den = r.sum(-1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def suppression_index(g: Any) -> np.ndarray:
    """Eq. (12) on size-contrast curves ``g (..., C contrasts, S sizes)`` (ascending axes):
    ``(max_s g[C, s] - g[C, S]) / max_s g[C, s]`` at the highest contrast."""
    g = np.asarray(g, dtype=np.float64)
    top = g[..., -1, :]
    m = top.max(-1)
    return np.where(m > 0, (m - top[..., -1]) / np.where(m > 0, m, 1.0), 0.0)


def contrast_index(g: Any) -> np.ndarray:
    """Eq. (13): the same along contrast at the largest size: ``(max_c g[c, S] - g[C, S]) / max``."""
    g = np.asarray(g, dtype=np.float64)
    col = g[..., :, -1]
    m = col.max(-1)
    return np.where(m > 0, (m - col[..., -1]) / np.where(m > 0, m, 1.0), 0.0)


def plaid_index(g: Any) -> np.ndarray:
    """Eq. (14) on plaid curves ``g (..., P preferred contrasts, O orthogonal contrasts)``:
    at the preferred contrast with the highest response to the plain Gabor (``o = 0``... the
    curve over orthogonal contrast), ``(max_o g[p*, o] - g[p*, O]) / max_o g[p*, o]``.

    We take ``p*`` = the highest preferred contrast (the paper's ``g_O = max_p g_{p,C}``
    reads "the tuning curve at the highest preferred contrast", Fig. 2F)."""
    g = np.asarray(g, dtype=np.float64)
    curve = g[..., -1, :]
    m = curve.max(-1)
    return np.where(m > 0, (m - curve[..., -1]) / np.where(m > 0, m, 1.0), 0.0)


def nonlinearity_index(corr_cnn: Any, corr_glm: Any) -> np.ndarray:
    """Eq. (18): ``C_CNN / C_GLM`` (test correlations); NaN where the GLM correlation <= 0."""
    a = np.asarray(corr_cnn, dtype=np.float64)
    b = np.asarray(corr_glm, dtype=np.float64)
    return np.where(b > 1e-6, a / np.where(b > 1e-6, b, 1.0), np.nan)


# =========================================================================== experiments
@dataclass
class ExperimentConfig:
    """Stimulus axes of the in silico experiments (Methods, "In silico experiments")."""

    n_orientations: int = 16
    n_phases: int = 12
    size_factors: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
    contrasts: tuple[float, ...] = (0.0625, 0.125, 0.25, 0.5, 1.0)
    plaid_contrasts: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5)
    energies: tuple[float, ...] = (1.0, 2.0, 4.0)

    def __post_init__(self) -> None:
        if self.n_orientations < 3 or self.n_phases < 3:
            raise ValueError("need at least 3 orientations and 3 phases for eq. (11)")
        for name in ("size_factors", "contrasts", "plaid_contrasts", "energies"):
            vals = tuple(float(v) for v in getattr(self, name))
            if len(vals) < 2 or list(vals) != sorted(vals):
                raise ValueError(f"ExperimentConfig.{name} must be >= 2 ascending values, got {vals}")
            setattr(self, name, vals)


EXPERIMENT_PRESETS = {
    "smoke": dict(n_orientations=8, n_phases=8, size_factors=(0.5, 1.0, 2.0, 4.0), contrasts=(0.25, 0.5, 1.0),
                  plaid_contrasts=(0.0, 0.25, 0.5), energies=(1.0, 3.0)),
    "default": dict(),
    "paper": dict(n_orientations=24, n_phases=24, size_factors=(0.2, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6),
                  contrasts=(0.03, 0.06, 0.125, 0.25, 0.5, 0.75, 1.0),
                  plaid_contrasts=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5), energies=(0.5, 1.0, 2.0, 4.0, 8.0)),
}


def experiment_config(scale: str | None = None, **overrides: Any) -> ExperimentConfig:
    return ExperimentConfig(**pick(EXPERIMENT_PRESETS, scale, **overrides))


def _check_params(params: Any, n: int, width: int, what: str) -> torch.Tensor:
    p = torch.as_tensor(np.asarray(params), dtype=torch.float32)
    if p.dim() != 2 or p.shape != (n, width):
        raise ValueError(f"{what} must be ({n}, {width}), got {tuple(p.shape)}")
    if not torch.isfinite(p).all():
        raise ValueError(f"{what} contains NaN or inf")
    return p


def _sweep(model: ResponseModel, base: torch.Tensor, neurons: torch.Tensor, column: int, values: np.ndarray,
           relative: bool = False, multiplicative: bool = False, evaluate: Callable | None = None) -> np.ndarray:
    """Responses ``(N, V)`` to ``base`` with ``base[:, column]`` set to (or offset/scaled by) values."""
    V = len(values)
    P = base[:, None, :].repeat(1, V, 1)
    v = torch.as_tensor(np.asarray(values), dtype=torch.float32)[None, :]
    if relative:
        P[:, :, column] = P[:, :, column] + v
    elif multiplicative:
        P[:, :, column] = P[:, :, column] * v
    else:
        P[:, :, column] = v.expand(len(base), V)
    ev = evaluate or model.diag_gabors
    r = ev(P.reshape(-1, P.shape[-1]), neurons.repeat_interleave(V))
    return r.reshape(len(base), V).numpy()


def orientation_phase_tuning(model: ResponseModel, gabors: Any, neurons: Any = None,
                             config: ExperimentConfig | None = None) -> dict[str, np.ndarray]:
    """Orientation and phase tuning (Fig. 2C-D): vary one parameter of each neuron's Gabor.

    Returns curves ``orientation (N, n_ori)`` over relative orientations ``[0, π)`` and
    ``phase (N, n_phase)`` over relative phases ``[0, 2π)``, plus their axes and indices
    ``orientation_index`` = F2/F0 and ``phase_index`` = F1/F0 (eq. 11); ``f2_f0_phase`` flags
    frequency doubling (complex-like ON/OFF symmetric responses)."""
    cfg = config or experiment_config()
    idx = _neurons_arg(model, neurons)
    p = _check_params(gabors, len(idx), len(GABOR_PARAMS), "gabors")
    d_ori = np.arange(cfg.n_orientations) * np.pi / cfg.n_orientations
    d_ph = np.arange(cfg.n_phases) * 2 * np.pi / cfg.n_phases
    ori = _sweep(model, p, idx, 5, d_ori, relative=True)
    ph = _sweep(model, p, idx, 6, d_ph, relative=True)
    return {
        "orientation": ori, "orientation_axis": d_ori, "phase": ph, "phase_axis": d_ph,
        "orientation_index": fk_f0(ori, d_ori, 2), "phase_index": fk_f0(ph, d_ph, 1),
        "f2_f0_phase": fk_f0(ph, d_ph, 2),
    }


def size_contrast_tuning(model: ResponseModel, gabors: Any, neurons: Any = None,
                         config: ExperimentConfig | None = None, sizes: Any = None) -> dict[str, np.ndarray]:
    """Size-contrast tuning (Fig. 2E): each neuron's Gabor at sizes ``size_factors x σ*`` (or
    absolute ``sizes``) and absolute contrasts. Curves ``(N, C, S)``; eqs. (12)-(13)."""
    cfg = config or experiment_config()
    idx = _neurons_arg(model, neurons)
    p = _check_params(gabors, len(idx), len(GABOR_PARAMS), "gabors")
    C, S = len(cfg.contrasts), len(cfg.size_factors) if sizes is None else len(sizes)
    P = p[:, None, None, :].repeat(1, C, S, 1)
    P[:, :, :, 4] = torch.as_tensor(cfg.contrasts, dtype=torch.float32)[None, :, None]
    if sizes is None:
        P[:, :, :, 2] = P[:, :, :, 2] * torch.as_tensor(cfg.size_factors, dtype=torch.float32)[None, None, :]
    else:
        P[:, :, :, 2] = torch.as_tensor(np.asarray(sizes), dtype=torch.float32)[None, None, :]
    r = model.diag_gabors(P.reshape(-1, 7), idx.repeat_interleave(C * S)).reshape(len(idx), C, S).numpy()
    return {"size_contrast": r, "size_contrast_axis_0": np.asarray(cfg.contrasts),
            "size_contrast_axis_1": np.asarray(cfg.size_factors if sizes is None else sizes, dtype=np.float64),
            "suppression_index": suppression_index(r), "contrast_index": contrast_index(r)}


def plaid_tuning(model: ResponseModel, gabors: Any, neurons: Any = None,
                 config: ExperimentConfig | None = None) -> dict[str, np.ndarray]:
    """Plaids (Fig. 2F): the neuron's Gabor at contrast ``p`` plus the orthogonal Gabor at
    contrast ``o``, both from ``plaid_contrasts``. Curves ``(N, P, O)``; COI index eq. (14)."""
    cfg = config or experiment_config()
    idx = _neurons_arg(model, neurons)
    p = _check_params(gabors, len(idx), len(GABOR_PARAMS), "gabors")
    pc = torch.as_tensor(cfg.plaid_contrasts, dtype=torch.float32)
    Pn = len(pc)
    P = p[:, None, None, :].repeat(1, Pn, Pn, 1)
    P[:, :, :, 4] = pc[None, :, None]
    co = pc[None, None, :].expand(len(idx), Pn, Pn)
    r = model.diag_plaids(P.reshape(-1, 7), co.reshape(-1), idx.repeat_interleave(Pn * Pn)).reshape(len(idx), Pn, Pn)
    r = r.numpy()
    return {"plaid": r, "plaid_axis_0": np.asarray(cfg.plaid_contrasts), "plaid_axis_1": np.asarray(cfg.plaid_contrasts),
            "plaid_index": plaid_index(r)}


def _normalise_energy(imgs: torch.Tensor, energy: float) -> torch.Tensor:
    n = imgs.flatten(1).norm(dim=1).clamp_min(1e-8)
    return imgs * (energy / n)[:, None, None]


def energy_comparison(model: ResponseModel, gabors: Any, dogs: Any, meis: Any, neurons: Any = None,
                      config: ExperimentConfig | None = None) -> dict[str, np.ndarray]:
    """Eqs. (15)-(17): optimal Gabor, DoG and MEI scaled to the same L2 energy at ``E`` levels.

    ``meis (N, H, W)`` are full images. Returns responses ``energy (N, 3, E)`` (Gabor, DoG, MEI)
    and the three mean ratios."""
    cfg = config or experiment_config()
    idx = _neurons_arg(model, neurons)
    g = _check_params(gabors, len(idx), len(GABOR_PARAMS), "gabors")
    d = _check_params(dogs, len(idx), len(DOG_PARAMS), "dogs")
    m = torch.as_tensor(np.asarray(meis, dtype=np.float32))
    H, W = model.image_shape
    if m.shape != (len(idx), H, W):
        raise ValueError(f"meis must be ({len(idx)}, {H}, {W}) full images, got {tuple(m.shape)}")
    E = len(cfg.energies)
    out = np.zeros((len(idx), 3, E), np.float32)
    bs = 128
    for b0 in range(0, len(idx), bs):
        sl = slice(b0, b0 + bs)
        imgs = [render_gabors(g[sl], (H, W)), render_dogs(d[sl], (H, W)), m[sl]]
        for si, im in enumerate(imgs):
            for ei, e in enumerate(cfg.energies):
                out[sl, si, ei] = model.diag(_normalise_energy(im, e).clamp(-0.5, 0.5), idx[sl]).numpy()
    eps = 1e-6
    gv, dv, mv = out[:, 0], out[:, 1], out[:, 2]
    return {"energy": out, "energy_axis_0": np.arange(3), "energy_axis_1": np.asarray(cfg.energies),
            "gabor_vs_dog": (gv / np.maximum(dv, eps)).mean(1), "gabor_vs_mei": (gv / np.maximum(mv, eps)).mean(1),
            "dog_vs_mei": (dv / np.maximum(mv, eps)).mean(1)}


def natural_surround_probe(model: ResponseModel, images: Any, radii: Any, neurons: Any = None,
                           centers: Any = None) -> np.ndarray:
    """Surround suppression measured on natural images (an in-distribution counterpart of eq. 12).

    For each neuron and radius ``r``: the mean response over ``images (B, H, W)`` with every
    pixel farther than ``r`` from the neuron's RF centre set to grey (0), divided by the mean
    response to the intact images. A ratio above 1 means the removed surround suppressed the
    neuron. ``radii`` is a scalar, ``(R,)`` shared radii or ``(N, R)`` per-neuron radii (pixels);
    ``centers (N, 2)`` default to the model's RF centres. Returns ``(N, R)``. Used to check
    whether a twin learned the surround of the truth on the kind of stimuli it was trained on.
    """
    idx = _neurons_arg(model, neurons)
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    H, W = model.image_shape
    if x.dim() != 3 or tuple(x.shape[1:]) != (H, W) or len(x) == 0:
        raise ValueError(f"images must be (B, {H}, {W}) with B >= 1, got {tuple(x.shape)}")
    c = _centers_arg(model, idx, centers)
    r = torch.as_tensor(np.asarray(radii, dtype=np.float32))
    if r.dim() == 0:
        r = r.reshape(1, 1).expand(len(idx), 1)
    elif r.dim() == 1:
        r = r[None].expand(len(idx), -1)
    if r.dim() != 2 or r.shape[0] != len(idx) or r.shape[1] < 1 or not torch.isfinite(r).all() or (r <= 0).any():
        raise ValueError(f"radii must be positive: a scalar, (R,) or ({len(idx)}, R), got shape {tuple(r.shape)}")
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    B = len(x)
    out = np.zeros((len(idx), r.shape[1]), np.float64)
    for i, n in enumerate(idx.tolist()):
        d2 = (xx - c[i, 0]) ** 2 + (yy - c[i, 1]) ** 2
        masks = (d2[None] <= r[i, :, None, None] ** 2).float()  # (R, H, W)
        stims = torch.cat([x, (x[None] * masks[:, None]).reshape(-1, H, W)])
        resp = model.diag(stims, torch.full((len(stims),), n, dtype=torch.long)).double()
        full = resp[:B].mean()
        out[i] = (resp[B:].reshape(-1, B).mean(1) / full.clamp_min(1e-12)).numpy()
    return out


def run_experiments(model: ResponseModel, gabors: Any, neurons: Any = None, dogs: Any = None, meis: Any = None,
                    config: ExperimentConfig | None = None, progress: bool = False) -> dict[str, Any]:
    """All Gabor experiments (+ the energy comparison when ``dogs`` and ``meis`` are given).

    Returns ``{"tuning": {name: curves, name_axis_i: values}, "indices": {name: (N,)}}`` with
    the index names of :data:`INDEX_NAMES`."""
    cfg = config or experiment_config()
    steps = ["orientation/phase", "size-contrast", "plaids"] + (["energy"] if dogs is not None and meis is not None else [])
    bar = tqdm(total=len(steps), disable=not progress, desc="in silico experiments")
    tuning: dict[str, np.ndarray] = {}
    indices: dict[str, np.ndarray] = {}
    op = orientation_phase_tuning(model, gabors, neurons, cfg)
    bar.update()
    tuning.update({"orientation": op["orientation"], "orientation_axis_0": op["orientation_axis"],
                   "phase": op["phase"], "phase_axis_0": op["phase_axis"]})
    indices.update(orientation=op["orientation_index"], phase=op["phase_index"], f2_f0_phase=op["f2_f0_phase"])
    sc = size_contrast_tuning(model, gabors, neurons, cfg)
    bar.update()
    tuning.update({k: v for k, v in sc.items() if k.startswith("size_contrast")})
    indices.update(suppression=sc["suppression_index"], contrast=sc["contrast_index"])
    pl = plaid_tuning(model, gabors, neurons, cfg)
    bar.update()
    tuning.update({k: v for k, v in pl.items() if k.startswith("plaid") and k != "plaid_index"})
    indices["plaid"] = pl["plaid_index"]
    if dogs is not None and meis is not None:
        en = energy_comparison(model, gabors, dogs, meis, neurons, cfg)
        bar.update()
        tuning.update({k: v for k, v in en.items() if k.startswith("energy")})
        for k in ("gabor_vs_dog", "gabor_vs_mei", "dog_vs_mei"):
            indices[k] = en[k]
    bar.close()
    return {"tuning": tuning, "indices": {k: np.asarray(v, dtype=np.float32) for k, v in indices.items()}}
