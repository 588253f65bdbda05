"""VGG-19 Gram loss used as the texture-quality measure (paper section 5, eqs. (6)-(7)).

The standard 19-layer VGG network with average instead of max pooling; a Gram matrix
(eq. (1)) is taken on the rectified output of each convolutional layer that follows a
pooling layer, plus the first one: conv1_1, conv2_1, conv3_1, conv4_1, conv5_1. Eq. (6)
is the relative squared Gram error per layer, eq. (7) its average over the five layers.

Pretrained weights cannot be downloaded here. Name a local file with the ``weights``
argument or the ``REPRLAB_VGG19_WEIGHTS`` environment variable: a torchvision
``vgg19`` state dict (``.pth``, loaded with ``weights_only=True``) or a ``.safetensors``
file with the same keys (``features.<i>.weight`` / ``.bias``; classifier keys ignored).
Torchvision weights expect RGB in [0, 1] normalised by the ImageNet mean and std
(``preprocess='torchvision'``); Caffe/Lasagne-converted weights expect BGR in [0, 255]
minus the channel means (``preprocess='caffe'``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

ENV_VAR = "REPRLAB_VGG19_WEIGHTS"

#: VGG-19 configuration ('M' = pooling), as in Simonyan & Zisserman (2014), config E
CFG: tuple = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
#: torchvision ``features`` indices of the conv layers whose ReLU outputs give the Grams
GRAM_LAYERS: dict[str, int] = {"conv1_1": 0, "conv2_1": 5, "conv3_1": 10, "conv4_1": 19, "conv5_1": 28}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def vgg19_features(pool: str = "avg") -> nn.Sequential:
    """The VGG-19 convolutional stack with torchvision's layer indexing, ``pool`` in {'avg', 'max'}."""
    if pool not in ("avg", "max"):
        raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
    layers: list[nn.Module] = []
    c = 3
    for v in CFG:
        if v == "M":
            layers.append(nn.AvgPool2d(2, 2) if pool == "avg" else nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers)


def resolve_weights_path(weights: str | os.PathLike | None) -> Path:
    """The weights file from the argument or $REPRLAB_VGG19_WEIGHTS; clear errors when absent."""
    if weights is None:
        weights = os.environ.get(ENV_VAR) or None
    if weights is None:
        raise ValueError(
            "VGG-19 weights are needed for the VGG texture loss (eqs. 6-7) but none were given and "
            f"nothing is downloaded at run time: pass weights='/path/to/vgg19.pth' (a torchvision vgg19 "
            f"state dict or .safetensors) or set {ENV_VAR}"
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"VGG-19 weights file not found: {path}")
    return path


def save_random_vgg19_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a VGG-19 ``features`` state dict with random (PyTorch default init) weights (for tests)."""
    from reprlab.io import atomic_path

    torch.manual_seed(seed)
    state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file(state, str(tmp))
    else:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    return path


class VGGGramLoss(nn.Module):
    """Eq. (7): mean over five VGG-19 layers of eq. (6), ``sum (G^l(x) - G^l(y))^2 / sum G^l(x)^2``.

    ``x`` is the reference texture, ``y`` the synthesised one; both (C, H, W) or (1, C, H, W)
    in [0, 1] (grayscale is repeated to RGB).
    """

    def __init__(self, weights: str | os.PathLike | None = None, preprocess: str = "torchvision",
                 layers: tuple[str, ...] = tuple(GRAM_LAYERS)):
        super().__init__()
        if preprocess not in ("torchvision", "caffe"):
            raise ValueError(f"preprocess must be 'torchvision' or 'caffe', got {preprocess!r}")
        unknown = [name for name in layers if name not in GRAM_LAYERS]
        if unknown or not layers:
            raise ValueError(f"layers must be a non-empty subset of {list(GRAM_LAYERS)}, got {list(layers)}")
        self.path = resolve_weights_path(weights)
        self.preprocess_mode = preprocess
        self.layers = tuple(layers)
        last = max(GRAM_LAYERS[name] for name in self.layers)
        self.features = vgg19_features("avg")[: last + 2]  # up to and including the last ReLU needed
        self._load(self.path)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def _load(self, path: Path) -> None:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - report any unreadable file clearly
                raise ValueError(f"cannot read VGG-19 weights from {path} as a torch state dict: {err}") from err
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{path} does not hold a state dict (found {type(state).__name__})")
        own = self.features.state_dict()
        picked = {}
        for key in own:
            for cand in (f"features.{key}", key, f"module.features.{key}"):
                if cand in state:
                    picked[key] = state[cand]
                    break
        missing = [k for k in own if k not in picked]
        if missing:
            raise ValueError(
                f"{path} is not a VGG-19 state dict: missing {missing[:4]}{'...' if len(missing) > 4 else ''} "
                "(expected torchvision keys 'features.<i>.weight'/'features.<i>.bias')"
            )
        for k, v in picked.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, VGG-19 needs {tuple(own[k].shape)}")
        self.features.load_state_dict(picked)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected an image (1|3, H, W) or (B, 1|3, H, W), got {tuple(x.shape)}")
        if x.shape[-1] < 16 or x.shape[-2] < 16:
            raise ValueError(f"VGG-19 needs images of at least 16x16 pixels (four poolings), got {tuple(x.shape[-2:])}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        dev, dt = x.device, x.dtype
        if self.preprocess_mode == "torchvision":
            mean = torch.tensor(IMAGENET_MEAN, device=dev, dtype=dt).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=dev, dtype=dt).view(1, 3, 1, 1)
            return (x - mean) / std
        mean = torch.tensor(CAFFE_MEAN_BGR, device=dev, dtype=dt).view(1, 3, 1, 1)
        return x.flip(1) * 255.0 - mean

    def grams(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. (1) Gram matrices of the chosen layers (after ReLU), each (B, N_l, N_l)."""
        from reprlab.textures.model import gram_matrix

        h = self._prep(x.to(next(self.parameters()).device))
        wanted = {GRAM_LAYERS[name] + 1: name for name in self.layers}  # index of the ReLU after the conv
        out = {}
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in wanted:
                out[wanted[i]] = gram_matrix(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Eq. (7) between reference ``x`` and synthesis ``y`` (averaged over the layers)."""
        gx, gy = self.grams(x), self.grams(y)
        per_layer = [((gx[k] - gy[k]) ** 2).sum(dim=(1, 2)) / (gx[k] ** 2).sum(dim=(1, 2)) for k in self.layers]
        return torch.stack(per_layer).mean(0).squeeze(0)

    def per_layer(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Eq. (6) per layer, as floats."""
        with torch.no_grad():
            gx, gy = self.grams(x), self.grams(y)
            return {k: float(((gx[k] - gy[k]) ** 2).sum() / (gx[k] ** 2).sum()) for k in self.layers}


def vgg_loss(reference: torch.Tensor, synthesized: torch.Tensor, weights: str | os.PathLike | None = None,
             preprocess: str = "torchvision") -> float:
    """Eq. (7) as a float: VGG-19 Gram loss of ``synthesized`` w.r.t. ``reference`` (local weights)."""
    with torch.no_grad():
        return float(VGGGramLoss(weights, preprocess)(reference, synthesized))
