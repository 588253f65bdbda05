"""Scores of a decomposition against ground truth: ARI, segmentation covering, specialisation.

* Foreground adjusted Rand index (ARI-FG, Greff et al. 2019): ARI between the predicted
  and true segmentations restricted to pixels that belong to an object.
* Segmentation covering (Arbeláez et al. 2011, as used by GENESIS): for every true object
  segment the best IoU with any predicted segment; mSC averages these per image, SC
  weights them by segment size.
* Expert specialisation: every visible ground-truth object (and the background) is
  assigned to the inference step whose region overlaps it best; the expert that won that
  step "explains" it. The class × expert table counts these; per class we report the
  fraction won by its most frequent expert.
* Depth order (§5: inference runs front to back): with every visible object and the
  background credited to a step as above, a scene is decomposed in depth order when the
  steps increase from the front object to the back one and the background comes last.
  The class × step table shows what each step explains; a model that explains the
  classes in a fixed order (e.g. always squares first, whatever their depth) has high
  ARI-FG but a low depth-order fraction.
* Order gap: the objective (13) of the model's own greedy decomposition against the same
  model made to explain each scene in its true depth order (front to back, background last,
  each class by its expert). If the greedy order scores better, the learned experts
  themselves prefer it — a local optimum of training, not a failure of the competition.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from reprlab.scenes.sprites import CLASSES, SceneBatch

ROW_NAMES: tuple[str, ...] = (*CLASSES, "background")


def _check_labels(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.shape != pred.shape or true.ndim not in (2, 3):
        raise ValueError(f"label maps must share a (H, W) or (N, H, W) shape, got {true.shape} and {pred.shape}")
    if true.ndim == 2:
        true, pred = true[None], pred[None]
    return true, pred


def foreground_ari(true: np.ndarray, pred: np.ndarray, background: int = 0) -> np.ndarray:
    """Per-image ARI on the pixels where ``true != background`` (NaN if there are none)."""
    true, pred = _check_labels(true, pred)
    out = np.full(len(true), np.nan)
    for i, (t, p) in enumerate(zip(true, pred)):
        fg = t != background
        if fg.sum() > 0:
            out[i] = adjusted_rand_score(t[fg], p[fg])
    return out


def segmentation_covering(true: np.ndarray, pred: np.ndarray, background: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (mSC, SC): mean and size-weighted best IoU of each true segment.

    Segments labelled ``background`` in ``true`` are skipped (``None`` keeps them).
    Returns NaN for images without scored segments.
    """
    true, pred = _check_labels(true, pred)
    msc = np.full(len(true), np.nan)
    sc = np.full(len(true), np.nan)
    for i, (t, p) in enumerate(zip(true, pred)):
        labels = [v for v in np.unique(t) if background is None or v != background]
        if not labels:
            continue
        best, sizes = [], []
        pred_ids = np.unique(p)
        for v in labels:
            g = t == v
            ious = [(g & (p == q)).sum() / (g | (p == q)).sum() for q in pred_ids]
            best.append(max(ious))
            sizes.append(g.sum())
        best_a, sizes_a = np.array(best), np.array(sizes, float)
        msc[i] = best_a.mean()
        sc[i] = (best_a * sizes_a).sum() / sizes_a.sum()
    return msc, sc


def assign_objects(
    scenes: SceneBatch, segmentation: np.ndarray, winners: np.ndarray, min_pixels: int = 4,
    with_steps: bool = False,
) -> list[tuple[int, ...]]:
    """(image, row, expert) for every visible object and background: row = class index or 3.

    An object (or the background) is credited to the inference step whose predicted segment
    has the largest IoU with its visible region; the expert that won that step explains it.
    ``with_steps`` appends that step: (image, row, expert, step).
    """
    seg = np.asarray(segmentation)
    win = np.asarray(winners)
    if seg.shape != scenes.labels.shape:
        raise ValueError(f"segmentation must have shape {scenes.labels.shape}, got {seg.shape}")
    out = []
    for i in range(len(scenes)):
        steps = np.arange(win.shape[1])
        for slot in range(-1, int(scenes.n_objects[i])):
            region = scenes.labels[i] == slot + 1
            if region.sum() < min_pixels:
                continue
            ious = [(region & (seg[i] == s)).sum() / max(1, (region | (seg[i] == s)).sum()) for s in steps]
            step = int(np.argmax(ious))
            row = len(CLASSES) if slot < 0 else int(scenes.classes[i, slot])
            out.append((i, row, int(win[i, step]), step) if with_steps else (i, row, int(win[i, step])))
    return out


def explanation_steps(scenes: SceneBatch, segmentation: np.ndarray, min_pixels: int = 4) -> list[dict[int, int]]:
    """Per image {depth slot: step} for the visible objects (slot -1 = background).

    Each visible region (>= ``min_pixels``) is credited to the step whose predicted segment
    has the largest IoU with it, as in :func:`assign_objects`.
    """
    seg = np.asarray(segmentation)
    if seg.shape != scenes.labels.shape:
        raise ValueError(f"segmentation must have shape {scenes.labels.shape}, got {seg.shape}")
    out = []
    for i in range(len(scenes)):
        steps = np.unique(seg[i])
        found: dict[int, int] = {}
        for slot in range(-1, int(scenes.n_objects[i])):
            region = scenes.labels[i] == slot + 1
            if region.sum() < min_pixels:
                continue
            ious = [(region & (seg[i] == s)).sum() / max(1, (region | (seg[i] == s)).sum()) for s in steps]
            found[slot] = int(steps[int(np.argmax(ious))])
        out.append(found)
    return out


def depth_order(scenes: SceneBatch, segmentation: np.ndarray, n_steps: int, min_pixels: int = 4) -> dict[str, Any]:
    """Is each scene explained front to back, background last? And what does each step explain?

    Returns ``fraction`` (scenes whose credited steps strictly increase from the front
    object to the back one, then the background; scenes with nothing visible are skipped)
    and ``table`` (rows circle, square, triangle, background × ``n_steps`` columns: how often
    a step explains that class).
    """
    table = np.zeros((len(ROW_NAMES), n_steps), np.int64)
    ok = []
    for i, found in enumerate(explanation_steps(scenes, segmentation, min_pixels)):
        for slot, step in found.items():
            row = len(CLASSES) if slot < 0 else int(scenes.classes[i, slot])
            if step < n_steps:
                table[row, step] += 1
        order = [found[s] for s in sorted((s for s in found if s >= 0), reverse=True)]
        if -1 in found:
            order.append(found[-1])
        if order:
            ok.append(all(a < b for a, b in zip(order, order[1:])))
    return dict(fraction=float(np.mean(ok)) if ok else float("nan"), table=table.tolist(), rows=list(ROW_NAMES))


def specialisation(assignments: list[tuple[int, int, int]], n_experts: int) -> dict[str, Any]:
    """Class × expert table and the share of each class won by its most frequent expert."""
    table = np.zeros((len(ROW_NAMES), n_experts), np.int64)
    for item in assignments:
        table[item[1], item[2]] += 1
    totals = table.sum(1)
    top = table.argmax(1)
    frac = np.where(totals > 0, table.max(1) / np.maximum(totals, 1), np.nan)
    present = totals > 0
    dedicated = bool(len(set(top[present].tolist())) == int(present.sum()))
    return dict(
        table=table,
        rows=list(ROW_NAMES),
        fraction=dict(zip(ROW_NAMES, frac.tolist())),
        top_expert=dict(zip(ROW_NAMES, [int(t) if p else None for t, p in zip(top, present)])),
        dedicated=dedicated,
        min_fraction=float(np.nanmin(frac)) if present.any() else float("nan"),
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    scenes: SceneBatch,
    n_steps: int | None = None,
    batch_size: int = 50,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Deterministic decomposition of ``scenes`` and all metrics of this module."""
    if len(scenes) == 0:
        raise ValueError("evaluate needs at least one scene")
    if scenes.image_size != model.config.image_size:
        raise ValueError(f"scenes are {scenes.image_size}px but the model expects {model.config.image_size}px")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    segs, wins, mses, losses = [], [], [], []
    try:
        for start in range(0, len(scenes), batch_size):
            x = torch.from_numpy(scenes.images[start:start + batch_size]).to(dev)
            d = model.decompose(x, n_steps=n_steps, stochastic=False)
            segs.append(d.segmentation().cpu().numpy())
            wins.append(d.winners.cpu().numpy())
            mses.append((d.reconstruction - x).pow(2).mean((1, 2, 3)).cpu().numpy())
            losses.append(d.loss.cpu().numpy())
    finally:
        model.train(was_training)
    seg = np.concatenate(segs)
    win = np.concatenate(wins)
    ari = foreground_ari(scenes.labels, seg)
    msc, sc = segmentation_covering(scenes.labels, seg)
    spec = specialisation(assign_objects(scenes, seg, win), model.config.n_experts)
    order = depth_order(scenes, seg, win.shape[1])
    return dict(
        n_images=len(scenes),
        ari_fg=float(np.nanmean(ari)) if np.isfinite(ari).any() else float("nan"),
        msc=float(np.nanmean(msc)) if np.isfinite(msc).any() else float("nan"),
        sc=float(np.nanmean(sc)) if np.isfinite(sc).any() else float("nan"),
        mse=float(np.concatenate(mses).mean()),
        loss=float(np.concatenate(losses).mean()),
        specialisation=spec,
        depth_order=order["fraction"],
        step_table=order["table"],
    )


@torch.no_grad()
def order_gap(
    model: torch.nn.Module, scenes: SceneBatch, roles: dict[str, int | None], batch_size: int = 50,
) -> dict[str, Any]:
    """Objective (13) of the greedy decomposition vs the true front-to-back order (§5).

    The true order explains the objects front to back, each by the expert of its class in
    ``roles`` (class name or 'background' -> expert), then the background. Scenes are
    grouped by object count (n_objects + 1 steps each). Returns the mean objective of
    both (nats per scene, lower is better) and the fraction of scenes whose true order
    scores better than the model's greedy order.
    """
    missing = [name for name in ROW_NAMES if roles.get(name) is None]
    if missing:
        raise ValueError(f"roles must name an expert for every class and the background; missing {missing}")
    if len(scenes) == 0:
        raise ValueError("order_gap needs at least one scene")
    dev = next(model.parameters()).device
    expert_of_row = torch.tensor([int(roles[name]) for name in ROW_NAMES])
    was_training = model.training
    model.eval()
    greedy, true_order = np.empty(len(scenes)), np.empty(len(scenes))
    try:
        for count in np.unique(scenes.n_objects):
            index = np.flatnonzero(scenes.n_objects == count)
            for start in range(0, len(index), batch_size):
                part = index[start:start + batch_size]
                x = torch.from_numpy(scenes.images[part]).to(dev)
                front_to_back = torch.from_numpy(scenes.classes[part, :count][:, ::-1].copy())
                rows = torch.cat([front_to_back, torch.full((len(part), 1), len(CLASSES))], 1)
                greedy[part] = model.decompose(x, n_steps=count + 1, stochastic=False).loss.cpu().numpy()
                forced = model.decompose(x, n_steps=count + 1, stochastic=False, forced_winners=expert_of_row[rows])
                true_order[part] = forced.loss.cpu().numpy()
    finally:
        model.train(was_training)
    return dict(greedy_loss=float(greedy.mean()), true_order_loss=float(true_order.mean()),
                true_order_better=float(np.mean(true_order < greedy)), n_images=len(scenes))
