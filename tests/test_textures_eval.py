"""Evaluation (section 5, appendix A): VGG-19 Gram loss from a local weights file, PS and Gram metrics,
similarity matrices (Fig. 6) and the variability check (Fig. 3)."""

from __future__ import annotations

import pytest
import torch
from reprlab.textures.filterbanks import random_multiscale_bank
from reprlab.textures.images import load_texture
from reprlab.textures.metrics import (
    evaluate,
    gram_loss,
    max_normalized_xcorr,
    ps_loss,
    similarity_matrices,
    variability,
)
from reprlab.textures.model import TextureModel
from reprlab.textures.vgg import (
    ENV_VAR,
    GRAM_LAYERS,
    VGGGramLoss,
    save_random_vgg19_weights,
    vgg_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_random_vgg19_weights(tmp_path_factory.mktemp("vgg") / "vgg19_random.safetensors", seed=0)


@pytest.fixture(scope="module")
def small_model() -> TextureModel:
    return TextureModel(random_multiscale_bank(sizes=(3, 7, 15), maps_per_scale=8, in_channels=1, seed=7))


def test_vgg_loss_from_random_weights(weights, tmp_path):
    x = load_texture("brick", size=32)
    y = load_texture("gravel", size=32)
    loss = VGGGramLoss(weights)
    assert float(loss(x, x)) == 0.0
    per_layer = loss.per_layer(x, y)
    assert list(per_layer) == list(GRAM_LAYERS) and all(v > 0 for v in per_layer.values())
    assert abs(float(loss(x, y)) - sum(per_layer.values()) / 5) < 1e-4  # eq. (7): mean of eq. (6)
    # torchvision-style .pth state dict works too and gives the same numbers
    sd = {f"features.{k}": v for k, v in loss.features.state_dict().items()}
    torch.save(sd, tmp_path / "w.pth")
    assert abs(vgg_loss(x, y, tmp_path / "w.pth") - float(loss(x, y))) < 1e-5
    # the loss is differentiable w.r.t. the synthesis (VGG synthesis / Fig. 5)
    z = y.clone().requires_grad_(True)
    loss(x, z).backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_vgg_errors_clearly_without_weights(monkeypatch, tmp_path, weights):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(ValueError, match=ENV_VAR):
        VGGGramLoss()
    with pytest.raises(FileNotFoundError):
        VGGGramLoss(tmp_path / "nope.pth")
    torch.save({"something": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a VGG-19 state dict"):
        VGGGramLoss(tmp_path / "bad.pth")
    monkeypatch.setenv(ENV_VAR, str(weights))
    assert VGGGramLoss().path == weights
    with pytest.raises(ValueError, match="16x16"):
        VGGGramLoss()(torch.rand(3, 8, 8), torch.rand(3, 8, 8))


def test_ps_and_gram_metrics(small_model):
    x = load_texture("brick", size=32)
    y = load_texture("gravel", size=32)
    assert ps_loss(x, x) == 0.0 and ps_loss(x, y) > 0
    assert gram_loss(x, x, small_model) < 1e-10 and gram_loss(x, y, small_model) > 0
    res = evaluate(x, torch.stack([x, y]), metrics=("ps", "gram", "pixel"))
    assert set(res) == {"ps", "gram", "pixel"}
    assert abs(res["ps"] - ps_loss(x, y) / 2) < 1e-9  # mean over the two samples
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate(x, x, metrics=("ssim",))


def test_similarity_matrices_separate_textures(small_model):
    tex = {n: load_texture(n, size=96) for n in ("brick", "grass", "reptile_skin")}
    out = similarity_matrices(tex, {"shallow": small_model}, n_patches=4, patch_size=32, seed=0)
    gram = out["matrices"]["shallow"]
    ssim = out["matrices"]["ssim"]
    assert gram.shape == ssim.shape == (3, 3)
    assert (gram.T == gram).all()
    # feature distances: patches of the same texture are nearer than patches of others
    for i in range(3):
        assert gram[i, i] < min(gram[i, j] for j in range(3) if j != i)
    assert 0.0 <= out["accuracy"]["ssim"] <= 1.0 and out["accuracy"]["shallow"] > 0.5


def test_variability_detects_copies(small_model):
    ref = load_texture("gravel", size=32)
    shifted = torch.roll(ref, shifts=(5, 9), dims=(1, 2))
    v = variability(ref, torch.stack([shifted, ref]), small_model)
    assert v["xcorr_to_reference"] > 0.999  # a circular shift is detected as a copy
    assert abs(max_normalized_xcorr(ref, shifted) - 1) < 1e-6
    noise = variability(ref, torch.rand(2, 1, 32, 32), small_model)
    assert noise["xcorr_to_reference"] < 0.5 and noise["xcorr_between_samples"] < 0.5
    assert noise["gram_to_reference"] > v["gram_to_reference"]
