"""Decomposition metrics: ARI-FG, segmentation covering, expert specialisation."""

from __future__ import annotations

import numpy as np
import pytest
from reprlab.scenes.metrics import (
    assign_objects,
    depth_order,
    foreground_ari,
    segmentation_covering,
    specialisation,
)
from reprlab.scenes.sprites import make_scenes


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(20, 32, "random", classes="random", n_objects=(1, 4), random_state=0)


def test_ari_perfect_and_permuted_labelling_is_one(scenes):
    assert np.allclose(foreground_ari(scenes.labels, scenes.labels), 1.0)
    perm = np.array([7, 3, 9, 1, 0, 5, 2, 8, 4])
    assert np.allclose(foreground_ari(scenes.labels, perm[scenes.labels]), 1.0)


def test_ari_of_merged_or_random_labels_is_lower(scenes):
    merged = np.where(scenes.labels > 0, 1, 0)  # all objects in one segment
    multi = scenes.n_objects >= 2
    ari = foreground_ari(scenes.labels, merged)
    assert np.all(ari[multi] < 1.0)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 4, size=scenes.labels.shape)
    assert np.nanmean(foreground_ari(scenes.labels, noise)) < 0.1
    # background pixels are ignored: relabelling them does not change ARI-FG
    bg_changed = np.where(scenes.labels == 0, rng.integers(0, 5, size=scenes.labels.shape), scenes.labels)
    assert np.allclose(foreground_ari(scenes.labels, bg_changed), 1.0)


def test_segmentation_covering(scenes):
    msc, sc = segmentation_covering(scenes.labels, scenes.labels[:, ::1] * 3 + 1)
    assert np.allclose(msc, 1.0) and np.allclose(sc, 1.0)
    # splitting one 2x2 segment into two halves gives IoU 1/2 for it
    t = np.zeros((4, 4), int)
    t[:2, :2] = 1
    p = t.copy()
    p[:2, 0] = 2
    m, s = segmentation_covering(t, p)
    assert m[0] == pytest.approx(0.5) and s[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        segmentation_covering(np.zeros((2, 3)), np.zeros((3, 2)))


def test_specialisation_recovers_planted_assignment(scenes):
    # a "decomposition" whose step t is exactly depth slot (n - 1 - t) (front first), the
    # last step being the background; expert of a step = class of its object, 3 = background
    n, h, w = scenes.labels.shape
    steps = 6
    seg = np.zeros((n, h, w), int)
    win = np.full((n, steps), 3)
    for i in range(n):
        k = int(scenes.n_objects[i])
        for slot in range(k):
            seg[i][scenes.labels[i] == slot + 1] = k - 1 - slot
            win[i, k - 1 - slot] = scenes.classes[i, slot]
        seg[i][scenes.labels[i] == 0] = k
        win[i, k] = 3
    spec = specialisation(assign_objects(scenes, seg, win), n_experts=4)
    assert spec["dedicated"]
    assert spec["min_fraction"] == 1.0
    assert spec["top_expert"] == {"circle": 0, "square": 1, "triangle": 2, "background": 3}
    table = np.asarray(spec["table"])
    assert (table == np.diag(np.diag(table))).all()
    # swap the experts of circles and squares in half of the images: fraction drops to ~1/2
    win2 = win.copy()
    swap = {0: 1, 1: 0, 2: 2, 3: 3}
    for i in range(0, n, 2):
        win2[i] = [swap[v] for v in win2[i]]
    spec2 = specialisation(assign_objects(scenes, seg, win2), n_experts=4)
    assert spec2["fraction"]["triangle"] == 1.0
    assert spec2["fraction"]["circle"] < 0.8


def test_assign_objects_bad_shape(scenes):
    with pytest.raises(ValueError, match="segmentation"):
        assign_objects(scenes, np.zeros((2, 3, 3)), np.zeros((2, 1)))


def _planted_segmentation(scenes, front_first=True):
    """Step of depth slot j: n - 1 - j (front first) or j (back first); background step n."""
    n, h, w = scenes.labels.shape
    seg = np.zeros((n, h, w), int)
    for i in range(n):
        k = int(scenes.n_objects[i])
        for slot in range(k):
            seg[i][scenes.labels[i] == slot + 1] = (k - 1 - slot) if front_first else slot
        seg[i][scenes.labels[i] == 0] = k
    return seg


def test_depth_order_front_to_back_and_step_table():
    sc = make_scenes(30, 32, "unique", random_state=3)  # one object of each class
    good = depth_order(sc, _planted_segmentation(sc), n_steps=4)
    assert good["fraction"] == 1.0
    table = np.asarray(good["table"])
    assert table.shape == (4, 4) and table[3, 3] == 30 and table[3, :3].sum() == 0
    # back-to-front explanation of three objects is never in depth order
    assert depth_order(sc, _planted_segmentation(sc, front_first=False), n_steps=4)["fraction"] == 0.0
    # a fixed class order (circles, squares, triangles, background) ignores depth: only the
    # scenes whose depth order happens to be that order count as correct
    fixed = np.where(sc.labels == 0, 3, 0)
    for i in range(len(sc)):
        for slot in range(3):
            fixed[i][sc.labels[i] == slot + 1] = sc.classes[i, slot]
    got = depth_order(sc, fixed, n_steps=4)
    expect = np.mean([list(sc.classes[i, ::-1]) == [0, 1, 2] for i in range(len(sc))])
    assert got["fraction"] == pytest.approx(expect) and got["fraction"] < 0.5
    assert (np.asarray(got["table"])[:3, :3] == np.diag([30, 30, 30])).all()
    with pytest.raises(ValueError, match="segmentation"):
        depth_order(sc, np.zeros((2, 3, 3), int), n_steps=4)
