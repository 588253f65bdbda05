"""Plotting helpers shared by notebooks and widgets (one module per chapter, e.g. ``viz.textures``)."""
