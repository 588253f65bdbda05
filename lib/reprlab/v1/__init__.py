"""Chapters 6-7: simulated and real V1 data, the rotation-equivariant digital twin, analyses.

Submodules (import them explicitly; this package stays light so ``--help`` is fast):

- :mod:`reprlab.v1.stimuli`     natural images, Gabor / DoG / plaid generators (vectorised)
- :mod:`reprlab.v1.population`  ground-truth simulated V1 population (known cell families)
- :mod:`reprlab.v1.data`        :class:`~reprlab.v1.data.V1Dataset`, Sensorium folders, NWB
- :mod:`reprlab.v1.simulate`    :func:`~reprlab.v1.simulate.simulate_dataset` (one dataset per animal)

Stimulus space used everywhere in this chapter: images are float32 arrays ``(..., H, W)`` of
luminance deviation from mean grey, in [-0.5, 0.5] (0 = grey screen). Pixel ``[i, j]`` is row
``i`` (the y coordinate, downwards) and column ``j`` (the x coordinate, rightwards).
"""
