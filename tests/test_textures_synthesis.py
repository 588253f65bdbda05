"""Synthesis (section 4), inpainting (Fig. 7) and the PS baseline: loss goes down, box holds, stop works."""

from __future__ import annotations

import pytest
import torch
from reprlab.textures.baseline import ps_synthesize
from reprlab.textures.filterbanks import random_multiscale_bank
from reprlab.textures.images import load_texture
from reprlab.textures.inpainting import frame_mask, inpaint
from reprlab.textures.metrics import ps_loss
from reprlab.textures.model import TextureModel
from reprlab.textures.synthesis import SynthesisResult, synthesize, uniform_noise

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gray_model() -> TextureModel:
    return TextureModel(random_multiscale_bank(sizes=(3, 7, 15), maps_per_scale=6, in_channels=1, seed=0))


@pytest.fixture(scope="module")
def brick() -> torch.Tensor:
    return load_texture("brick", size=24)


def test_synthesis_lowers_loss_and_respects_box(gray_model, brick):
    tg = gray_model.grams(brick)[0]
    start = float(gray_model.loss(uniform_noise((1, 24, 24), 0), tg))
    res = synthesize(brick, gray_model, iters=15, seed=0, progress=False)
    assert isinstance(res, SynthesisResult)
    assert res.images.shape == (1, 1, 24, 24)
    assert float(res.images.min()) >= 0.0 and float(res.images.max()) <= 1.0
    assert res.final_losses[0] < 0.2 * start
    assert abs(res.final_losses[0] - float(gray_model.loss(res.images[0], tg))) < 1e-3 * start
    assert res.iterations[0] <= 15 and not res.stopped and res.seconds > 0


def test_rgb_other_size_and_samples_differ():
    target = load_texture("petals", size=20)
    model = TextureModel(random_multiscale_bank(sizes=(3, 11), maps_per_scale=8, in_channels=3, seed=0))
    res = synthesize(target, model, size=(16, 12), iters=4, n_samples=2, seed=5, progress=False)
    assert res.images.shape == (2, 3, 16, 12)
    assert not torch.allclose(res.images[0], res.images[1])
    # sample i starts from noise seeded seed + i
    again = synthesize(target, model, size=(16, 12), iters=4, n_samples=1, seed=6, progress=False)
    assert torch.allclose(again.images[0], res.images[1], atol=1e-6)


def test_callback_stop_takes_effect_on_the_next_evaluation(gray_model, brick):
    seen = []

    def cb(step, loss, state):
        seen.append((step, loss, state))
        return step >= 2

    res = synthesize(brick, gray_model, iters=50, n_samples=3, callback=cb, progress=False)
    assert res.stopped
    assert [s for s, _, _ in seen] == [0, 1, 2]  # called on every evaluation, stopped at once
    img = seen[-1][2]["image"]
    assert img.shape == (1, 24, 24) and img.device.type == "cpu"
    assert res.images.shape[0] == 1  # later samples never started
    assert float(res.images.min()) >= 0 and float(res.images.max()) <= 1


def test_stop_latency_is_one_evaluation(gray_model, brick):
    """A flag set from elsewhere (like the studio's Stop button) stops within one evaluation."""
    flag = {"stop": False}

    def cb(step, loss, state):
        if step == 3:
            flag["stop"] = True
        return flag["stop"]

    res = synthesize(brick, gray_model, iters=100, callback=cb, progress=False)
    assert res.stopped and res.evaluations[0] == 4


def test_torch_method_keeps_box_and_lowers_loss(gray_model, brick):
    res = synthesize(brick, gray_model, iters=25, method="torch", lr=0.05, progress=False)
    assert float(res.images.min()) >= 0 and float(res.images.max()) <= 1
    assert res.losses[0][-1] < res.losses[0][0]


def test_synthesis_input_errors(gray_model, brick):
    with pytest.raises(ValueError, match="channels"):
        synthesize(torch.rand(3, 16, 16), gray_model, iters=1, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        synthesize(brick * 3, gray_model, iters=1, progress=False)
    with pytest.raises(ValueError, match="n_samples"):
        synthesize(brick, gray_model, n_samples=0, progress=False)
    with pytest.raises(ValueError, match="method"):
        synthesize(brick, gray_model, method="adam", iters=1, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        synthesize(torch.full((1, 16, 16), float("nan")), gray_model, iters=1, progress=False)


def test_inpainting_keeps_frame_and_fits_inside(gray_model):
    texture = load_texture("gravel", size=64)
    mask = frame_mask(24, 0.2)
    assert int(mask.sum()) == 14 * 14
    for mode in ("regular", "estimate"):
        res = inpaint(texture, gray_model, patch_size=24, frame=0.2, mode=mode, n_patches=20, iters=10,
                      progress=False)
        assert torch.equal(res.image[:, ~res.mask], res.original[:, ~res.mask])  # frame untouched
        assert not torch.allclose(res.image[:, res.mask], res.init[:, res.mask])
        assert res.losses[-1] < res.losses[0]
    with pytest.raises(ValueError, match="frame"):
        frame_mask(24, 0.6)


def test_ps_baseline_lowers_ps_loss():
    target = load_texture("brick", size=32)
    res = ps_synthesize(target, iters=12, progress=False)
    assert res.images.shape == (1, 1, 32, 32)
    assert float(res.images.min()) >= 0 and float(res.images.max()) <= 1
    noise = ps_loss(target, uniform_noise((1, 32, 32), 0))
    assert ps_loss(target, res.images[0]) < 0.7 * noise
