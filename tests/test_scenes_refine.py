"""Refining ECON's VAEs on frozen decompositions: same objective (13), only the VAEs move."""

from __future__ import annotations

import pytest
import torch
from reprlab.scenes.econ import ECON, ECONConfig
from reprlab.scenes.refine import freeze_decompositions, refine_vaes, vae_objective
from reprlab.scenes.sprites import make_scenes

SMALL = dict(image_size=16, n_experts=3, n_steps=3, latent_dim=3, vae_layers=2, vae_channels=6,
             attention_channels=(4, 8), attention_mlp=16)


@pytest.mark.parametrize("region_kl", [True, False])
def test_frozen_rows_reproduce_the_decomposition_objective(region_kl):
    torch.manual_seed(0)
    model = ECON(ECONConfig(**SMALL, last_step_region_kl=region_kl)).eval()
    x = torch.from_numpy(make_scenes(5, 16, "unique", random_state=3).images)
    with torch.no_grad():
        want = model.decompose(x, stochastic=False).loss
        data = freeze_decompositions(model, x, batch_size=2)  # batches must not mix scenes up
        rows = vae_objective(model, data, torch.arange(len(data)))
    assert len(data) == 5 * 3 and int(data.last.sum()) == 5
    got = torch.zeros(5).index_add_(0, data.scene, rows)  # objective (13) summed over a scene's steps
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


def test_refinement_lowers_the_objective_and_leaves_attention_alone():
    torch.manual_seed(1)
    model = ECON(ECONConfig(**SMALL))
    attention = {k: v.clone() for k, v in model.experts.attention.state_dict().items()}
    decoder = {k: v.clone() for k, v in model.experts.decoder.state_dict().items()}
    seen = []
    report = refine_vaes(model, "unique", steps=60, n_scenes=40, batch_size=16, lr=3e-3, progress=False,
                         callback=lambda step, loss: seen.append(step) and False)
    assert report["steps"] == 60 and seen == list(range(1, 61)) and report["n_rows"] == 40 * 3
    assert report["objective_after"] < 0.8 * report["objective_before"], report
    for k, v in model.experts.attention.state_dict().items():
        assert torch.equal(v, attention[k]), k
    assert any(not torch.equal(v, decoder[k]) for k, v in model.experts.decoder.state_dict().items())


def test_refinement_stops_on_callback_and_rejects_bad_arguments():
    torch.manual_seed(2)
    model = ECON(ECONConfig(**SMALL))
    report = refine_vaes(model, "unique", steps=50, n_scenes=8, batch_size=4, progress=False,
                         callback=lambda step, loss: step >= 3)
    assert report["stopped"] and report["steps"] == 3
    with pytest.raises(ValueError, match="n_scenes"):
        refine_vaes(model, "unique", steps=5, n_scenes=0, progress=False)
    with pytest.raises(ValueError, match="non-empty batch"):
        freeze_decompositions(model, torch.zeros(0, 3, 16, 16))
