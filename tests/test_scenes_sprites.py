"""Sprite scenes (ECON appendix C.1) and the layered model of §2 (eqs. 1–3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reprlab.scenes.layers import compose, paint_layers, regions_from_shapes, scopes_from_shapes
from reprlab.scenes.sprites import (
    CLASSES,
    UNIQUE_COLOURS,
    classify_shape,
    make_scenes,
    shape_mask,
)


@pytest.fixture(scope="module", params=["unique", "random"])
def scenes(request):
    return make_scenes(40, 32, request.param, random_state=3)


@pytest.fixture(scope="module")
def ood():
    return make_scenes(40, 32, "random", classes="random", n_objects=(0, 5), similar_colours=True, random_state=4)


def test_training_scenes_have_one_object_of_each_class(scenes):
    assert (scenes.n_objects == 3).all()
    assert (np.sort(scenes.classes, axis=1) == np.arange(3)).all()


def test_objects_fully_inside_and_nonempty(scenes, ood):
    for batch in (scenes, ood):
        for i in range(len(batch)):
            for j in range(int(batch.n_objects[i])):
                mask = batch.shapes[i, j]
                rows = np.flatnonzero(mask.any(1))
                cols = np.flatnonzero(mask.any(0))
                assert mask.sum() >= 6
                # the object is not cut by the border: its mask equals a freshly drawn sprite
                size = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
                assert rows[0] >= 0 and cols[0] >= 0 and rows[-1] < 32 and cols[-1] < 32
                assert classify_shape(mask) == batch.classes[i, j]
                assert size <= 32


def test_masks_partition_image_consistent_with_depth(scenes, ood):
    for batch in (scenes, ood):
        m = batch.shapes.shape[1]
        visible = batch.regions.sum(1) + (batch.labels == 0)
        assert (visible == 1).all()  # regions and background partition the image
        for j in range(m):
            in_front = batch.shapes[:, j + 1:].any(1)
            expected = batch.shapes[:, j] & ~in_front
            np.testing.assert_array_equal(batch.regions[:, j], expected)
            np.testing.assert_array_equal(batch.labels == j + 1, expected)


def test_colour_ranges(scenes, ood):
    for batch in (scenes, ood):
        assert batch.backgrounds.max() <= 127
        real = batch.classes >= 0
        if batch.colour_mode == "unique":
            for c, name in enumerate(CLASSES):
                assert (batch.colours[batch.classes == c] == UNIQUE_COLOURS[name]).all()
        else:
            assert batch.colours[real].min() >= 128 and batch.colours[real].max() <= 255
        # the image shows the background colour where labels are 0
        bg = batch.labels == 0
        img = np.round(batch.images * 255).astype(int)
        for i in range(len(batch)):
            np.testing.assert_array_equal(img[i][:, bg[i]].T, np.broadcast_to(batch.backgrounds[i], (bg[i].sum(), 3)))


def test_ood_object_counts_and_repeats(ood):
    assert ood.n_objects.min() >= 0 and ood.n_objects.max() <= 5
    counts = [np.bincount(ood.classes[i][ood.classes[i] >= 0], minlength=3).max() for i in range(len(ood))]
    assert max(counts) >= 2  # some scene repeats a class


def test_composition_eq3_reproduces_image_from_ground_truth_layers(scenes, ood):
    for batch in (scenes, ood):
        app, shp = batch.layers()
        app_t, shp_t = torch.from_numpy(app), torch.from_numpy(shp)
        x = compose(app_t, shp_t)
        np.testing.assert_allclose(x.numpy(), batch.images, atol=1e-6)
        np.testing.assert_allclose(paint_layers(app_t, shp_t).numpy(), batch.images, atol=1e-6)
        # eq. (2): visible object regions; eq. (1): the front layer's scope is 1
        regions = regions_from_shapes(shp_t).numpy()
        np.testing.assert_array_equal(regions[:, 1:] > 0.5, batch.regions)
        assert (scopes_from_shapes(shp_t)[:, -1] == 1).all()
        np.testing.assert_allclose(regions.sum(1), 1.0)


def test_determinism_and_bad_inputs():
    a = make_scenes(5, 16, random_state=7)
    b = make_scenes(5, 16, random_state=7)
    np.testing.assert_array_equal(a.images, b.images)
    with pytest.raises(ValueError, match="colour_mode"):
        make_scenes(2, 16, "pink")
    with pytest.raises(ValueError, match="image_size"):
        make_scenes(2, 4)
    with pytest.raises(ValueError, match="n_objects"):
        make_scenes(2, 16, classes="random")
    with pytest.raises(ValueError, match="exactly"):
        make_scenes(2, 16, n_objects=5)
    with pytest.raises(ValueError, match="does not fit"):
        shape_mask(0, 10, 10, 10, 16)
    with pytest.raises(ValueError, match="2-D"):
        classify_shape(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"\(N, T, H, W\)"):
        compose(torch.zeros(1, 1, 3, 4, 4), torch.zeros(1, 4, 4))


def test_objects_share_one_size_unless_a_range_is_given(scenes):
    def square_sides(batch):
        return {int(batch.shapes[i, j].any(0).sum()) for i in range(len(batch))
                for j in range(int(batch.n_objects[i])) if batch.classes[i, j] == CLASSES.index("square")}

    assert square_sides(scenes) == {11}  # appendix C.1: positions random, one size (35 % of 32 px)
    varied = make_scenes(40, 32, "unique", size_range=(8, 14), random_state=5)
    assert len(square_sides(varied)) > 3 and square_sides(varied) <= set(range(8, 15))
