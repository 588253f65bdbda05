"""reprlab: image representations in deep networks and digital twins of visual cortex.

Implements the thesis *Image Representations in Deep Neural Networks and their
Applications to Neural Data Modelling* (Ustyuzhaninov 2022) as a library of torch
models used by one notebook per chapter and by Panel apps.
"""

from importlib.metadata import PackageNotFoundError, version

from reprlab._device import device, seed_everything, torch_threads
from reprlab.scales import SCALES, current_scale, pick

try:
    __version__ = version("reprlab")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+local"

__all__ = ["SCALES", "__version__", "current_scale", "device", "pick", "seed_everything", "torch_threads"]
