"""The layer-based (dead-leaves) scene model of ECON §2: scopes, regions, composition.

Layers are indexed by generation step t = 1..T (back to front), stored along axis 1 of
the tensors below: index 0 is the deepest layer (the background, whose shape is all ones).
"""

from __future__ import annotations

import torch


def _check_layers(shapes: torch.Tensor) -> None:
    if not isinstance(shapes, torch.Tensor) or shapes.ndim != 4:
        raise ValueError(f"shapes must be a (N, T, H, W) tensor, got {getattr(shapes, 'shape', type(shapes))}")
    if shapes.shape[1] < 1:
        raise ValueError("shapes must hold at least one layer")


def scopes_from_shapes(shapes: torch.Tensor) -> torch.Tensor:
    """Scopes of eq. (1): s_T = 1, s_t = s_{t+1} ⊙ (1 − m_{t+1}); returns (N, T, H, W)."""
    _check_layers(shapes)
    t_max = shapes.shape[1]
    scopes = [torch.ones_like(shapes[:, 0])]
    for t in range(t_max - 1, 0, -1):  # s_{t-1} from s_t and m_t (0-based)
        scopes.append(scopes[-1] * (1 - shapes[:, t]))
    return torch.stack(scopes[::-1], dim=1)


def regions_from_shapes(shapes: torch.Tensor) -> torch.Tensor:
    """Visible regions of eq. (2): r_t = s_t ⊙ m_t; returns (N, T, H, W)."""
    return scopes_from_shapes(shapes) * shapes


def compose(appearances: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
    """Final image of eq. (3): x = Σ_t r_t ⊙ x_t with appearances (N, T, 3, H, W)."""
    _check_layers(shapes)
    if appearances.ndim != 5 or appearances.shape[:2] != shapes.shape[:2] or appearances.shape[3:] != shapes.shape[2:]:
        raise ValueError(
            f"appearances must be (N, T, C, H, W) matching shapes {tuple(shapes.shape)}, "
            f"got {tuple(appearances.shape)}"
        )
    regions = regions_from_shapes(shapes)
    return (regions.unsqueeze(2) * appearances).sum(1)


def paint_layers(appearances: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
    """Sequential canvas painting x ← m_t ⊙ x_t + (1 − m_t) ⊙ x (the loop of §2)."""
    _check_layers(shapes)
    canvas = torch.zeros_like(appearances[:, 0])
    for t in range(shapes.shape[1]):
        m = shapes[:, t].unsqueeze(1)
        canvas = m * appearances[:, t] + (1 - m) * canvas
    return canvas
