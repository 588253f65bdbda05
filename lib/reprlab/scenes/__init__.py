"""Chapter 4: ECON — scene decomposition and generation by competing experts.

Modules: ``sprites`` (synthetic scenes, appendix C.1), ``layers`` (dead-leaves model,
eqs. 1–3), ``expert`` (batched attention U-Nets and VAEs, C.2), ``econ`` (competition,
ELBO eqs. 10–14, generation), ``train`` (C.3 training, presets, model files),
``metrics`` (ARI-FG, segmentation covering, specialisation), ``generate`` (layered
generation checks, full evaluation, export, C.4 random search), ``cli``.
"""

from reprlab.scenes.econ import ECON, Decomposition, ECONConfig
from reprlab.scenes.sprites import CLASSES, SceneBatch, make_scenes

__all__ = ["CLASSES", "ECON", "Decomposition", "ECONConfig", "SceneBatch", "make_scenes"]
