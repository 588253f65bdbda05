"""Rotation alignment of readout feature weights (thesis ch. 6; ICLR 2020 paper, Sec. 3-4).

A rotation-equivariant core computes F features, each in O rotated copies spanning ``period``
(2π in the paper: channel ``o`` is the feature rotated by ``o * period / O``). A neuron's readout
feature weights ``r_n`` are therefore an array of shape (F, O). Readouts of neurons that compute
the same function at different orientations are cyclic shifts of each other along the O axis.

Layout used throughout: readout arrays of shape ``(N, F, O)``, or flat ``(N, K)`` with
``K = F * O`` and the orientation index fastest (``k = f * O + o``), given ``n_orientations=O``.

Rotation convention (eqs. 2 and 4): rotating ``r`` by α gives
``r(α)[f, k] = Σ_m w_m(α) r[f, (k + m) mod O]`` with weights ``w(α)`` over the O channel
offsets; ``S_α[k, j] = w_{(j - k) mod O}(α)`` is the O × O matrix of the paper. For eq. (2) the
weights are the linear interpolation ``w_i = 1 - γ``, ``w_{i+1} = γ`` (``i = ⌊αO/period⌋``); for the
relaxation eq. (4) they are von Mises weights ``w_m ∝ exp(T cos(2π(α - m·period/O)/period))``.
If a readout is a canonical readout ``c`` rotated by φ (``r[f, k] = c[f, k - φO/period]``), then
``S_α r = c`` for α = φ: the fitted ``angles_`` estimate each neuron's rotation relative to its
class representative, up to one global offset per class of rotation-equivalent neurons.

Norm-preserving rotations (``normalize=True``, the aligner's default): S_α at a non-grid angle and
S̃_α at finite T average neighbouring channels and shrink a readout (by up to 24% on a fitted twin's
rough readouts, whose adjacent channels are uncorrelated). Shrinking lowers every unsquared distance,
so eq. (3) pulled all angles half-way between channels. Rescaling each rotated readout to its
original norm removes this bias; at grid angles nothing changes. ``normalize=False`` is the paper's
rotation exactly (all functions accept the flag; the paper-exact form is their default).

The alignment objective eq. (3) sums *unsquared* Euclidean distances over all pairs. The identity
``Σ_ij ||a_i - a_j||² = 2N Σ_i ||a_i||² - 2||Σ_i a_i||²`` that would make the sum O(N) holds only
for squared distances, so it does not apply here (squared distances would align every readout to a
single global template, which is what the robust unsquared sum avoids when there are several
classes). Instead: the exact sum is computed in chunks (O(N² K) time, O(chunk · N) memory) and
training uses unbiased minibatches of pairs (all pairs within a random batch of B neurons; each
epoch visits every neuron once: O(N B K) time per epoch), with the final objective evaluated
exactly.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import gammaln, ive
from tqdm.auto import tqdm

from reprlab._device import device as pick_device
from reprlab._device import torch_threads

TWO_PI = 2.0 * math.pi
DEFAULT_BETAS = tuple(float(b) for b in np.logspace(-3, 1, 20))

Callback = Callable[[int, float, dict], Any]

__all__ = [
    "DEFAULT_BETAS",
    "RotationAligner",
    "SyntheticReadouts",
    "alignment_loss",
    "as_readouts",
    "expected_noise_distance",
    "interpolation_weights",
    "mean_pairwise_distance",
    "pairwise_distance_sum",
    "periodic_gp_readouts",
    "relaxed_objective",
    "rotate_readouts",
    "rotation_matrix",
    "rough_readouts",
    "half_grid_distance",
    "shift_distance_curve",
    "synthetic_alignment_experiment",
    "von_mises_weights",
]


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def as_readouts(
    R: Any, n_orientations: int | None = None, name: str = "R", allow_nan: bool = False
) -> np.ndarray:
    """Return readouts as a float array of shape (N, F, O).

    ``R`` is (N, F, O), or (N, K) together with ``n_orientations=O`` (orientation index fastest).
    Raises ValueError for other shapes, empty input, a K not divisible by O, or non-finite values.
    """
    arr = R.detach().cpu().numpy() if isinstance(R, torch.Tensor) else np.asarray(R)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32, copy=False)
    if arr.ndim == 2:
        if n_orientations is None:
            raise ValueError(
                f"{name} has shape {arr.shape} (N, K); pass n_orientations=O to reshape it to "
                "(N, F, O), or pass a 3-D (N, F, O) array"
            )
        O = int(n_orientations)
        if O < 2 or arr.shape[1] % O:
            raise ValueError(
                f"{name} has K={arr.shape[1]} columns, not a multiple of n_orientations={O} (>= 2)"
            )
        arr = arr.reshape(arr.shape[0], arr.shape[1] // O, O)
    elif arr.ndim == 3:
        if n_orientations is not None and arr.shape[2] != int(n_orientations):
            raise ValueError(
                f"{name} has shape {arr.shape} (N, F, O) but n_orientations={n_orientations}"
            )
        if arr.shape[2] < 2:
            raise ValueError(f"{name} needs at least 2 orientations, got shape {arr.shape}")
    else:
        raise ValueError(f"{name} must be (N, F, O) or (N, K), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    if not allow_nan and not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.all(np.isfinite(arr.reshape(arr.shape[0], -1)), axis=1))
        raise ValueError(
            f"{name} has {bad.size} readout(s) with NaN/inf values (first rows: {bad[:10].tolist()});"
            " drop or impute them first"
        )
    return arr


def _angles(angles: Any, n: int, name: str = "angles") -> np.ndarray:
    a = np.asarray(angles, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(n, float(a))
    if a.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN/inf")
    return a


def _check_period(period: float) -> float:
    period = float(period)
    if not (period > 0 and math.isfinite(period)):
        raise ValueError(f"period must be a positive finite angle, got {period}")
    return period


# --------------------------------------------------------------------------------------------
# Rotations: eq. (2) and its relaxation eq. (4)
# --------------------------------------------------------------------------------------------


def interpolation_weights(alpha: torch.Tensor, n_orientations: int, period: float = TWO_PI) -> torch.Tensor:
    """Weights over channel offsets of the linear-interpolation rotation S_α, eq. (2).

    ``alpha`` has any shape; the result has shape ``alpha.shape + (O,)`` with ``1 - γ`` at offset
    ``i = ⌊αO/period⌋ mod O`` and ``γ = αO/period - ⌊αO/period⌋`` at ``i + 1``.
    """
    O = int(n_orientations)
    x = torch.remainder(alpha * (O / period), O)
    near = torch.round(x)
    x = torch.remainder(torch.where((x - near).abs() < 1e-9 * O, near, x), O)  # exact at grid angles
    i = torch.floor(x)
    gamma = x - i
    i = i.long() % O
    w = torch.zeros(*alpha.shape, O, dtype=alpha.dtype, device=alpha.device)
    w.scatter_add_(-1, i.unsqueeze(-1), (1.0 - gamma).unsqueeze(-1))
    w.scatter_add_(-1, ((i + 1) % O).unsqueeze(-1), gamma.unsqueeze(-1))
    return w


def von_mises_weights(
    alpha: torch.Tensor, temperature: torch.Tensor | float, n_orientations: int, period: float = TWO_PI
) -> torch.Tensor:
    """Von Mises weights γ of the relaxed rotation S̃_α, eq. (4), shape ``alpha.shape + (O,)``.

    ``γ_m ∝ exp(T cos(2π(α - m·period/O)/period))`` (a softmax, so it is stable for any T ≥ 0).
    ``temperature`` broadcasts against ``alpha``.
    """
    O = int(n_orientations)
    theta = torch.arange(O, dtype=alpha.dtype, device=alpha.device) * (period / O)
    T = torch.as_tensor(temperature, dtype=alpha.dtype, device=alpha.device)
    logits = T.unsqueeze(-1) * torch.cos((TWO_PI / period) * (alpha.unsqueeze(-1) - theta))
    return torch.softmax(logits, dim=-1)


def _roll_index(O: int, device: torch.device) -> torch.Tensor:
    m = torch.arange(O, device=device)
    return (m[:, None] + m[None, :]) % O  # [m, k] -> (k + m) mod O


def _apply_weights(R: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``out[..., n, f, k] = Σ_m W[..., n, m] R[n, f, (k + m) mod O]`` for R (N, F, O), W (..., N, O)."""
    Rr = R[:, :, _roll_index(R.shape[-1], R.device)]  # (N, F, O_m, O_k)
    return torch.einsum("...nm,nfmk->...nfk", W, Rr)


def rotation_matrix(
    alpha: float, n_orientations: int, temperature: float | None = None, period: float = TWO_PI
) -> np.ndarray:
    """The O × O cyclic rotation matrix: S_α of eq. (2) (``temperature=None``) or S̃_α of eq. (4).

    Rotating a readout r (O × F as in the paper) is ``S_α @ r``. At α = k·period/O, S_α is the
    permutation shifting by k, and S̃_α tends to it as T → ∞.
    """
    period = _check_period(period)
    O = int(n_orientations)
    if O < 2:
        raise ValueError(f"n_orientations must be >= 2, got {n_orientations}")
    a = torch.tensor([float(alpha)], dtype=torch.float64)
    if temperature is None:
        w = interpolation_weights(a, O, period)[0]
    else:
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        w = von_mises_weights(a, float(temperature), O, period)[0]
    idx = (torch.arange(O)[None, :] - torch.arange(O)[:, None]) % O  # [k, j] -> (j - k) mod O
    return w[idx].numpy()


def rotate_readouts(
    R: Any,
    angles: Any,
    temperature: float | None = None,
    period: float = TWO_PI,
    n_orientations: int | None = None,
    chunk_size: int = 8192,
    normalize: bool = False,
) -> np.ndarray:
    """Rotate each readout ``R[n]`` by ``angles[n]``: eq. (2) if ``temperature`` is None, else eq. (4).

    ``R`` is (N, F, O) or (N, K) with ``n_orientations``; the result has the same shape as ``R``.
    ``normalize=True`` rescales each rotated readout to the norm of the original (see
    :func:`_renormalise`: removes the contraction of interpolated rotations). Cost O(N F O²) time,
    O(chunk_size F O²) extra memory.
    """
    period = _check_period(period)
    shape = np.shape(R)
    X = as_readouts(R, n_orientations)
    N, _, O = X.shape
    a = _angles(angles, N)
    if temperature is not None and not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    out = np.empty_like(X)
    dt = torch.float64 if X.dtype == np.float64 else torch.float32
    for s in range(0, N, chunk_size):
        Xt = torch.as_tensor(X[s : s + chunk_size], dtype=dt)
        at = torch.as_tensor(a[s : s + chunk_size], dtype=dt)
        if temperature is None:
            W = interpolation_weights(at, O, period)
        else:
            W = von_mises_weights(at, float(temperature), O, period)
        Y = _apply_weights(Xt, W)
        if normalize:
            Y = _renormalise(Y.reshape(Y.shape[0], -1), Xt.reshape(Xt.shape[0], -1)).reshape(Y.shape)
        out[s : s + chunk_size] = Y.numpy()
    return out.reshape(shape)


def _renormalise(A: torch.Tensor, X: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rescale rows of rotated readouts ``A`` (..., K) to the norms of the originals ``X`` (..., K).

    Why: S_α of eq. (2) at a non-grid angle (and S̃_α of eq. 4 at any finite T) averages
    neighbouring orientation channels, which shrinks a readout by up to ``sqrt((1 + ρ)/2)`` (ρ =
    correlation of adjacent channels; ρ ≈ 0 for a fitted twin's readouts, a 24% shrink). Unsquared
    pairwise distances shrink with it, so eq. (3) is minimised by moving every neuron to half-way
    angles - a bias that swamps the alignment signal on rough readouts. With the norm restored,
    rotations are isometries (exactly so at grid angles, where nothing changes).
    """
    na = torch.sqrt((A * A).sum(-1, keepdim=True) + eps)
    nx = torch.sqrt((X * X).sum(-1, keepdim=True))
    return A * (nx / na)


# --------------------------------------------------------------------------------------------
# Pairwise sums (eq. 3) and the regularised objective (eq. 5)
# --------------------------------------------------------------------------------------------


def pairwise_distance_sum(
    X: Any,
    chunk_size: int = 1024,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> float:
    """Exact ``Σ_{i<j} ||x_i - x_j||`` (unsquared Euclidean) over the rows of ``X`` (N, D).

    Computed in row chunks through Gram matrices of the centred data, accumulated in float64:
    O(N² D) time, O(chunk_size · N) memory — N = 50,000 rows of 128 dims is ~3·10¹¹ flops. ``dtype``
    defaults to float64 for float64 input and float32 otherwise.
    """
    arr = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"X must be a non-empty (N, D) array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("X contains NaN/inf")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if dtype is None:
        dtype = torch.float64 if arr.dtype == np.float64 else torch.float32
    dev = pick_device(device)
    Xt = torch.as_tensor(arr, dtype=torch.float64)
    Xt = (Xt - Xt.mean(0)).to(device=dev, dtype=dtype)
    sq = (Xt * Xt).sum(1)
    N = Xt.shape[0]
    total = 0.0
    with torch.no_grad():
        for s in range(0, N, chunk_size):
            e = min(s + chunk_size, N)
            G = Xt[s:e] @ Xt[s:].T
            d = (sq[s:e, None] + sq[None, s:] - 2.0 * G).clamp_min_(0.0).sqrt_()
            c = e - s
            total += float(torch.triu(d[:, :c], diagonal=1).sum(dtype=torch.float64))
            total += float(d[:, c:].sum(dtype=torch.float64))
    return total


def mean_pairwise_distance(X: Any, **kwargs: Any) -> float:
    """Mean of ``||x_i - x_j||`` over the N(N-1)/2 pairs i < j (see :func:`pairwise_distance_sum`)."""
    n = np.shape(X)[0]
    if n < 2:
        raise ValueError(f"need at least 2 rows for pairwise distances, got {n}")
    return pairwise_distance_sum(X, **kwargs) / (n * (n - 1) / 2)


def alignment_loss(
    R: Any,
    angles: Any,
    temperature: float | None = None,
    period: float = TWO_PI,
    n_orientations: int | None = None,
    reduction: str = "sum",
    chunk_size: int = 1024,
    device: str | torch.device | None = None,
    normalize: bool = False,
) -> float:
    """Alignment loss eq. (3): ``Σ_{i<j} ||r_i(α_i) - r_j(α_j)||`` with r(α) = S_α r (eq. 2).

    With ``temperature`` the relaxed rotation S̃_α (eq. 4) is used instead; ``normalize`` rescales
    rotated readouts to their original norms (see :func:`rotate_readouts`). ``reduction='mean'``
    divides by the number of pairs. Exact, chunked: O(N² K) time, O(chunk_size · N) memory.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    X = as_readouts(R, n_orientations)
    A = rotate_readouts(X, angles, temperature, period, normalize=normalize).reshape(X.shape[0], -1)
    f = pairwise_distance_sum if reduction == "sum" else mean_pairwise_distance
    return f(A, chunk_size=chunk_size, device=device)


def relaxed_objective(
    R: Any,
    angles: Any,
    temperature: float,
    beta: float,
    period: float = TWO_PI,
    n_orientations: int | None = None,
    chunk_size: int = 1024,
    device: str | torch.device | None = None,
    normalize: bool = False,
) -> float:
    """The regularised objective eq. (5) in per-pair / per-neuron mean form (exact, chunked).

    ``mean_{i<j} ||r̃_i(α_i) - r̃_j(α_j)|| + β mean_i ||r̃_i(0) - r_i||``. This equals the paper's
    sum form divided by N(N-1)/2 with ``β_paper = β (N-1)/2``; the mean form keeps the β sweep
    [0.001, 10] meaningful for any N (with raw sums the pair term grows as N² and the reconstruction
    term only as N). O(N² K) time.
    """
    X = as_readouts(R, n_orientations)
    pair = alignment_loss(X, angles, temperature, period, reduction="mean", chunk_size=chunk_size, device=device,
                          normalize=normalize)
    R0 = rotate_readouts(X, 0.0, temperature, period, normalize=normalize)
    rec = np.sqrt(((R0 - X) ** 2).reshape(X.shape[0], -1).sum(1)).mean()
    return float(pair + beta * rec)


def shift_distance_curve(
    r1: Any,
    r2: Any,
    angles: Any,
    temperatures: Sequence[float | None] = (None, 1.0, 3.0, 10.0),
    period: float = TWO_PI,
) -> dict[str, np.ndarray]:
    """Paper Fig. 3 data: ``||r1 - r2(α)||`` as r2 is rotated by each α (eq. 2 and eq. 4 at each T).

    ``r1``, ``r2`` are single readouts (F, O) or (O,). Returns ``{'angles', 'T=<t>'/'interp': curve}``.
    """
    a = np.atleast_2d(np.asarray(r1, dtype=np.float64))
    b = np.atleast_2d(np.asarray(r2, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"r1 and r2 must have the same shape, got {a.shape} and {b.shape}")
    ang = np.asarray(angles, dtype=np.float64).ravel()
    out: dict[str, np.ndarray] = {"angles": ang}
    B = np.repeat(b[None], ang.size, axis=0)
    for T in temperatures:
        rot = rotate_readouts(B, ang, T, period)
        key = "interp" if T is None else f"T={T:g}"
        out[key] = np.sqrt(((rot - a[None]) ** 2).sum(axis=(1, 2)))
    return out


# --------------------------------------------------------------------------------------------
# The aligner
# --------------------------------------------------------------------------------------------


def _softplus_inv(x: float) -> float:
    return float(x + math.log(-math.expm1(-x))) if x < 20 else float(x)


def _batch_objective(
    Rb: torch.Tensor,
    Rr: torch.Tensor,
    alpha: torch.Tensor,
    T: torch.Tensor,
    beta: torch.Tensor,
    period: float,
    eps: float,
    metric: str,
    normalize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-problem minibatch estimate of eq. (5) (mean form) for P problems at once.

    Rb (B, K) flat readouts, Rr (B, O, K) their cyclic rolls (``Rr[b, m]`` = readout b shifted by
    m channels), alpha (P, B), T (P,), beta (P,). Returns (objective, pair term, reconstruction
    term), each (P,). 'euclidean': mean over the B(B-1) ordered pairs, O(P B² K) time;
    'sqeuclidean': the identity Σ_ij ||a_i - a_j||² = 2B Σ_i ||a_i - ā||² makes it O(P B K).
    """
    P, B = alpha.shape
    O = Rr.shape[1]
    W = von_mises_weights(alpha, T[:, None], O, period)  # (P, B, O)
    A = torch.bmm(W.transpose(0, 1), Rr).transpose(0, 1)  # (P, B, K)
    if normalize:
        A = _renormalise(A, Rb[None])
    A = A - A.mean(1, keepdim=True)
    sq = (A * A).sum(-1)  # (P, B)
    if B < 2:
        pair = torch.zeros(P, dtype=A.dtype, device=A.device)
    elif metric == "sqeuclidean":
        pair = 2.0 * sq.sum(1) / (B - 1)
    else:
        d2 = torch.baddbmm(sq[:, :, None] + sq[:, None, :], A, A.transpose(1, 2), alpha=-2.0)
        eye = torch.eye(B, dtype=torch.bool, device=A.device)
        d2 = torch.relu(d2).masked_fill(eye, 0.0)  # exact zeros (and no gradient) on the diagonal
        pair = (torch.sqrt(d2 + eps).sum((1, 2)) - B * math.sqrt(eps)) / (B * (B - 1))
    W0 = von_mises_weights(torch.zeros_like(T), T, O, period)  # (P, O)
    R0 = (W0 @ Rr.transpose(0, 1).reshape(O, -1)).reshape(P, B, -1)
    if normalize:
        R0 = _renormalise(R0, Rb[None])
    rec = R0 - Rb[None]
    e = torch.sqrt((rec * rec).sum(-1) + eps).mean(-1)
    return pair + beta * e, pair, e


_SMALL_WORK = 2e7  # P·B²·K below which the optimiser runs single-threaded on CPU


def _rolled(X: torch.Tensor) -> torch.Tensor:
    """(N, F, O) -> (N, O, F*O) with ``out[n, m]`` = readout n shifted by m channels (flat)."""
    N, F, O = X.shape
    return X[:, :, _roll_index(O, X.device)].permute(0, 2, 1, 3).reshape(N, O, F * O)


@dataclass
class _OptResult:
    angles: torch.Tensor  # (P, N) best angles per problem
    t_raw: torch.Tensor  # (P,) best raw temperatures
    objective: np.ndarray  # (P,) best epoch objective
    stop_epoch: np.ndarray  # (P,) epoch at which each problem stopped (0 = ran to max)
    history: np.ndarray  # (epochs, P) epoch objectives
    epochs: int
    stopped_by_callback: bool
    seconds_per_epoch: float


class RotationAligner:
    """Rotation alignment of readouts by minimising eq. (5) (scikit-learn style).

    For each β of a sweep (default: the paper's 20 log-spaced values in [0.001, 10]) and each of
    ``n_init`` random initial angle sets ("several initial angles per neuron"), the angles α_i and
    the shared temperature T = softplus(t) ≥ 0 are fitted with Adam (lazy per-neuron updates for the
    angles in a minibatch) from learning rate ``lr``, decayed ``n_lr_decays`` times by ``lr_decay``
    whenever the epoch objective has not improved by a relative ``tol`` for ``patience`` epochs,
    and stopped early after the last decay. All β × restart problems run vectorised; finished
    problems drop out of the computation. Per β the restart with the lowest objective eq. (5) is
    kept; among β with fitted T > ``min_temperature`` the fit with the smallest alignment loss
    eq. (3) (mean over pairs, interpolation rotations S_α of eq. 2) is selected. If no β reaches
    the temperature, the fit with the largest T is selected with a warning.

    Large N: the sweep runs on a random subsample of ``sweep_subsample`` neurons (all of them when
    N ≤ sweep_subsample). The remaining neurons are then aligned to the aligned subsample one by
    one (block-coordinate minimisation of eq. 5's pair term: grid of 4·O angles + 9-point
    refinement, O(N M K O)).

    Per-neuron multi-start: gradient descent on eq. (5) leaves many neurons of heterogeneous real
    readouts in local minima (on a fitted twin ~40% of the angles moved in the first pass, lowering
    eq. 3). So up to ``coordinate_rounds`` passes re-align *every* neuron to the aligned subsample
    over the same angle grid (stopping when < 1% of the angles change; ``coordinate_changes_``), and
    then all N angles and T are fine-tuned jointly for up to ``finetune_epochs`` epochs with the
    selected β on unbiased minibatches of pairs. Finally eq. (3) is evaluated exactly over all
    N(N-1)/2 pairs (``alignment_loss_``, chunked, O(N² K) time, O(chunk_size · N) memory).
    Cost per epoch: O(P M B K) in the sweep (P = len(betas) · n_init, B = min(batch_size, M)),
    O(N B K) in the fine-tuning; O(N M K O) per coordinate pass. With ``metric='sqeuclidean'`` the
    pair term is O(N K) per step via Σ_ij ||a_i - a_j||² = 2N Σ_i ||a_i - ā||², but that is not
    the paper's eq. (3) (squared distances align everything to a single template).

    The objective is the mean form of eq. (5) (see :func:`relaxed_objective`).

    Parameters
    ----------
    n_orientations: O, needed for flat (N, K) input (orientation index fastest).
    period: angle spanned by the O orientation channels (2π for the paper's core).
    betas: β values of the sweep. n_init: random initial angle sets per β.
    temperature_init: initial T (small T = smooth landscape). min_temperature: selection threshold.
    lr, n_lr_decays, lr_decay, patience, tol, max_epochs: Adam schedule and early stopping.
    batch_size: neurons per minibatch (all pairs within it are used).
    sweep_subsample, coordinate_rounds, finetune_epochs: large-N and multi-start steps above.
    output: what ``transform`` returns: 'relaxed' (eq. 4 at the fitted T, paper Fig. 4A) or
        'interpolated' (eq. 2 at the fitted angles).
    normalize: rescale every rotated readout to its original norm (default True). The paper's
        eq. (2)/(4) rotations average neighbouring channels and so shrink readouts at non-grid
        angles; the unsquared distances of eq. (3) then favour half-way angles for every neuron,
        which on rough readouts (a fitted twin's have adjacent-channel correlation ≈ 0) swamps the
        alignment: planted rotations of twin readouts came back at half-grid angles with circular
        correlation ≈ 0.4. With ``normalize`` the objective, the β selection by eq. (3), the
        coordinate passes and ``transform`` all use norm-preserving rotations (identical to the
        paper's at grid angles). False reproduces the paper's rotations exactly.
    metric: 'euclidean' (paper) or 'sqeuclidean'.
    random_state, device, dtype, progress (tqdm), callback(epoch, loss, state) -> True to stop.

    Fitted attributes: ``angles_`` (N,) in [0, period), ``temperature_``, ``beta_``,
    ``alignment_loss_`` (exact mean eq. 3), ``objective_`` (mean eq. 5 estimate), ``sweep_``
    (per-β records), ``history_`` (epoch objectives of the selected fit, then of the fine-tuning),
    ``n_epochs_``, ``timing_`` (seconds per phase and per epoch), ``n_features_``,
    ``n_orientations_``, ``reference_index_`` (neurons of the sweep subsample).
    """

    def __init__(
        self,
        n_orientations: int | None = None,
        *,
        period: float = TWO_PI,
        betas: Sequence[float] = DEFAULT_BETAS,
        n_init: int = 3,
        temperature_init: float = 1.0,
        min_temperature: float = 5.0,
        lr: float = 0.05,
        n_lr_decays: int = 3,
        lr_decay: float = 0.3,
        patience: int = 10,
        tol: float = 1e-3,
        max_epochs: int = 1000,
        batch_size: int = 512,
        sweep_subsample: int = 1024,
        coordinate_rounds: int = 5,
        finetune_epochs: int = 100,
        output: str = "relaxed",
        normalize: bool = True,
        metric: str = "euclidean",
        chunk_size: int = 1024,
        random_state: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        progress: bool = True,
        callback: Callback | None = None,
    ) -> None:
        self.n_orientations = n_orientations
        self.period = period
        self.betas = betas
        self.n_init = n_init
        self.temperature_init = temperature_init
        self.min_temperature = min_temperature
        self.lr = lr
        self.n_lr_decays = n_lr_decays
        self.lr_decay = lr_decay
        self.patience = patience
        self.tol = tol
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.sweep_subsample = sweep_subsample
        self.coordinate_rounds = coordinate_rounds
        self.finetune_epochs = finetune_epochs
        self.output = output
        self.normalize = normalize
        self.metric = metric
        self.chunk_size = chunk_size
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.progress = progress
        self.callback = callback

    # -- validation ------------------------------------------------------------------------
    def _validate(self) -> None:
        _check_period(self.period)
        betas = np.asarray(self.betas, dtype=np.float64).ravel()
        if betas.size == 0 or not np.all(np.isfinite(betas)) or np.any(betas < 0):
            raise ValueError(f"betas must be a non-empty sequence of finite values >= 0, got {self.betas}")
        checks = {
            "n_init": (self.n_init, 1),
            "n_lr_decays": (self.n_lr_decays, 0),
            "patience": (self.patience, 1),
            "max_epochs": (self.max_epochs, 1),
            "batch_size": (self.batch_size, 2),
            "sweep_subsample": (self.sweep_subsample, 2),
            "finetune_epochs": (self.finetune_epochs, 0),
            "coordinate_rounds": (self.coordinate_rounds, 0),
            "chunk_size": (self.chunk_size, 1),
        }
        for key, (value, lo) in checks.items():
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
                raise ValueError(f"{key} must be an integer >= {lo}, got {value!r}")
        if not self.temperature_init > 0:
            raise ValueError(f"temperature_init must be > 0, got {self.temperature_init}")
        if not self.min_temperature >= 0:
            raise ValueError(f"min_temperature must be >= 0, got {self.min_temperature}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.lr_decay < 1:
            raise ValueError(f"lr_decay must be in (0, 1), got {self.lr_decay}")
        if not self.tol >= 0:
            raise ValueError(f"tol must be >= 0, got {self.tol}")
        if self.output not in ("relaxed", "interpolated"):
            raise ValueError(f"output must be 'relaxed' or 'interpolated', got {self.output!r}")
        if self.metric not in ("euclidean", "sqeuclidean"):
            raise ValueError(f"metric must be 'euclidean' or 'sqeuclidean', got {self.metric!r}")

    # -- the optimiser -----------------------------------------------------------------------
    def _optimise(
        self,
        Xt: torch.Tensor,
        angles: torch.Tensor,
        t_raw: torch.Tensor,
        beta: torch.Tensor,
        rng: np.random.Generator,
        max_epochs: int,
        desc: str,
        eps: float,
        epoch_offset: int = 0,
    ) -> _OptResult:
        """Adam with lazy angle updates, plateau LR decays and early stopping for P problems."""
        N = Xt.shape[0]
        P = angles.shape[0]
        dev = Xt.device
        angles = angles.clone()
        t_raw = t_raw.clone()
        Xflat = Xt.reshape(N, -1)
        B = N if self.metric == "sqeuclidean" else min(int(self.batch_size), N)
        # tiny problems run single-threaded on CPU: thread hand-offs cost more than the work
        small = dev.type == "cpu" and P * B * B * Xflat.shape[1] < _SMALL_WORK
        with torch_threads(1 if small else None):
            return self._run(Xt, Xflat, angles, t_raw, beta, rng, max_epochs, desc, eps, epoch_offset, B)

    def _run(
        self,
        Xt: torch.Tensor,
        Xflat: torch.Tensor,
        angles: torch.Tensor,
        t_raw: torch.Tensor,
        beta: torch.Tensor,
        rng: np.random.Generator,
        max_epochs: int,
        desc: str,
        eps: float,
        epoch_offset: int,
        B: int,
    ) -> _OptResult:
        import time

        N, P = Xt.shape[0], angles.shape[0]
        dev, period = Xt.device, float(self.period)
        lr = torch.full((P,), float(self.lr), dtype=Xt.dtype, device=dev)
        b1, b2, adam_eps = 0.9, 0.999, 1e-8
        m_a, v_a = torch.zeros_like(angles), torch.zeros_like(angles)
        count = torch.zeros(N, dtype=Xt.dtype, device=dev)
        m_t, v_t = torch.zeros_like(t_raw), torch.zeros_like(t_raw)
        t_steps = 0
        best = torch.full((P,), float("inf"), dtype=torch.float64, device=dev)
        best_angles, best_traw = angles.clone(), t_raw.clone()
        bad = torch.zeros(P, dtype=torch.long, device=dev)
        decays = torch.zeros(P, dtype=torch.long, device=dev)
        active = torch.ones(P, dtype=torch.bool, device=dev)
        stop_epoch = torch.zeros(P, dtype=torch.long, device=dev)
        history: list[np.ndarray] = []
        n_batches = math.ceil(N / B)
        full_batch = n_batches == 1
        Rr_full = _rolled(Xt) if full_batch else None
        bar = tqdm(total=int(max_epochs), desc=desc, disable=not self.progress, leave=False)
        epoch, stopped_by_callback = 0, False
        t0 = time.perf_counter()
        try:
            for epoch in range(1, int(max_epochs) + 1):
                act = torch.nonzero(active).squeeze(1)
                order = np.arange(N) if full_batch else rng.permutation(N)
                epoch_obj = torch.zeros(P, dtype=torch.float64, device=dev)
                for idx_np in np.array_split(order, n_batches):
                    idx = torch.as_tensor(idx_np, device=dev)
                    Rb = Xflat if full_batch else Xflat[idx]
                    Rr = Rr_full if full_batch else _rolled(Xt[idx])
                    rows, cols = act[:, None], idx[None, :]
                    a = angles[rows, cols].requires_grad_(True)
                    t = t_raw[act].requires_grad_(True)
                    obj, _, _ = _batch_objective(
                        Rb, Rr, a, torch.nn.functional.softplus(t), beta[act], period, eps, self.metric,
                        bool(self.normalize),
                    )
                    obj.sum().backward()
                    with torch.no_grad():
                        g = a.grad
                        count[idx] += 1
                        m = b1 * m_a[rows, cols] + (1 - b1) * g
                        v = b2 * v_a[rows, cols] + (1 - b2) * g * g
                        m_a[rows, cols], v_a[rows, cols] = m, v
                        c = count[idx][None, :]
                        step = (m / (1 - b1**c)) / ((v / (1 - b2**c)).sqrt() + adam_eps)
                        angles[rows, cols] = a.detach() - lr[act][:, None] * step
                        t_steps += 1
                        gt = t.grad
                        m_t[act] = b1 * m_t[act] + (1 - b1) * gt
                        v_t[act] = b2 * v_t[act] + (1 - b2) * gt * gt
                        st = (m_t[act] / (1 - b1**t_steps)) / ((v_t[act] / (1 - b2**t_steps)).sqrt() + adam_eps)
                        t_raw[act] = t.detach() - lr[act] * st
                        epoch_obj[act] += obj.detach().double() * (len(idx_np) / N)
                with torch.no_grad():
                    angles.remainder_(period)
                    epoch_obj = torch.where(active, epoch_obj, torch.full_like(epoch_obj, float("nan")))
                    history.append(epoch_obj.cpu().numpy())
                    improved = active & (torch.isinf(best) | (epoch_obj < best - self.tol * best.abs()))
                    best = torch.where(improved, epoch_obj, best)
                    best_angles[improved] = angles[improved]
                    best_traw[improved] = t_raw[improved]
                    bad = torch.where(improved, torch.zeros_like(bad), bad + active.long())
                    plateau = active & (bad >= int(self.patience))
                    can_decay = plateau & (decays < int(self.n_lr_decays))
                    lr = torch.where(can_decay, lr * float(self.lr_decay), lr)
                    decays = decays + can_decay.long()
                    bad = torch.where(can_decay, torch.zeros_like(bad), bad)
                    finished = plateau & ~can_decay
                    stop_epoch = torch.where(finished, torch.full_like(stop_epoch, epoch), stop_epoch)
                    active = active & ~finished
                temps = torch.nn.functional.softplus(t_raw)
                bar.update(1)
                bar.set_postfix(best=f"{float(best.min()):.4g}", active=int(active.sum()),
                                T=f"{float(temps.max()):.3g}")
                if self.callback is not None:
                    state = {
                        "phase": desc,
                        "epoch": epoch,
                        "active": int(active.sum()),
                        "objective": epoch_obj.cpu().numpy(),
                        "temperature": temps.detach().cpu().numpy(),
                        "beta": beta.cpu().numpy(),
                    }
                    if self.callback(epoch_offset + epoch, float(best.min()), state):
                        stopped_by_callback = True
                        break
                if not bool(active.any()):
                    break
        finally:
            bar.close()
        elapsed = time.perf_counter() - t0
        return _OptResult(
            angles=torch.remainder(best_angles, period),
            t_raw=best_traw,
            objective=best.cpu().numpy(),
            stop_epoch=stop_epoch.cpu().numpy(),
            history=np.stack(history) if history else np.zeros((0, P)),
            epochs=epoch,
            stopped_by_callback=stopped_by_callback,
            seconds_per_epoch=elapsed / max(epoch, 1),
        )

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, R: Any, y: Any = None) -> RotationAligner:
        """Fit angles and temperature to readouts ``R`` (N, F, O) or (N, K); returns self."""
        import time

        self._validate()
        X = as_readouts(R, self.n_orientations)
        N, F, O = X.shape
        if N < 2:
            raise ValueError(f"alignment needs at least 2 readouts, got {N}")
        period = float(self.period)
        rng = np.random.default_rng(self.random_state)
        dev = pick_device(self.device)
        dt = self.dtype
        Xt = torch.as_tensor(X, dtype=dt, device=dev)
        scale = float((Xt.reshape(N, -1) ** 2).sum(1).mean())
        eps = 1e-10 * max(scale, 1e-30)
        nrm = bool(self.normalize)
        timing: dict[str, float] = {}

        # 1. β sweep × restarts on the (sub)sample
        M = min(N, int(self.sweep_subsample))
        sub = np.arange(N) if M == N else np.sort(rng.choice(N, size=M, replace=False))
        betas = np.asarray(self.betas, dtype=np.float64).ravel()
        nb, ni = betas.size, int(self.n_init)
        init = rng.uniform(0.0, period, size=(ni, M))
        t0 = time.perf_counter()
        res = self._optimise(
            Xt[sub],
            torch.as_tensor(np.tile(init, (nb, 1)), dtype=dt, device=dev),
            torch.full((nb * ni,), _softplus_inv(float(self.temperature_init)), dtype=dt, device=dev),
            torch.as_tensor(np.repeat(betas, ni), dtype=dt, device=dev),
            rng, int(self.max_epochs), "align: β sweep", eps,
        )
        timing["sweep_seconds"] = time.perf_counter() - t0
        timing["sweep_seconds_per_epoch"] = res.seconds_per_epoch
        temps = torch.nn.functional.softplus(res.t_raw).double().cpu().numpy()
        ang = res.angles.double().cpu().numpy()

        # 2. selection: per β the best restart by eq. (5); among T > min_temperature the smallest eq. (3)
        t0 = time.perf_counter()
        Xs = X[sub]
        sweep = []
        for bi in range(nb):
            ps = np.arange(bi * ni, (bi + 1) * ni)
            p = int(ps[np.argmin(res.objective[ps])])
            loss3 = alignment_loss(Xs, ang[p], None, period, reduction="mean",
                                   chunk_size=self.chunk_size, device=dev, normalize=nrm)
            sweep.append({
                "beta": float(betas[bi]),
                "problem": p,
                "restart": int(p - bi * ni),
                "temperature": float(temps[p]),
                "objective": float(res.objective[p]),
                "alignment_loss": float(loss3),
                "restart_objectives": res.objective[ps].tolist(),
                "n_epochs": int(res.stop_epoch[p]) if res.stop_epoch[p] > 0 else int(res.epochs),
            })
        ok = [s for s in sweep if s["temperature"] > self.min_temperature]
        if ok:
            chosen = min(ok, key=lambda s: s["alignment_loss"])
        else:
            chosen = max(sweep, key=lambda s: s["temperature"])
            warnings.warn(
                f"no β reached temperature > {self.min_temperature} (max T = {chosen['temperature']:.3g});"
                " selected the fit with the largest T. Use larger betas or more max_epochs.",
                RuntimeWarning, stacklevel=2,
            )
        for s in sweep:
            s["selected"] = s is chosen
        p = chosen["problem"]
        angles = np.empty(N)
        angles[sub] = ang[p]
        T = float(temps[p])
        objective = float(res.objective[p])
        history = res.history[: chosen["n_epochs"], p]
        stopped = res.stopped_by_callback
        timing["selection_seconds"] = time.perf_counter() - t0

        # 3. per-neuron multi-start: align every neuron to the aligned (sub)sample over a grid of
        #    angles (all N when M < N, then ``coordinate_rounds`` passes), then fine-tune all jointly
        t0 = time.perf_counter()
        if M < N:
            rest = np.setdiff1d(np.arange(N), sub)
            ref = rotate_readouts(Xs, ang[p], T, period, normalize=nrm).reshape(M, -1)
            angles[rest] = _align_to_reference(X[rest], ref, T, period, dev, dt, normalize=nrm)
        changed: list[float] = []
        for _ in range(int(self.coordinate_rounds) if not stopped else 0):
            ref = rotate_readouts(Xs, angles[sub], T, period, normalize=nrm).reshape(M, -1)
            new = _align_to_reference(X, ref, T, period, dev, dt, normalize=nrm)
            changed.append(float(np.mean(np.abs(np.angle(np.exp(1j * (new - angles)))) > 0.05)))
            angles = new
            if changed[-1] < 0.01:
                break
        self.coordinate_changes_ = changed
        timing["coordinate_alignment_seconds"] = time.perf_counter() - t0
        if (M < N or changed) and self.finetune_epochs > 0 and not stopped:
            t0 = time.perf_counter()
            fine = self._optimise(
                Xt,
                torch.as_tensor(angles[None], dtype=dt, device=dev),
                res.t_raw[p : p + 1].clone(),
                torch.tensor([chosen["beta"]], dtype=dt, device=dev),
                rng, int(self.finetune_epochs), "align: fine-tune", eps,
                epoch_offset=res.epochs,
            )
            angles = fine.angles[0].double().cpu().numpy()
            T = float(torch.nn.functional.softplus(fine.t_raw[0]))
            objective = float(fine.objective[0])
            history = np.concatenate([history, fine.history[:, 0]])
            stopped = fine.stopped_by_callback
            timing["finetune_seconds"] = time.perf_counter() - t0
            timing["finetune_seconds_per_epoch"] = fine.seconds_per_epoch
            timing["finetune_epochs"] = fine.epochs

        # 4. exact eq. (3) over all pairs
        t0 = time.perf_counter()
        self.alignment_loss_ = alignment_loss(X, angles, None, period, reduction="mean",
                                              chunk_size=self.chunk_size, device=dev, normalize=nrm)
        timing["exact_loss_seconds"] = time.perf_counter() - t0
        self.angles_ = np.remainder(angles, period)
        self.temperature_ = T
        self.beta_ = float(chosen["beta"])
        self.objective_ = objective
        self.sweep_ = sweep
        self.history_ = history
        self.n_epochs_ = int(res.epochs)
        self.stopped_by_callback_ = stopped
        self.timing_ = timing
        self.reference_index_ = sub
        self.n_features_, self.n_orientations_ = F, O
        self._fit_shape = np.shape(R)
        self._fit_hash = _hash(X)
        self._X = X
        return self

    # -- transforms ------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "angles_"):
            raise ValueError("this RotationAligner is not fitted yet; call fit(R) first")

    def _rotate(self, X: np.ndarray, angles: np.ndarray, output: str | None = None) -> np.ndarray:
        mode = self.output if output is None else output
        if mode not in ("relaxed", "interpolated"):
            raise ValueError(f"output must be 'relaxed' or 'interpolated', got {mode!r}")
        T = self.temperature_ if mode == "relaxed" else None
        return rotate_readouts(X, angles, T, self.period, normalize=bool(self.normalize))

    def transform(self, R: Any = None, output: str | None = None) -> np.ndarray:
        """Aligned readouts R̃ in the shape of ``R`` (``R=None``: the fitted data).

        The fitted data are rotated by ``angles_``. New neurons are aligned one by one to the
        aligned reference subsample (``reference_index_``) with :meth:`align_new`.
        ``output`` overrides the ``output`` parameter ('relaxed' or 'interpolated').
        """
        self._check_fitted()
        if R is None:
            return self._rotate(self._X, self.angles_, output).reshape(self._fit_shape)
        X = as_readouts(R, self.n_orientations)
        if X.shape[1:] != (self.n_features_, self.n_orientations_):
            raise ValueError(
                f"R has readouts of shape {X.shape[1:]}, the aligner was fitted on "
                f"{(self.n_features_, self.n_orientations_)}"
            )
        if X.shape == self._X.shape and _hash(X) == self._fit_hash:
            angles = self.angles_
        else:
            angles = self.align_new(X)
        return self._rotate(X, angles, output).reshape(np.shape(R))

    def fit_transform(self, R: Any, y: Any = None) -> np.ndarray:
        """``fit(R)`` then return the aligned readouts of ``R``."""
        return self.fit(R).transform()

    def align_new(self, R: Any) -> np.ndarray:
        """Angles aligning new readouts to the fitted aligned reference subsample.

        Each readout's angle minimises its mean distance to the reference (relaxed rotations at
        the fitted T): a grid of 4·O angles and a 9-point refinement; O(n · M · K · O) time.
        """
        self._check_fitted()
        X = as_readouts(R, self.n_orientations)
        if X.shape[1:] != (self.n_features_, self.n_orientations_):
            raise ValueError(
                f"R has readouts of shape {X.shape[1:]}, expected {(self.n_features_, self.n_orientations_)}"
            )
        idx = self.reference_index_
        nrm = bool(self.normalize)
        ref = rotate_readouts(self._X[idx], self.angles_[idx], self.temperature_, self.period, normalize=nrm)
        return _align_to_reference(X, ref.reshape(idx.size, -1), self.temperature_, float(self.period),
                                   pick_device(self.device), self.dtype, normalize=nrm)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters (scikit-learn protocol)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {k: getattr(self, k) for k in names}

    def set_params(self, **params: Any) -> RotationAligner:
        """Set constructor parameters (scikit-learn protocol)."""
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"unknown parameter {k!r}; valid: {sorted(valid)}")
            setattr(self, k, v)
        return self


def _align_to_reference(
    X: np.ndarray,
    ref: np.ndarray,
    temperature: float,
    period: float,
    dev: torch.device,
    dtype: torch.dtype,
    chunk: int = 256,
    normalize: bool = False,
) -> np.ndarray:
    """Per-readout angle minimising the mean distance of S̃_α r to the rows of ``ref`` (M, K).

    Grid of 4·O angles, then 9 points within ± one grid step around the best. O(n M K O) time.
    """
    n, _, O = X.shape
    n_grid = 4 * O
    step = period / n_grid
    ref_t = torch.as_tensor(ref, dtype=dtype, device=dev)
    ref_sq = (ref_t * ref_t).sum(1)
    Xt_all = torch.as_tensor(X, dtype=dtype, device=dev)
    out = np.empty(n)
    for s in range(0, n, chunk):
        Xt = Xt_all[s : s + chunk]
        Rr = _rolled(Xt)  # (c, O, K)
        c = Xt.shape[0]

        def score(cands: torch.Tensor, Rr: torch.Tensor = Rr) -> torch.Tensor:  # (c, G) -> (c, G)
            W = von_mises_weights(cands, temperature, O, period)  # (c, G, O)
            A = torch.bmm(W, Rr)  # (c, G, K)
            if normalize:
                A = _renormalise(A, Rr[:, :1])
            d2 = ((A * A).sum(-1)[..., None] + ref_sq - 2.0 * A @ ref_t.T).clamp_min(0.0)
            return d2.sqrt().mean(-1)

        with torch.no_grad():
            g0 = (torch.arange(n_grid, dtype=dtype, device=dev) * step).expand(c, n_grid)
            best = g0.gather(1, score(g0).argmin(1, keepdim=True))
            fine = best + torch.linspace(-step, step, 9, dtype=dtype, device=dev)[None, :]
            out[s : s + c] = fine.gather(1, score(fine).argmin(1, keepdim=True)).squeeze(1).double().cpu().numpy()
    return np.remainder(out, period)


def _hash(X: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(X).tobytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Synthetic check (paper Sec. 4 "Synthetic dataset", Fig. 4 and Fig. B1)
# --------------------------------------------------------------------------------------------


@dataclass
class SyntheticReadouts:
    """Readouts from shifted periodic-GP samples: R (N, 1, O), true ``groups`` and ``shifts``."""

    R: np.ndarray
    clean: np.ndarray
    groups: np.ndarray
    shifts: np.ndarray
    noise: float
    templates: np.ndarray  # (n_groups, F, n_fine) GP samples on a fine grid
    grid: np.ndarray  # (n_fine,) angles of the fine grid


def _gp_coefficients(lengthscale: float, n_terms: int) -> np.ndarray:
    """Fourier variances of the 2π-periodic kernel exp(-2 sin²(τ/2)/ℓ²) (unit variance)."""
    z = 1.0 / lengthscale**2
    n = np.arange(n_terms + 1)
    c = ive(n, z)
    c[1:] *= 2.0
    return c


def periodic_gp_readouts(
    n_readouts: int = 16,
    n_groups: int = 2,
    n_orientations: int = 8,
    noise: float = 0.0,
    lengthscale: float = 1.0,
    random_state: int | None = None,
    n_features: int = 1,
    n_terms: int = 32,
) -> SyntheticReadouts:
    """Paper Sec. 4 synthetic readouts: F features in O orientations from shifted GP samples.

    For each of ``n_groups`` groups and each feature, a function is drawn from a zero-mean GP with
    the 2π-periodic kernel ``k(τ) = exp(-2 sin²(τ/2) / ℓ²)`` (exactly, via its Fourier series with
    Bessel-function variances). Readout i picks a group g_i (every group occurs) and a shift
    φ_i ~ U[0, 2π) and is ``r_i[f, o] = f_{g_i,f}(θ_o - φ_i) + noise · ε``, θ_o = 2πo/O: the group's
    template rotated by φ_i. The paper's toy set is ``n_features=1``, O = 8, 16 readouts.
    """
    if n_readouts < 2 or n_groups < 1 or n_orientations < 2 or n_features < 1:
        raise ValueError(
            "need n_readouts >= 2, n_groups >= 1, n_orientations >= 2, n_features >= 1; got "
            f"{n_readouts}, {n_groups}, {n_orientations}, {n_features}"
        )
    if not lengthscale > 0 or not noise >= 0:
        raise ValueError(f"lengthscale must be > 0 and noise >= 0, got {lengthscale}, {noise}")
    rng = np.random.default_rng(random_state)
    c = np.sqrt(_gp_coefficients(lengthscale, n_terms))
    coef_a = rng.standard_normal((n_groups, n_features, n_terms + 1)) * c
    coef_b = rng.standard_normal((n_groups, n_features, n_terms + 1)) * c
    n = np.arange(n_terms + 1)

    def f(g: np.ndarray, x: np.ndarray) -> np.ndarray:  # g (N,), x (N, P) -> (N, F, P)
        ph = n * x[:, None, :, None]  # (N, 1, P, T)
        return (coef_a[g][:, :, None, :] * np.cos(ph) + coef_b[g][:, :, None, :] * np.sin(ph)).sum(-1)

    if n_groups > 1 and n_readouts >= n_groups:  # every group present
        extra = rng.integers(0, n_groups, n_readouts - n_groups)
        groups = np.sort(np.concatenate([np.arange(n_groups), extra]))
    else:
        groups = np.sort(rng.integers(0, n_groups, n_readouts))
    shifts = rng.uniform(0.0, TWO_PI, size=n_readouts)
    theta = np.arange(n_orientations) * TWO_PI / n_orientations
    clean = f(groups, theta[None, :] - shifts[:, None])
    R = clean + noise * rng.standard_normal(clean.shape)
    grid = np.linspace(0, TWO_PI, 256, endpoint=False)
    templates = f(np.arange(n_groups), np.broadcast_to(grid, (n_groups, grid.size)))
    return SyntheticReadouts(R=R, clean=clean, groups=groups, shifts=shifts, noise=float(noise),
                             templates=templates, grid=grid)


def rough_readouts(
    n_readouts: int = 160,
    n_groups: int = 4,
    n_features: int = 4,
    n_orientations: int = 8,
    noise: float = 0.4,
    random_state: int | None = None,
) -> SyntheticReadouts:
    """Planted rotations of rough, twin-like readouts (the aligner check of the twin's readouts).

    A fitted twin's readouts are rough along the orientation axis (adjacent-channel correlation
    ≈ 0, unlike the smooth GP samples of :func:`periodic_gp_readouts`). Here each group's template is
    white noise (F × O, unit norm); readout i is its group's template rotated by a continuous
    planted angle φ_i ~ U[0, 2π) with the norm-preserving eq. (2) (``S_{-φ}``, so ``S_φ`` aligns it),
    plus i.i.d. noise of total norm ≈ ``noise``. Groups are assigned cyclically (``i mod n_groups``).
    """
    if n_readouts < 2 or n_groups < 1 or n_features < 1 or n_orientations < 2 or not noise >= 0:
        raise ValueError(
            "need n_readouts >= 2, n_groups >= 1, n_features >= 1, n_orientations >= 2, noise >= 0; got "
            f"{n_readouts}, {n_groups}, {n_features}, {n_orientations}, {noise}"
        )
    rng = np.random.default_rng(random_state)
    T = rng.standard_normal((n_groups, n_features, n_orientations))
    T /= np.linalg.norm(T.reshape(n_groups, -1), axis=1)[:, None, None]
    groups = np.arange(n_readouts) % n_groups
    shifts = rng.uniform(0.0, TWO_PI, n_readouts)
    clean = rotate_readouts(T[groups], -shifts, normalize=True)
    R = clean + noise * rng.standard_normal(clean.shape) / math.sqrt(n_features * n_orientations)
    grid = np.arange(n_orientations) * TWO_PI / n_orientations
    return SyntheticReadouts(R=R, clean=clean, groups=groups, shifts=shifts, noise=float(noise), templates=T,
                             grid=grid)


def half_grid_distance(angles: Any, n_orientations: int, period: float = TWO_PI) -> float:
    """Mean |fractional channel position of the angles - 1/2|: 0.25 for angles spread uniformly,
    0 when every angle sits half-way between two channels (the contraction bias of eq. 2)."""
    a = np.asarray(angles, dtype=np.float64).ravel()
    return float(np.abs(np.remainder(a * n_orientations / period, 1.0) - 0.5).mean())


def expected_noise_distance(noise: float, dim: int) -> float:
    """E||ε_i - ε_j|| for i.i.d. N(0, noise² I_dim) noise: the noise-only pairwise distance.

    ε_i - ε_j ~ N(0, 2 noise² I), so the expectation is ``2 noise Γ((d+1)/2) / Γ(d/2)``.
    """
    return float(2.0 * noise * np.exp(gammaln((dim + 1) / 2) - gammaln(dim / 2)))


def _group_mean_distance(A: np.ndarray, groups: np.ndarray) -> dict[int, float]:
    out = {}
    for g in np.unique(groups):
        rows = A[groups == g].reshape(int((groups == g).sum()), -1)
        out[int(g)] = mean_pairwise_distance(rows.astype(np.float64)) if rows.shape[0] > 1 else float("nan")
    return out


def synthetic_alignment_experiment(
    n_readouts: int = 16,
    noise_levels: Sequence[float] = (0.05, 1.0),
    n_groups: int = 2,
    n_orientations: int = 8,
    lengthscale: float = 1.0,
    random_state: int | None = 0,
    aligner_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Data of paper Fig. 4 (A and B) / Fig. B1: align noisy shifted-GP readouts.

    For each noise level the same GP samples and shifts are used (same ``random_state``), Gaussian
    noise is added, and a :class:`RotationAligner` is fitted. Per true group the record holds the
    mean pairwise distance of the raw readouts (``raw``), of the aligned readouts (``aligned``: the
    aligner's output, relaxed eq. 4 at the fitted T by default; ``aligned_interp``: eq. 2 at the
    fitted angles), and the circular correlation of the recovered angles with the true shifts. The
    reference is the paper's dashed line, :func:`expected_noise_distance`: the mean distance of
    perfectly aligned readouts plus the same noise. Distances well below it mean the alignment
    fits the noise (overfitting, Fig. 4B right). Also returned: the arrays for plotting (R, aligned
    R̃(α*), R̃(0)), the fitted angles and the adjusted Rand index of a 2-component spherical GMM
    on the aligned readouts (Fig. B1).
    """
    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture

    from reprlab.v1.cluster import circular_correlation

    kw = {"random_state": random_state, "progress": False}
    kw.update(aligner_kwargs or {})
    levels = []
    for noise in noise_levels:
        data = periodic_gp_readouts(n_readouts, n_groups, n_orientations, noise, lengthscale, random_state)
        al = RotationAligner(**kw).fit(data.R)
        A = al.transform()
        interp = al.transform(output="interpolated")
        R0 = rotate_readouts(data.R, 0.0, al.temperature_ if al.output == "relaxed" else None, al.period)
        raw_d = _group_mean_distance(data.R, data.groups)
        al_d = _group_mean_distance(A, data.groups)
        in_d = _group_mean_distance(interp, data.groups)
        corr = {
            int(g): circular_correlation(al.angles_[data.groups == g], data.shifts[data.groups == g])
            for g in np.unique(data.groups)
            if (data.groups == g).sum() > 2
        }
        labels = GaussianMixture(n_groups, covariance_type="spherical", random_state=0, n_init=5).fit_predict(
            A.reshape(n_readouts, -1)
        ) if n_groups > 1 else np.zeros(n_readouts, int)
        levels.append(
            {
                "noise": float(noise),
                "noise_only_distance": expected_noise_distance(noise, data.R[0].size),
                "groups": [
                    {"group": g, "n": int((data.groups == g).sum()), "raw": raw_d[g], "aligned": al_d[g],
                     "aligned_interp": in_d[g], "angle_corr": corr.get(g, float("nan"))}
                    for g in raw_d
                ],
                "temperature": al.temperature_,
                "beta": al.beta_,
                "alignment_loss": al.alignment_loss_,
                "gmm_ari": float(adjusted_rand_score(data.groups, labels)),
                "R": data.R,
                "clean": data.clean,
                "aligned": A,
                "R0": R0,
                "angles": al.angles_,
                "shifts": data.shifts,
                "true_groups": data.groups,
                "sweep": al.sweep_,
            }
        )
    return {"n_readouts": n_readouts, "n_orientations": n_orientations, "levels": levels}
