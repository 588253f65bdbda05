"""Refining ECON's VAEs on frozen decompositions: same objective (13), only the VAEs move."""

from __future__ import annotations

import pytest
import torch
from reprlab.scenes.econ import ECON, ECONConfig
from reprlab.scenes.refine import (
    attention_distillation,
    dominant_expert,
    freeze_decompositions,
    move_background_last,
    refine_vaes,
    vae_objective,
)
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


def test_attention_distillation_is_stationary_on_the_models_own_regions():
    torch.manual_seed(6)
    model = ECON(ECONConfig(**SMALL)).eval()
    x = torch.from_numpy(make_scenes(6, 16, "unique", random_state=7).images)
    params = list(model.experts.attention.parameters())

    def gradient_norm(data):
        loss = attention_distillation(model, data, torch.arange(len(data)))
        assert torch.equal(loss[data.last], torch.zeros(int(data.last.sum())))  # α = 1 at the last step
        return float(torch.cat([g.flatten() for g in torch.autograd.grad(loss.sum(), params)]).norm())

    own = freeze_decompositions(model, x)  # targets are the nets' own α: cross-entropy at its minimum
    assert gradient_norm(own) < 1e-3
    moved = freeze_decompositions(model, x, background_last=int(torch.mode(own.winners).values))
    assert gradient_norm(moved) > 1.0  # re-ordered steps ask the nets for other regions
    before = {k: v.clone() for k, v in model.experts.attention.state_dict().items()}
    report = refine_vaes(model, "unique", steps=3, n_scenes=6, batch_size=4, progress=False, attention=True)
    assert report["attention"] and report["steps"] == 3
    assert any(not torch.equal(v, before[k]) for k, v in model.experts.attention.state_dict().items())


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


def test_a_larger_beta_pulls_the_posteriors_towards_the_prior():
    x = torch.from_numpy(make_scenes(20, 16, "unique", random_state=9).images)

    def kl_after_refining(beta):
        torch.manual_seed(4)  # the same initial model for every beta
        model = ECON(ECONConfig(**SMALL))
        report = refine_vaes(model, "unique", steps=40, n_scenes=20, batch_size=8, lr=3e-3, progress=False, beta=beta)
        assert report["beta"] == model.config.beta == beta  # stored in the config the model file keeps
        with torch.no_grad():
            data = freeze_decompositions(model.eval(), x)
            terms = model.vae_terms(x[data.scene], data.log_scopes.unsqueeze(1), data.log_regions.unsqueeze(1),
                                    data.last, idx=data.winners)
        return float(terms["loss_z"].mean())  # eq. (11): KL(q(z | x, r, k) || N(0, I)) per step

    assert kl_after_refining(50.0) < 0.5 * kl_after_refining(1.0)  # measured: 0.04 vs 0.21 nats


def test_refinement_stops_on_callback_and_rejects_bad_arguments():
    torch.manual_seed(2)
    model = ECON(ECONConfig(**SMALL))
    report = refine_vaes(model, "unique", steps=50, n_scenes=8, batch_size=4, progress=False,
                         callback=lambda step, loss: step >= 3)
    assert report["stopped"] and report["steps"] == 3
    with pytest.raises(ValueError, match="n_scenes"):
        refine_vaes(model, "unique", steps=5, n_scenes=0, progress=False)
    with pytest.raises(ValueError, match="lr > 0"):
        refine_vaes(model, "unique", steps=5, n_scenes=4, progress=False, lr=0.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        refine_vaes(model, "unique", steps=5, n_scenes=4, progress=False, beta=0.0)
    with pytest.raises(ValueError, match="non-empty batch"):
        freeze_decompositions(model, torch.zeros(0, 3, 16, 16))


def test_moving_the_background_last_gives_the_planted_scopes():
    bg, a, b = torch.zeros(4, 4), torch.zeros(4, 4), torch.zeros(4, 4)
    a[0, :2], b[3, 2:] = 1.0, 1.0
    bg = 1.0 - a - b
    # the model's order: background (expert 0) first, cut around both objects, then a, then b last
    regions = torch.stack([bg, a, b])[None]
    scopes, moved, winners = move_background_last(regions, torch.tensor([[0, 1, 2]]), background=0)
    assert winners.tolist() == [[1, 2, 0]]
    torch.testing.assert_close(moved[0], torch.stack([a, b, bg]))
    torch.testing.assert_close(scopes[0], torch.stack([torch.ones(4, 4), 1.0 - a, bg]))
    # already last: nothing moves
    scopes, same, winners = move_background_last(torch.stack([a, b, bg])[None], torch.tensor([[1, 2, 0]]), 0)
    assert winners.tolist() == [[1, 2, 0]] and torch.equal(same[0], torch.stack([a, b, bg]))
    with pytest.raises(ValueError, match="regions"):
        move_background_last(regions[0], torch.tensor([[0, 1, 2]]), 0)


def test_background_last_keeps_the_partition_and_the_scope_recursion():
    torch.manual_seed(4)
    model = ECON(ECONConfig(**SMALL)).eval()
    x = torch.from_numpy(make_scenes(12, 16, "unique", random_state=5).images)
    with torch.no_grad():
        d = model.decompose(x, stochastic=False)
    background = int(torch.mode(d.winners[:, 0]).values)  # any expert that wins somewhere
    scopes, regions, winners = move_background_last(d.regions, d.winners, background)
    torch.testing.assert_close(regions.sum(1), torch.ones(12, 16, 16), rtol=0, atol=1e-5)  # still a partition
    torch.testing.assert_close(scopes[:, 0], torch.ones(12, 16, 16))
    torch.testing.assert_close(scopes[:, 1:], scopes[:, :-1] - regions[:, :-1], rtol=0, atol=1e-5)  # eq. (14)
    for i in range(12):
        is_bg = (winners[i] == background).int()
        assert torch.equal(is_bg, is_bg.sort().values)  # background steps at the end
        others = d.winners[i][d.winners[i] != background]
        assert torch.equal(winners[i][: len(others)], others)  # the others keep their order
    rows = freeze_decompositions(model, x, batch_size=5, background_last=background)
    assert torch.equal(rows.scene[rows.last], torch.arange(12))  # batched freezing keeps scenes in order
    assert torch.equal(rows.winners[rows.last], winners[:, -1])


def test_dominant_expert_is_the_one_covering_most_area():
    h = w = 4
    big, small = torch.full((h, w), 0.9), torch.full((h, w), 0.1)
    regions = torch.stack([torch.stack([small, big]), torch.stack([small, big])])  # (2 scenes, 2 steps, H, W)
    assert dominant_expert(regions, torch.tensor([[2, 1], [0, 1]])) == 1
