"""reprlab.textures.images: bundled textures, user images, natural-image patches, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from reprlab.textures.images import (
    bundled_textures,
    load_texture,
    natural_image_patches,
    texture_provenance,
    to_grayscale,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bundled_textures_load_in_unit_range():
    names = bundled_textures()
    assert {"brick", "grass", "gravel", "reptile_skin"} <= set(names)
    for name in names:
        img = load_texture(name, size=32)
        assert img.shape[1:] == (32, 32) and img.shape[0] in (1, 3)
        assert img.dtype == torch.float32
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
        assert texture_provenance(name)
    assert load_texture("petals").shape[0] == 3  # a colour texture
    assert load_texture("brick").shape[0] == 1   # a grayscale one


def test_grayscale_conversion_is_luminance():
    rgb = load_texture("petals", size=24)
    gray = load_texture("petals", size=24, grayscale=True)
    assert gray.shape == (1, 24, 24)
    expected = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    assert torch.allclose(gray[0], expected, atol=1e-5)
    assert torch.equal(to_grayscale(gray), gray)


def test_user_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    img = load_texture(tmp_path / "x.png")
    assert img.shape == (3, 40, 60)
    assert torch.allclose(img, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    # centre crop to 40x40, then resize
    small = load_texture(str(tmp_path / "x.png"), size=20)
    assert small.shape == (3, 20, 20)
    # grayscale file (mode L) and RGBA
    Image.fromarray(arr[..., 0]).save(tmp_path / "g.png")
    assert load_texture(tmp_path / "g.png").shape == (1, 40, 60)
    Image.fromarray(np.dstack([arr, np.full((40, 60), 255, np.uint8)])).save(tmp_path / "a.png")
    assert load_texture(tmp_path / "a.png").shape == (3, 40, 60)


def test_bad_images_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_texture(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_texture(tmp_path / "empty.png")
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image at all")
    with pytest.raises(ValueError, match="cannot read"):
        load_texture(tmp_path / "junk.jpg")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(ValueError, match="too small"):
        load_texture(tmp_path / "tiny.png")
    with pytest.raises(ValueError, match="neither a bundled texture"):
        load_texture("no-such-texture")
    with pytest.raises(ValueError, match="size"):
        load_texture("brick", size=4)
    with pytest.raises(ValueError, match="directory"):
        load_texture(tmp_path)


def test_natural_image_patches_shape_and_determinism():
    a = natural_image_patches(50, 11, seed=3)
    b = natural_image_patches(50, 11, seed=3)
    c = natural_image_patches(50, 11, seed=4)
    assert a.shape == (50, 3, 11, 11)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert natural_image_patches(10, 7, grayscale=True).shape == (10, 1, 7, 7)
    # patches of a given image are crops of it
    img = torch.arange(30 * 30, dtype=torch.float32).reshape(1, 30, 30) / 900
    p = natural_image_patches(5, 4, images=[img], seed=0)
    for patch in p:
        y, x = divmod(int(round(float(patch[0, 0, 0]) * 900)), 30)
        assert torch.equal(patch, img[:, y:y + 4, x:x + 4])
    with pytest.raises(ValueError):
        natural_image_patches(0, 11)
