"""The digital twin: one rotation-equivariant core shared by all animals, one readout per animal.

Thesis sec. 2.5 (Fig. 2.5) and the rotation-invariant clustering paper, eq. (1):
``a_n(x) = f(r_n . s_n . Phi(x))`` with ``Phi`` the core of :mod:`reprlab.v1.cores` and the
readouts of :mod:`reprlab.v1.readouts`. Images are in the chapter's stimulus space (luminance
deviation from grey, :mod:`reprlab.v1.stimuli`); the model z-scores them with the training
set's mean and standard deviation and may average-pool them by an integer factor before the
core (``downsample``; exact rotation equivariance is kept for even image sizes).

For later chapters the model exposes

* :meth:`V1Twin.core_features` - feature maps ``(B, F, O, h, w)`` for batched in silico work;
* :meth:`V1Twin.readout_weights` - the "bar codes" ``r_n`` reshaped ``(N, F, O)``;
* :meth:`V1Twin.rf_centers` - readout positions in input pixels ``(x, y)``;
* :meth:`V1Twin.predict_from_readout` - responses of hypothetical neurons with given feature
  weights at given positions (e.g. cluster means, ch. 6 confusion matrices).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reprlab.io import load_checkpoint, save_checkpoint
from reprlab.v1.cores import RotationEquivariantCore
from reprlab.v1.readouts import (
    FactorizedReadout,
    GaussianReadout,
    output_nonlinearity,
    point_readout,
)

__all__ = ["READOUTS", "V1Twin", "default_config"]

READOUTS = {"gaussian": GaussianReadout, "factorized": FactorizedReadout}
CHECKPOINT_FORMAT = "reprlab.v1.twin-model/1"


def default_config(
    animals: Sequence[tuple[str, int]] = (("animal", 100),),
    input_shape: tuple[int, int] = (36, 64),
    **kwargs: Any,
) -> dict:
    """A complete model config (JSON-able); ``kwargs`` update the top-level keys."""
    cfg = {
        "core": {
            "in_channels": 1,
            "features": 16,
            "num_rotations": 8,
            "kernel_sizes": [13, 5, 5],
            "n_max": None,
            "final_nonlinearity": True,
            "pool": 1,
        },
        "readout": {"kind": "gaussian", "positive": False, "nonlinearity": "elu1"},
        "input_shape": [int(input_shape[0]), int(input_shape[1])],
        "downsample": 1,
        "image_mean": 0.0,
        "image_std": 1.0,
        "animals": [{"name": str(a), "n_neurons": int(n)} for a, n in animals],
    }
    for key, val in kwargs.items():
        if key in ("core", "readout") and isinstance(val, dict):
            cfg[key] = {**cfg[key], **val}
        else:
            cfg[key] = val
    return cfg


def _as_image_batch(images: Any, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dim() == 2:
        x = x[None]
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"images must be (B, H, W) or (B, 1, H, W), got shape {tuple(x.shape)}")
    if tuple(x.shape[-2:]) != tuple(shape):
        raise ValueError(f"images must be {tuple(shape)} pixels (H, W), got {tuple(x.shape[-2:])}")
    if not torch.is_floating_point(x):
        x = x.float()
    return x.to(device=device, dtype=torch.float32)


class V1Twin(nn.Module):
    """Shared rotation-equivariant core + one readout per animal (see module docstring)."""

    def __init__(self, config: dict, generator: torch.Generator | None = None):
        super().__init__()
        cfg = copy.deepcopy(config)
        for key in ("core", "readout", "input_shape", "animals"):
            if key not in cfg:
                raise ValueError(f"model config is missing {key!r}; expected keys like default_config()")
        if not cfg["animals"]:
            raise ValueError("model config lists no animals; expected at least one (name, n_neurons)")
        names = [a["name"] for a in cfg["animals"]]
        if len(set(names)) != len(names):
            raise ValueError(f"animal names must be unique, got {names}")
        ds = int(cfg.get("downsample", 1))
        H, W = (int(s) for s in cfg["input_shape"])
        if ds < 1 or H % ds or W % ds:
            raise ValueError(f"downsample must be a positive divisor of the image size {H}x{W}, got {ds}")
        pool = int(cfg["core"].get("pool", 1))
        if pool < 1 or (H // ds) % pool or (W // ds) % pool:
            raise ValueError(f"core pool={pool} must divide the downsampled image size {H // ds}x{W // ds}")
        kind = cfg["readout"].get("kind", "gaussian")
        if kind not in READOUTS:
            raise ValueError(f"readout kind must be one of {sorted(READOUTS)}, got {kind!r}")
        self.config = cfg
        self.core = RotationEquivariantCore(**cfg["core"])
        self.feature_shape = (H // ds // pool, W // ds // pool)
        ro_kwargs = {k: v for k, v in cfg["readout"].items() if k != "kind"}
        self.readouts = nn.ModuleList(
            READOUTS[kind](a["n_neurons"], self.core.out_channels, self.feature_shape,
                           generator=generator, **ro_kwargs)
            for a in cfg["animals"]
        )
        self._index = {name: i for i, name in enumerate(names)}

    # ------------------------------------------------------------------ basic properties
    @property
    def animals(self) -> list[str]:
        return [a["name"] for a in self.config["animals"]]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def input_shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.config["input_shape"])  # type: ignore[return-value]

    @property
    def downsample(self) -> int:
        """Input pooling factor applied before the core."""
        return int(self.config.get("downsample", 1))

    @property
    def stride(self) -> int:
        """Input pixels per feature-map pixel (input downsampling x core pooling)."""
        return self.downsample * self.core.pool

    @property
    def n_features(self) -> int:
        return self.core.features

    @property
    def n_rotations(self) -> int:
        return self.core.num_rotations

    def readout(self, animal: str) -> nn.Module:
        if animal not in self._index:
            raise ValueError(f"unknown animal {animal!r}; the model has {self.animals}")
        return self.readouts[self._index[animal]]

    def n_neurons(self, animal: str) -> int:
        return self.readout(animal).n_neurons

    # ------------------------------------------------------------------ computation
    def _features(self, images: Any) -> torch.Tensor:
        x = _as_image_batch(images, self.input_shape, self.device)
        x = (x - float(self.config.get("image_mean", 0.0))) / float(self.config.get("image_std", 1.0))
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)
        return self.core(x)

    def forward(self, images: Any, animal: str, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted rates ``(B, N_animal)`` for images ``(B, H, W)``; ``noise`` jitters the
        Gaussian readout positions during training."""
        return self.readout(animal)(self._features(images), noise)

    def core_features(self, images: Any) -> torch.Tensor:
        """Core feature maps ``(B, F, O, h, w)`` (``h, w`` = input size / :attr:`stride`)."""
        z = self._features(images)
        b, _, h, w = z.shape
        return z.reshape(b, self.n_features, self.n_rotations, h, w)

    def readout_weights(self, animal: str) -> torch.Tensor:
        """Feature weights ``r_n`` of all neurons of ``animal`` as ``(N, F, O)`` (detached)."""
        r = self.readout(animal).features.detach()
        return r.reshape(r.shape[0], self.n_features, self.n_rotations).clone()

    def readout_bias(self, animal: str) -> torch.Tensor:
        return self.readout(animal).bias.detach().clone()

    def _feature_to_input_px(self, xy: torch.Tensor) -> torch.Tensor:
        d = self.stride
        return xy * d + (d - 1) / 2.0

    def input_px_to_feature_px(self, xy: torch.Tensor) -> torch.Tensor:
        """Input-image pixels ``(x, y)`` to feature-map pixels."""
        d = self.stride
        return (xy - (d - 1) / 2.0) / d

    def _input_px_to_grid(self, xy: torch.Tensor) -> torch.Tensor:
        d = self.stride
        h, w = self.feature_shape
        f = (xy - (d - 1) / 2.0) / d
        scale = xy.new_tensor([max(w - 1, 1), max(h - 1, 1)])
        return f / scale * 2.0 - 1.0

    def rf_centers(self, animal: str) -> torch.Tensor:
        """Readout positions in input-image pixels ``(N, 2)`` as ``(x, y)`` = (column, row)."""
        return self._feature_to_input_px(self.readout(animal).positions())

    def predict_from_readout(
        self,
        images: Any,
        feature_weights: torch.Tensor,
        positions: torch.Tensor,
        bias: torch.Tensor | float = 0.0,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rates ``(B, K)`` of hypothetical neurons with feature weights ``(K, F, O)`` read out
        at ``positions (K, 2)`` (input pixels ``(x, y)``) through the output nonlinearity.

        Pass precomputed ``features`` (from the core, ``(B, F*O, h, w)`` or
        ``(B, F, O, h, w)``) to reuse one core pass for many readouts.
        """
        w = torch.as_tensor(feature_weights, dtype=torch.float32, device=self.device)
        p = torch.as_tensor(positions, dtype=torch.float32, device=self.device)
        if w.dim() != 3 or w.shape[1:] != (self.n_features, self.n_rotations):
            raise ValueError(
                f"feature_weights must be (K, {self.n_features}, {self.n_rotations}), got {tuple(w.shape)}"
            )
        if p.shape != (w.shape[0], 2):
            raise ValueError(f"positions must be (K, 2) = ({w.shape[0]}, 2) pixels (x, y), got {tuple(p.shape)}")
        z = self._features(images) if features is None else features
        if z.dim() == 5:
            z = z.reshape(z.shape[0], -1, z.shape[-2], z.shape[-1])
        zs = point_readout(z, self._input_px_to_grid(p).clamp(-1, 1))  # (B, C, K)
        drive = torch.einsum("bck,kc->bk", zs, w.reshape(w.shape[0], -1))
        kind = self.config["readout"].get("nonlinearity", "elu1")
        return output_nonlinearity(drive + torch.as_tensor(bias, dtype=drive.dtype, device=drive.device), kind)

    @torch.no_grad()
    def predict(self, images: Any, animal: str, batch_size: int = 256) -> np.ndarray:
        """Eval-mode predictions ``(B, N)`` as a numpy array, in batches (no gradients)."""
        was_training = self.training
        self.eval()
        try:
            x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
            outs = [self(x[i:i + batch_size], animal).cpu() for i in range(0, len(x), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(outs).numpy()

    def regularizer(self, smoothness: float = 0.0, sparsity: float = 0.0,
                    features_l1: float = 0.0, mask_l1: float = 0.0,
                    animal: str | None = None) -> torch.Tensor:
        """Core smoothness/sparsity + readout L1 (one animal, or all when ``animal`` is None)."""
        reg = self.core.regularizer(smoothness, sparsity)
        ros = self.readouts if animal is None else [self.readout(animal)]
        for ro in ros:
            reg = reg + ro.regularizer(features_l1, mask_l1)
        return reg

    def constrain(self) -> None:
        for ro in self.readouts:
            ro.constrain()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write ``{format, config, state_dict, extra}`` atomically (weights-only loadable)."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "extra": extra or {},
        }
        return save_checkpoint(path, state)

    @classmethod
    def from_state(cls, state: dict, device: torch.device | str | None = None) -> V1Twin:
        if not isinstance(state, dict) or "config" not in state or "state_dict" not in state:
            raise ValueError("not a V1Twin checkpoint: expected keys 'config' and 'state_dict'")
        model = cls(state["config"])
        model.load_state_dict(state["state_dict"])
        if device is not None:
            model.to(device)
        model.eval()
        return model

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str | None = None) -> V1Twin:
        """Load a model written by :meth:`save` (or a training checkpoint of :mod:`~reprlab.v1.train`)."""
        state = load_checkpoint(path)
        if state.get("format") != CHECKPOINT_FORMAT and "model" in state:
            state = state["model"]
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a V1Twin checkpoint (format {state.get('format')!r})")
        return cls.from_state(state, device)
