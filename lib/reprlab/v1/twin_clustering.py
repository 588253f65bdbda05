"""Chapter 6 on the digital twin: rotation-invariant clustering of a fitted twin's readouts.

Glue between :class:`reprlab.v1.model.V1Twin` (and its simulated datasets) and the array-level
analysis of :mod:`reprlab.v1.cluster`:

* :func:`twin_readouts` - the feature weights ``r_n`` of all animals, (N, F, O);
* :func:`centre_predictor` - the ``predict(feature_weights (K, F, O)) -> (n_images, K)`` callable
  of the cluster confusion matrix: hypothetical neurons read out at the image centre, with the
  core's features at that point computed once for the image set;
* :func:`twin_truth` - ground-truth families and preferred orientations of simulated neurons in
  the model's neuron order, and the principled truth of :func:`functional_truth` (response types,
  phase classes of simple cells, angles on each class's own symmetry);
* :func:`truth_confusion` - the ground-truth analogue of the cluster confusion matrix;
* :func:`truth_block_ceiling` - the ARI the block procedure reaches on the truth itself (the
  ceiling of the block-vs-family score for any twin);
* :func:`cluster_twin` - all of it plus :func:`reprlab.v1.cluster.rotation_invariant_clustering`;
* :func:`write_cluster_bundle` - the results added under ``ch6/`` to the twin's artifact bundle, or
  as a ``v1-clusters`` bundle (:mod:`reprlab.io`);
* :func:`add_cluster_verb` - ``python -m reprlab v1 cluster MODEL --out DIR [--data FOLDER]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PHASE_CLASSES", "add_cluster_verb", "centre_features", "cluster_arrays", "centre_predictor", "cluster_twin",
           "functional_truth", "image_rotation_sign", "load_or_fit_twin", "mei_confusion_twin", "truth_block_ceiling",
           "truth_confusion", "twin_readouts", "twin_truth", "write_cluster_bundle"]

BUNDLE_KIND = "v1-clusters"


def twin_readouts(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """Feature weights of all neurons ``(N, F, O)`` (animals in model order) and each one's animal."""
    parts, names = [], []
    for a in model.animals:
        w = model.readout_weights(a).cpu().numpy()
        parts.append(w)
        names.extend([a] * w.shape[0])
    return np.concatenate(parts).astype(np.float32), np.asarray(names)


def centre_features(model: Any, images: Any, batch_size: int = 128) -> Any:
    """Core feature vectors at the image centre, ``(n_images, F, O)`` float64 tensor (eval mode)."""
    import torch

    from reprlab.v1.readouts import point_readout

    imgs = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if imgs.dim() != 3 or imgs.shape[0] < 1:
        raise ValueError(f"images must be (n, H, W), got shape {tuple(imgs.shape)}")
    H, W = model.input_shape
    centre = torch.tensor([[(W - 1) / 2.0, (H - 1) / 2.0]])
    was = model.training
    model.eval()
    feats = []
    try:
        with torch.no_grad():
            for s in range(0, imgs.shape[0], batch_size):
                z = model.core_features(imgs[s : s + batch_size])  # (B, F, O, h, w)
                B, Fd, O, h, w = z.shape
                f = model.input_px_to_feature_px(centre.to(z.device))
                grid = f / f.new_tensor([max(w - 1, 1), max(h - 1, 1)]) * 2.0 - 1.0
                feats.append(point_readout(z.reshape(B, Fd * O, h, w), grid.clamp(-1, 1))[:, :, 0].cpu())
    finally:
        model.train(was)
    return torch.cat(feats).double().reshape(-1, model.n_features, model.n_rotations)


def centre_predictor(model: Any, images: Any, batch_size: int = 128, bias: float | None = None):
    """``predict(w (K, F, O)) -> (n_images, K)``: twin rates of hypothetical neurons with feature
    weights ``w``, all read out at the image centre (so only their features differ).

    The core's feature vector at the centre is computed once per image (O(n_images) core passes);
    each call is then a (n_images, F·O) × (F·O, K) product and the output nonlinearity. ``bias``
    defaults to the mean readout bias of the model's neurons.
    """
    import torch

    from reprlab.v1.readouts import output_nonlinearity

    if np.shape(images)[0] < 2:
        raise ValueError(f"need at least 2 images, got shape {np.shape(images)}")
    Phi = centre_features(model, images, batch_size).reshape(np.shape(images)[0], -1)
    if bias is None:
        bias = float(np.mean([model.readout_bias(a).mean().item() for a in model.animals]))
    kind = model.config["readout"].get("nonlinearity", "elu1")
    K_expected = (model.n_features, model.n_rotations)

    def predict(weights: np.ndarray) -> np.ndarray:
        w = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
        if w.dim() != 3 or tuple(w.shape[1:]) != K_expected:
            raise ValueError(f"feature weights must be (K, {K_expected[0]}, {K_expected[1]}), got {tuple(w.shape)}")
        return output_nonlinearity(Phi @ w.reshape(w.shape[0], -1).T + bias, kind).numpy()

    return predict


def image_rotation_sign(model: Any, seed: int = 0) -> int:
    """+1 if rotating an image by +2π/O with :func:`~reprlab.v1.cluster.rotate_shift_images`
    (counter-clockwise as displayed) shifts the core's centre features like a readout rotation by
    +2π/O in :mod:`reprlab.v1.align` (``r(α)[k] = r[k + 1]``), else -1.

    Then a neuron whose readout is aligned by angle α prefers images rotated by ``sign · α``
    (up to a per-class offset), which is what :func:`mei_confusion_twin` uses.
    """
    import torch

    from reprlab.v1.cluster import rotate_shift_images
    from reprlab.v1.stimuli import natural_images

    H, W = model.input_shape
    O = model.n_rotations
    imgs = natural_images(4, (H, W), seed=seed)
    y, x = np.mgrid[:H, :W]
    win = np.exp(-(((x - (W - 1) / 2) ** 2 + (y - (H - 1) / 2) ** 2) / (2 * (min(H, W) / 5) ** 2)))
    imgs = (imgs * win).astype(np.float32)
    c = ((H - 1) / 2.0, (W - 1) / 2.0)
    rot = rotate_shift_images(imgs, 2 * np.pi / O, c, c)
    a, b = centre_features(model, imgs), centre_features(model, rot)
    # readout rotation by +2π/O: (S r)[k] = r[k + 1]; Σ_k r[k] Φ_rot[k] = Σ_k (S r)[k] Φ[k] iff Φ_rot[k] = Φ[k - 1]
    err_plus = float(((b - torch.roll(a, 1, dims=-1)) ** 2).sum())
    err_minus = float(((b - torch.roll(a, -1, dims=-1)) ** 2).sum())
    return 1 if err_plus <= err_minus else -1


#: Phase classes of simple cells (folded phase |τ| in [0, π/4), [π/4, 3π/4], (3π/4, π]).
PHASE_CLASSES = ("even_on", "odd", "even_off")


def functional_truth(population: Any) -> dict[str, np.ndarray]:
    """The truth a rotation-invariant clustering can recover, from a simulated population's own
    attributes (:class:`reprlab.v1.population.Population`).

    The method groups neurons that compute the same function up to rotation and translation.
    Two simulated neurons of one family can differ in more than that:

    * Phase of simple cells. Rotating a simple cell (θ, τ) by π gives (θ + π, -τ), so phase is
      only defined up to sign: the folded phase ``|τ|`` in [0, π] (``τ`` wrapped to (-π, π]). Cells
      with different folded phases compute different functions (an ON-centre bar detector is not a
      rotated OFF-centre one). ``phase_class``: 'even_on' (|τ| < π/4), 'odd', 'even_off'
      (|τ| > 3π/4), '' for other families. The folded phase is a continuum; the classes cut it at
      π/4 and 3π/4. On natural images (:func:`truth_confusion`, default population, mean over
      neuron pairs) true simple cells of one phase class correlate 0.39-0.66 across the four
      modulation families (0.44-0.74 within a family; 0.72-0.94 between group means), but
      -0.14-0.36 across phase classes.
    * Surround suppression and cross-orientation inhibition. They change the function, but on
      natural images only weakly: true complex cells of the four modulation families correlate
      0.59-0.71 with each other, nearly as much as within a family (0.72-0.85; 0.69-0.90 between
      family means). Blocks of the cluster confusion matrix join clusters whose predicted
      responses correlate above 0.5, so they cannot separate these families by construction.
      (DoG-OFF and even-OFF simple cells correlate 0.56, DoG-ON and even-ON 0.48: at the edge of
      the threshold.)

    Returns per neuron:

    * ``types``: response types at the resolution of the confusion-matrix blocks - 'complex' (all
      four modulation families), 'simple/<phase class>', 'corner', 'dog_on', 'dog_off';
    * ``fine``: classes of rotation-equivalent neurons - the family, and for simple cells
      '<family>/<phase class>';
    * ``phase_class``;
    * ``angle``, ``angle_period``, ``angle_group``: the truth for the alignment angles. Each
      group (= ``fine``) is scored on its symmetry: complex cells and even simple cells are
      π-symmetric (orientation θ in [0, π), period π); odd simple cells have a direction
      (θ + π if τ is in (π, 2π), else θ; period 2π); corner cells their bisector direction
      (period 2π); DoG cells have no orientation (NaN).
    """
    fam = np.asarray(population.family).astype(str)
    n = fam.size
    tau = np.remainder(population.phase.detach().cpu().numpy().astype(np.float64), 2 * np.pi)
    folded = np.where(tau > np.pi, 2 * np.pi - tau, tau)
    coarse = np.asarray([f.split("_")[0] for f in fam])
    simple = coarse == "simple"
    pclass = np.where(folded < np.pi / 4, PHASE_CLASSES[0], np.where(folded > 3 * np.pi / 4, PHASE_CLASSES[2],
                                                                       PHASE_CLASSES[1]))
    pclass = np.where(simple, pclass, "")
    types = np.where(simple, np.char.add("simple/", pclass), np.where(coarse == "dog", fam, coarse))
    fine = np.where(simple, np.char.add(np.char.add(fam, "/"), pclass), fam)
    theta = np.remainder(population.orientation.detach().cpu().numpy().astype(np.float64), np.pi)
    direction = np.remainder(population.direction.detach().cpu().numpy().astype(np.float64), 2 * np.pi)
    angle = theta.copy()
    period = np.full(n, np.pi)
    odd = simple & (pclass == "odd")
    angle[odd] = np.remainder(theta[odd] + np.pi * (tau[odd] > np.pi), 2 * np.pi)
    corner = fam == "corner"
    angle[corner] = direction[corner]
    period[odd | corner] = 2 * np.pi
    angle[~population.oriented.detach().cpu().numpy().astype(bool)] = np.nan
    return {"types": types, "fine": fine, "phase_class": pclass, "angle": angle, "angle_period": period,
            "angle_group": fine}


def twin_truth(model: Any, datasets: Sequence[Any]) -> dict[str, np.ndarray]:
    """Ground truth in the model's neuron order: ``families`` (N,) names and ``orientations`` (N,)
    preferred orientations in [0, π) (NaN for unoriented families such as DoG cells) - the issue's
    original truth - and the principled truth of :func:`functional_truth` (``types``, ``fine``,
    ``phase_class``, ``angle``, ``angle_period``, ``angle_group``)."""
    by_name = {ds.animal: ds for ds in datasets}
    fams, oris, func = [], [], []
    for a in model.animals:
        ds = by_name.get(a)
        if ds is None or getattr(ds, "truth", None) is None:
            raise ValueError(f"no simulated ground truth for animal {a!r}; datasets have {sorted(by_name)}")
        truth = ds.truth
        if len(truth) != model.n_neurons(a):
            raise ValueError(f"animal {a!r}: model has {model.n_neurons(a)} neurons, truth has {len(truth)}")
        ori = truth.orientation.cpu().numpy().astype(np.float64)
        ori[~truth.oriented.cpu().numpy()] = np.nan
        fams.append(truth.family)
        oris.append(np.mod(ori, np.pi))
        func.append(functional_truth(truth))
    out = {"families": np.concatenate(fams), "orientations": np.concatenate(oris)}
    out.update({k: np.concatenate([f[k] for f in func]) for k in func[0]})
    return out


def truth_confusion(
    population: Any,
    groups: Any,
    images: Any,
    n_per_group: int = 20,
    n_rotations: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Confusion matrix of the *true* neurons: the ground-truth analogue of the cluster confusion
    matrix (paper Fig. 7 left), showing which truth a block at threshold 0.5 can resolve.

    Up to ``n_per_group`` neurons per group (``groups`` (N,) labels, e.g. ``functional_truth``'s
    ``fine``) are moved to the image centre and put in a canonical pose (direction d, folded phase
    for simple cells) at ``n_rotations`` directions d over 2π; their true rates on ``images``
    (n, H, W) are correlated across images. Returns ``groups`` (G,), ``pairwise`` (G, G): the mean
    over neuron pairs of the best correlation over rotations (1 on the diagonal of one-neuron groups), and ``prototype`` (G, G): the best
    correlation of the groups' mean responses (the analogue of a cluster mean). O(G · n_per_group ·
    n_rotations) simulated neurons on the images.
    """
    import dataclasses

    import torch

    g = np.asarray(groups).astype(str).ravel()
    if g.shape != (len(population),):
        raise ValueError(f"groups must have one label per neuron ({len(population)}), got shape {g.shape}")
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim != 3 or imgs.shape[0] < 3 or tuple(imgs.shape[1:]) != tuple(population.image_shape):
        raise ValueError(f"images must be (n >= 3, {population.image_shape[0]}, {population.image_shape[1]}), "
                         f"got shape {imgs.shape}")
    if n_per_group < 1 or n_rotations < 1:
        raise ValueError(f"n_per_group and n_rotations must be >= 1, got {n_per_group}, {n_rotations}")
    rng = np.random.default_rng(seed)
    names = np.unique(g)
    idx, gi = [], []
    for j, name in enumerate(names):
        members = np.flatnonzero(g == name)
        pick = rng.choice(members, min(n_per_group, members.size), replace=False)
        idx.append(pick)
        gi.append(np.full(pick.size, j))
    idx, gi = np.concatenate(idx), np.concatenate(gi)
    n = idx.size
    rep = np.repeat(idx, n_rotations)
    d = np.tile(np.arange(n_rotations) * 2 * np.pi / n_rotations, n)
    tau = np.remainder(population.phase.cpu().numpy().astype(np.float64)[rep], 2 * np.pi)
    folded = np.where(tau > np.pi, 2 * np.pi - tau, tau)
    H, W = population.image_shape
    sub = population.subset(rep)
    sub = dataclasses.replace(
        sub, center=torch.tensor([[(W - 1) / 2.0, (H - 1) / 2.0]]).repeat(len(sub), 1),
        orientation=torch.as_tensor(np.remainder(d, np.pi), dtype=torch.float32),
        direction=torch.as_tensor(d, dtype=torch.float32),
        phase=torch.as_tensor(np.where(d >= np.pi, -folded, folded), dtype=torch.float32), _cache={})  # a π turn flips τ
    r = sub.rate(torch.as_tensor(imgs)).cpu().numpy().astype(np.float64).reshape(imgs.shape[0], n, n_rotations)

    def zscore(x: np.ndarray) -> np.ndarray:
        x = x - x.mean(0)
        return x / np.maximum(np.linalg.norm(x, axis=0), 1e-12)

    Z = zscore(r)
    C = np.einsum("ia,ibr->abr", Z[:, :, 0], Z).max(-1)
    G = names.size
    pair = np.zeros((G, G))
    for a in range(G):
        for b in range(G):
            blk = C[np.ix_(gi == a, gi == b)]
            cnt = blk.size - (blk.shape[0] if a == b else 0)
            pair[a, b] = (blk.sum() - (np.trace(blk) if a == b else 0.0)) / cnt if cnt else 1.0  # 1 neuron: itself
    P = zscore(np.stack([r[:, gi == j].mean(1) for j in range(G)], 1))
    proto = np.einsum("ia,ibr->abr", P[:, :, 0], P).max(-1)
    return {"groups": names, "pairwise": 0.5 * (pair + pair.T), "prototype": 0.5 * (proto + proto.T),
            "n_per_group": np.bincount(gi, minlength=G)}


def truth_block_ceiling(
    population: Any,
    images: Any,
    groups: Any = None,
    threshold: float = 0.5,
    n_per_group: int = 20,
    n_rotations: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """The block procedure of paper Fig. 7 (left) applied to the *true* neurons: the best ARI
    against the families that confusion-matrix blocks can reach on this population.

    Each group (default: the family) is one perfect cluster; :func:`truth_confusion` gives the
    correlation of the groups on ``images``, :func:`reprlab.v1.cluster.greedy_blocks` joins groups
    above ``threshold``, and every neuron takes its group's block. A twin whose clusters were exactly
    the families, aligned perfectly, would get these blocks; so the ARI of its blocks against the
    families cannot be expected above this ceiling. Both matrices of :func:`truth_confusion` are
    used: ``prototype`` (correlation of the group means, as the twin's matrix correlates cluster
    means) and ``pairwise`` (mean over neuron pairs). Returns, per matrix, the blocks (lists of
    group names) and ``ari_families`` / ``ari_types`` of the block labels against the families and
    the response types of :func:`functional_truth`.
    """
    from reprlab.v1.cluster import adjusted_rand, greedy_blocks

    fam = np.asarray(population.family).astype(str)
    g = fam if groups is None else np.asarray(groups).astype(str).ravel()
    conf = truth_confusion(population, g, images, n_per_group=n_per_group, n_rotations=n_rotations, seed=seed)
    types = functional_truth(population)["types"]
    out: dict[str, Any] = {"groups": [str(x) for x in conf["groups"]], "threshold": float(threshold)}
    for key in ("prototype", "pairwise"):
        arrangement = greedy_blocks(conf[key], threshold=threshold)
        block_of = {str(conf["groups"][j]): b for b, members in enumerate(arrangement.blocks) for j in members}
        labels = np.array([block_of[x] for x in g])
        out[key] = {"blocks": [[str(conf["groups"][j]) for j in members] for members in arrangement.blocks],
                    "ari_families": adjusted_rand(labels, fam), "ari_types": adjusted_rand(labels, types)}
    return out


def training_images(datasets: Sequence[Any], n: int) -> np.ndarray:
    """Up to ``n`` distinct training images of the first dataset (the confusion-matrix image set)."""
    ds = datasets[0]
    rows = np.unique(ds.trial_image[np.asarray(ds.tiers) == "train"])
    return np.asarray(ds.images[rows[:n]], dtype=np.float32)


def cluster_twin(
    model: Any,
    datasets: Sequence[Any] | None = None,
    images: Any = None,
    scale: str | None = None,
    seed: int = 0,
    method: str = "gmm",
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Chapter 6 on a fitted twin: :func:`~reprlab.v1.cluster.rotation_invariant_clustering` of its
    readouts with the centre predictor on ``images`` (default: training images of ``datasets``, or
    natural images from :mod:`reprlab.v1.stimuli`) and, for simulated ``datasets``, ground truth."""
    from reprlab.scales import pick
    from reprlab.v1.cluster import PRESETS, rotation_invariant_clustering

    cfg = pick(PRESETS, scale, **overrides)
    R, animal = twin_readouts(model)
    if images is None:
        if datasets:
            images = training_images(datasets, int(cfg["n_images"]))
        else:
            from reprlab.v1.stimuli import natural_images

            images = natural_images(int(cfg["n_images"]), tuple(model.input_shape), seed=seed)
    truth = twin_truth(model, datasets) if datasets and all(getattr(d, "truth", None) is not None
                                                            for d in datasets) else {}
    res = rotation_invariant_clustering(
        R, centre_predictor(model, images), families=truth.get("families"),
        orientations=truth.get("orientations"), truth=truth or None, method=method, scale=scale, random_state=seed,
        progress=progress, **overrides,
    )
    res.update(readouts=R, animal=animal, truth=truth, n_images=int(np.shape(images)[0]))
    if truth and res.get("block_labels") is not None:
        from reprlab.v1.population import Population

        ceiling = truth_block_ceiling(Population.concat([d.truth for d in datasets]), images, seed=seed,
                                      threshold=float(res["config"].get("block_threshold", 0.5)))
        res["truth_block_ceiling"] = ceiling
        res["scores"]["ari_blocks_families_ceiling"] = ceiling["prototype"]["ari_families"]
        res["scores"]["ari_blocks_families_ceiling_pairwise"] = ceiling["pairwise"]["ari_families"]
    return res


def mei_confusion_twin(
    model: Any,
    result: dict[str, Any],
    test_correlation: Any,
    min_correlation: float = 0.7,
    max_neurons: int | None = 60,
    scale: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Paper Fig. 7 (right) on the twin: MEI confusion matrix of well-predicted neurons.

    Neurons with test correlation ≥ ``min_correlation`` (the paper's 0.7; the best
    ``max_neurons`` of them) get per-neuron MEIs (:func:`reprlab.v1.mei.neuron_meis`); the MEI of
    neuron i is rotated by ``sign · (α_j - α_i)`` (alignment angles, ``sign`` from
    :func:`image_rotation_sign`; also tried +π, keeping the larger response) and moved from i's to
    j's receptive-field centre, and ``M[i, j]`` is the twin's response of j divided by j's response
    to its own MEI. Rows/columns are ordered by the confusion-matrix blocks of ``result``.
    Returns ``{'matrix', 'neurons', 'blocks', 'meis', 'sign'}``.
    """
    import torch

    from reprlab.v1.cluster import mei_confusion_matrix
    from reprlab.v1.insilico import EquivariantModel
    from reprlab.v1.mei import mei_config, neuron_meis

    tc = np.asarray(test_correlation, dtype=np.float64).ravel()
    angles = np.asarray(result["angles"], dtype=np.float64)
    if tc.shape != angles.shape:
        raise ValueError(f"test_correlation must have one value per neuron ({angles.size}), got {tc.shape}")
    idx = np.flatnonzero(np.nan_to_num(tc, nan=-1.0) >= min_correlation)
    if idx.size < 2:
        raise ValueError(f"only {idx.size} neuron(s) with test correlation >= {min_correlation}; lower min_correlation")
    if max_neurons is not None and idx.size > max_neurons:
        idx = idx[np.argsort(-tc[idx])[:max_neurons]]
    blocks = np.asarray(result.get("block_labels", result["labels"]))[idx]
    idx, blocks = idx[np.argsort(blocks, kind="stable")], np.sort(blocks, kind="stable")
    view = EquivariantModel.from_twin(model)
    meis = neuron_meis(view, idx, mei_config(scale, seed=seed), progress=progress).images
    sign = image_rotation_sign(model, seed)
    xy = view.centers[idx].numpy()
    centers_rc = np.stack([xy[:, 1], xy[:, 0]], 1)

    def response(images: np.ndarray) -> np.ndarray:
        return view.responses(torch.as_tensor(images)).numpy()

    M = mei_confusion_matrix(meis, response, centers_rc, sign * angles[idx], neuron_index=idx,
                             extra_rotations=(0.0, np.pi), progress=progress)
    return {"matrix": M, "neurons": idx, "blocks": blocks, "meis": meis, "sign": sign}


def load_or_fit_twin(scale: str | None = None, seed: int = 0, model_path: str | os.PathLike | None = None,
                     progress: bool = True, **fit_overrides: Any) -> tuple[Any, list]:
    """The simulated datasets of ``scale``/``seed`` and a twin fitted to them.

    ``model_path``: load the model from there if the file exists, otherwise fit
    (:func:`reprlab.v1.train.fit_twin` with ``fit_overrides``, e.g. ``max_epochs``) and save it
    there (None: fit, do not save).
    """
    from reprlab.v1.model import V1Twin
    from reprlab.v1.simulate import simulate_dataset
    from reprlab.v1.train import fit_twin

    datasets = simulate_dataset(scale=scale, seed=seed)
    if model_path is not None and Path(model_path).is_file():
        return V1Twin.load(model_path, device="cpu"), datasets
    model, _ = fit_twin(datasets, scale=scale, seed=seed, progress=progress, **fit_overrides)
    if model_path is not None:
        model.save(model_path)
    return model, datasets


def cluster_arrays(result: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and documents of a clustering result (names as in :func:`write_cluster_bundle`)."""
    from reprlab.io import to_jsonable

    arrays: dict[str, np.ndarray] = {
        "neurons/readout": np.asarray(result["readouts"], np.float32),
        "neurons/aligned": np.asarray(result["aligned"], np.float32),
        "neurons/angle": np.asarray(result["angles"], np.float32),
        "neurons/angle_global": np.asarray(result.get("angles_global", result["angles"]), np.float32),
        "neurons/label": np.asarray(result["labels"], np.int64),
        "neurons/embedding": np.asarray(result["embedding"], np.float32),
        "neurons/animal": np.asarray(result["animal"]).astype("U"),
        "clusters/center": np.asarray(result["centers"], np.float32),
        "gmm/n_components": np.asarray(result["selection"].n_components, np.int64),
        "gmm/test_ll": np.asarray(result["selection"].test_ll, np.float64),
        "gmm/train_ll": np.asarray(result["selection"].train_ll, np.float64),
    }
    if "confusion" in result:
        arrays.update({
            "clusters/confusion": np.asarray(result["confusion"].matrix, np.float32),
            "clusters/rotation": np.asarray(result["confusion"].rotation, np.float32),
            "clusters/order": np.asarray(result["blocks"].order, np.int64),
            "clusters/block": np.asarray(result["blocks"].labels, np.int64),
            "neurons/block": np.asarray(result["block_labels"], np.int64),
        })
    for key, val in (result.get("truth") or {}).items():
        val = np.asarray(val)
        arrays[f"truth/{key}"] = val.astype("U") if val.dtype.kind in "USO" else val.astype(np.float32)
    for name, c in (result.get("controls") or {}).items():
        arrays[f"controls/{name}/label"] = np.asarray(c["labels"], np.int64)
        arrays[f"controls/{name}/embedding"] = np.asarray(c["embedding"], np.float32)
    documents = {"scores": to_jsonable(result["scores"]), "sweep": to_jsonable(result["aligner"].sweep_)}
    if "truth_block_ceiling" in result:
        documents["truth_block_ceiling"] = to_jsonable(result["truth_block_ceiling"])
    return arrays, documents


#: Prefix of the chapter-6 results inside another bundle (e.g. the ``twin`` bundle of ``v1 twin``).
MERGE_PREFIX = "ch6/"


def write_cluster_bundle(result: dict[str, Any], out: str | os.PathLike, config: dict | None = None) -> Path:
    """Write the clustering results atomically (:func:`reprlab.io.write_bundle`).

    If ``out`` is an existing bundle of another kind - the twin's artifact bundle written by
    ``v1 twin`` - the results are added to it under ``ch6/`` (``ch6/neurons/aligned``,
    ``ch6/neurons/angle``, ``ch6/neurons/label``, ``ch6/neurons/embedding``,
    ``ch6/clusters/confusion``, ..., documents ``ch6/scores``, ``ch6/sweep``; config key ``ch6``);
    its own files are kept unchanged and earlier ``ch6/`` results are replaced. The number of
    neurons must match the bundle's ``neurons/id``. Otherwise ``out`` becomes (or is replaced by)
    a ``v1-clusters`` bundle with the same names without the prefix:
    ``neurons/{readout,aligned,angle,angle_global,label,block,embedding,animal}``,
    ``clusters/{center,confusion,rotation,order,block}``, ``gmm/*``, ``truth/*``,
    ``controls/<name>/*`` and the ``scores``, ``sweep`` documents.
    """
    from reprlab.io import MANIFEST, read_bundle, to_jsonable, write_bundle

    arrays, documents = cluster_arrays(result)
    cfg = {**to_jsonable(result.get("config", {})), **to_jsonable(config or {})}
    target = Path(out)
    if (target / MANIFEST).is_file():
        b = read_bundle(target)
        if b.kind != BUNDLE_KIND:
            n = arrays["neurons/angle"].shape[0]
            if b.has("neurons/id") and b.array("neurons/id").shape[0] != n:
                raise ValueError(f"bundle {target} (kind {b.kind!r}) has {b.array('neurons/id').shape[0]} "
                                 f"neurons, the clustered model has {n}: wrong model for this bundle?")
            keep_a, keep_d = {}, {}
            for rel in b.manifest["files"]:
                name, ext = rel.rsplit(".", 1)
                if name.startswith(MERGE_PREFIX):
                    continue
                if ext == "npy":
                    keep_a[name] = b.array(name)
                elif ext == "json":
                    keep_d[name] = b.document(name)
            keep_a.update({MERGE_PREFIX + k: v for k, v in arrays.items()})
            keep_d.update({MERGE_PREFIX + k: v for k, v in documents.items()})
            return write_bundle(target, b.kind, arrays=keep_a, documents=keep_d,
                                config={**b.config, MERGE_PREFIX.rstrip("/"): cfg})
    return write_bundle(target, BUNDLE_KIND, arrays=arrays, documents=documents, config=cfg)


# ----------------------------------------------------------------------------- CLI
def add_cluster_verb(verbs: Any) -> None:
    """Register ``v1 cluster MODEL --out DIR [--data FOLDER] [--method gmm|kmeans] [--no-refine]``."""
    from reprlab.cli import add_json_flag

    p = verbs.add_parser("cluster", help="ch6: align, cluster and embed a fitted twin's readouts; confusion "
                                         "matrices, controls, scores against the simulated truth")
    p.add_argument("model", help="fitted twin model file (V1Twin.save, e.g. from `v1 fit`)")
    p.add_argument("--out", required=True, help="the twin's artifact bundle (results added under ch6/), or a "
                                                "new folder for a v1-clusters bundle; written atomically")
    p.add_argument("--data", default=None, help="the simulated data folder the twin was fitted on "
                                                "(training images and ground truth for the scores)")
    p.add_argument("--method", choices=("gmm", "kmeans"), default="gmm")
    p.add_argument("--scale", default=None, help="smoke | default | paper (default: $REPRLAB_SCALE or 'default')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-controls", action="store_true", help="skip the appendix-A controls")
    p.add_argument("--no-refine", action="store_true", help="the paper's pipeline exactly: no invariant k-means "
                                                           "refinement of the eq. (5) angles")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_json_flag(p)
    p.set_defaults(handler=_cluster)


def _cluster(args: argparse.Namespace) -> dict:
    from reprlab.v1.model import V1Twin

    path = Path(args.model)
    if not path.is_file():
        raise FileNotFoundError(f"expected a twin model file at {path}, found nothing")
    model = V1Twin.load(path, device="cpu")
    datasets = None
    if args.data:
        from reprlab.v1.data import read_sensorium

        data = Path(args.data)
        if not data.is_dir():
            raise FileNotFoundError(f"expected a data folder at {data}, found nothing")
        if (data / "meta").is_dir() or (data / "data").is_dir():
            datasets = [read_sensorium(data)]
        else:
            datasets = [read_sensorium(p) for p in sorted(data.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    res = cluster_twin(model, datasets, scale=args.scale, seed=args.seed, method=args.method,
                       progress=not args.quiet, controls=not args.no_controls,
                       **({"refine_iter": 0} if args.no_refine else {}))
    out = write_cluster_bundle(res, args.out, config={"model": str(path), "data": args.data})
    scores = dict(res["scores"])
    rec = res.get("angle_recovery")
    if rec:
        scores["angle_corr_per_family"] = rec["per_group"]
    rec = res.get("angle_recovery_symmetry")
    if rec:
        scores["angle_corr_symmetry_per_group"] = rec["per_group"]
    from reprlab.io import read_bundle

    kind = read_bundle(out).kind
    return {"out": str(out), "bundle_kind": kind, "prefix": MERGE_PREFIX if kind != BUNDLE_KIND else "", **scores}
