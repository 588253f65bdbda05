"""Panel apps of reprlab: components that run in ``panel serve`` and inside JupyterLab cells.

The apps hold layout and callbacks only; the science lives in the chapter packages
(e.g. :mod:`reprlab.textures`). Import the app modules directly, e.g.
``from reprlab.apps.texture_studio import TextureStudio``; importing this package stays cheap.
"""
