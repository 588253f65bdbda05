"""ECON model: batched experts, ELBO pieces (eqs. 10–13), competition, scopes (eq. 14)."""

from __future__ import annotations

import pytest
import torch
from reprlab.scenes.econ import (
    ECON,
    ECONConfig,
    bernoulli_kl,
    gaussian_kl,
    log1mexp,
    shift_and_scale,
)
from reprlab.scenes.expert import GConv, GInstanceNorm, GLinear
from reprlab.scenes.metrics import order_gap
from reprlab.scenes.sprites import CLASSES, make_scenes
from torch.distributions import Bernoulli, Normal, kl_divergence

SMALL = dict(image_size=16, n_experts=3, n_steps=3, latent_dim=3, vae_layers=2, vae_channels=6,
             attention_channels=(4, 8), attention_mlp=16)


@pytest.fixture(scope="module")
def model() -> ECON:
    torch.manual_seed(0)
    return ECON(ECONConfig(**SMALL))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.from_numpy(make_scenes(4, 16, "unique", random_state=1).images)


def test_gaussian_kl_matches_closed_form():
    torch.manual_seed(1)
    mu, logvar = torch.randn(5, 4), torch.randn(5, 4)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), ref)


def test_bernoulli_kl_matches_closed_form_and_scope_cancels():
    torch.manual_seed(2)
    q = torch.rand(200) * 0.98 + 0.01
    p = torch.rand(200) * 0.98 + 0.01
    ref = kl_divergence(Bernoulli(probs=q), Bernoulli(probs=p))
    torch.testing.assert_close(bernoulli_kl(q.log(), p.log()), ref, rtol=1e-4, atol=1e-5)
    # eq. (7): with r = s·α and p = s·m̃, zero scope gives zero KL (no penalty outside s)
    zero = torch.full((3,), -80.0)
    assert bernoulli_kl(zero + q[:3].log(), zero + p[:3].log()).abs().max() < 1e-6
    torch.testing.assert_close(log1mexp(torch.log(q)), torch.log1p(-q), rtol=1e-5, atol=1e-6)


def test_grouped_layers_equal_per_expert_reference():
    torch.manual_seed(3)
    k, b = 3, 4
    conv, norm, lin = GConv(k, 2, 5, 3), GInstanceNorm(k, 5), GLinear(k, 6, 7)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1, 1)
    h = torch.randn(b, k, 2, 8, 8)
    out = norm(conv(h))
    idx = torch.tensor([2, 0, 1, 2])
    sel = norm(conv(h[torch.arange(b), idx].unsqueeze(1), idx), idx)
    for e in range(k):
        ref = torch.nn.functional.conv2d(h[:, e], conv.weight[e], conv.bias[e], padding=1)
        ref = torch.nn.functional.instance_norm(ref, weight=norm.weight[e], bias=norm.bias[e])
        torch.testing.assert_close(out[:, e], ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sel[:, 0], out[torch.arange(b), idx], rtol=1e-4, atol=1e-5)
    v = torch.randn(b, k, 6)
    torch.testing.assert_close(lin(v)[:, 1], v[:, 1] @ lin.weight[1] + lin.bias[1])
    torch.testing.assert_close(lin(v[torch.arange(b), idx].unsqueeze(1), idx)[:, 0], lin(v)[torch.arange(b), idx])


def test_regions_sum_to_one_and_scope_update_eq14(model, images):
    with torch.no_grad():
        d = model.decompose(images, stochastic=True, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(d.regions.sum(1), torch.ones_like(d.regions[:, 0]), rtol=1e-5, atol=1e-5)
    assert (d.scopes[:, 0] == 1).all()  # s_T = 1
    for t in range(d.scopes.shape[1] - 1):  # s_{t-1} = s_t ⊙ (1 − α) = s_t − r̃_t
        torch.testing.assert_close(d.scopes[:, t + 1], d.scopes[:, t] - d.regions[:, t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d.regions[:, -1], d.scopes[:, -1])  # last step takes the rest
    assert ((d.regions >= 0) & (d.regions <= d.scopes + 1e-6)).all()


def test_objective_matches_winner_terms_and_competition_probs(model, images):
    cfg = model.config
    with torch.no_grad():
        d = model.decompose(images, stochastic=False)
    # deterministic competition picks the arg-min of λ L_x + L_r
    assert (d.winners == d.objective.argmin(2)).all()
    chosen = d.objective.gather(2, d.winners.unsqueeze(-1))[..., 0]
    assert cfg.competition_norm == "pixels"  # score in nats per pixel (16 x 16 images)
    torch.testing.assert_close(chosen, (cfg.lam * d.loss_x + d.loss_r) / 256, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(d.probs, torch.softmax(-d.objective / cfg.temperature, 2))
    torch.testing.assert_close(d.loss, (d.loss_x + cfg.beta * d.loss_z + cfg.gamma * d.loss_r).sum(1))
    # the loss with gradients (winners recomputed alone) equals the competition's values
    g = model.decompose(images, stochastic=False)
    torch.testing.assert_close(g.loss.detach(), d.loss, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("norm", ["sum", "pixels", "region"])
def test_competition_objective_scaling(images, norm):
    torch.manual_seed(6)
    m = ECON(ECONConfig(**{**SMALL, "competition_norm": norm, "lam": 0.7}))
    with torch.no_grad():
        terms = m.expert_terms(images, torch.zeros(len(images), 16, 16), last=False)
        d = m.decompose(images, n_steps=2, stochastic=False)  # step 0 is not the last step
    raw = 0.7 * terms["loss_x"] + terms["loss_r"]
    scale = {"sum": torch.ones_like(raw), "pixels": torch.full_like(raw, 256.0),
             "region": terms["regions"].sum((2, 3)).clamp(min=1.0)}[norm]
    torch.testing.assert_close(m.competition_objective(terms), raw / scale)
    torch.testing.assert_close(d.objective[:, 0], raw / scale, rtol=1e-4, atol=1e-4)
    # the ranking of experts (hence the deterministic winner) does not depend on a global scale
    if norm != "region":
        assert (d.winners[:, 0] == raw.argmin(1)).all()
    with pytest.raises(ValueError, match="competition_norm"):
        ECONConfig(**{**SMALL, "competition_norm": "mean"})


def test_stochastic_winner_follows_probabilities(images):
    torch.manual_seed(5)
    m = ECON(ECONConfig(**SMALL))
    x = images[:1].expand(400, -1, -1, -1).contiguous()
    with torch.no_grad():
        d = m.decompose(x, n_steps=1, stochastic=True, generator=torch.Generator().manual_seed(1), temperature=200.0)
    freq = torch.bincount(d.winners[:, 0], minlength=3).float() / 400
    assert (freq - d.probs[:, 0].mean(0)).abs().max() < 0.08


def test_only_winners_receive_gradients(images):
    torch.manual_seed(4)
    m = ECON(ECONConfig(**{**SMALL, "n_experts": 4}))
    d = m.decompose(images[:1], n_steps=2, stochastic=True, generator=torch.Generator().manual_seed(3))
    d.loss.sum().backward()
    winners = set(d.winners[0].tolist())
    for name, p in m.named_parameters():
        per_expert = p.grad.reshape(4, -1).abs().sum(1)
        for e in range(4):
            if e not in winners:
                assert per_expert[e] == 0, f"{name}: loser {e} got a gradient"
    # the first step's winner is trained through its attention net; decoders of winners get gradients
    w0 = int(d.winners[0, 0])
    assert m.experts.attention.head.weight.grad[w0].abs().sum() > 0
    assert m.experts.decoder.head.weight.grad[w0].abs().sum() > 0


def test_expected_loss_is_probability_weighted_average_of_expert_losses(images):
    # one step: E_k~P [loss of winner k] has a closed form, Σ_k P(k) · loss(k); each loss(k)
    # is computed with k forced as the winner on the same noise
    torch.manual_seed(6)
    m = ECON(ECONConfig(**{**SMALL, "n_experts": 4}))
    x = images[:3]
    d = m.decompose(x, n_steps=1, stochastic=True, generator=torch.Generator().manual_seed(2),
                    temperature=300.0, expected_loss=True)
    per_expert = []
    with torch.no_grad():
        for k in range(4):
            forced = torch.full((3, 1), k, dtype=torch.long)
            dk = m.decompose(x, n_steps=1, stochastic=True, generator=torch.Generator().manual_seed(2),
                             forced_winners=forced)
            per_expert.append(dk.loss)
    ref = (d.probs[:, 0] * torch.stack(per_expert, 1)).sum(1)
    assert d.probs[:, 0].min() > 0.05  # the competition is soft here, so the average is not one term
    torch.testing.assert_close(d.loss.detach(), ref, rtol=1e-4, atol=1e-3)


def test_expected_loss_trains_all_experts_and_reduces_to_winner_when_sharp(images):
    torch.manual_seed(4)
    m = ECON(ECONConfig(**{**SMALL, "n_experts": 4}))
    d = m.decompose(images[:1], n_steps=2, stochastic=True, generator=torch.Generator().manual_seed(3),
                    temperature=300.0, expected_loss=True)
    d.loss.sum().backward()
    assert (m.experts.attention.head.weight.grad.reshape(4, -1).abs().sum(1) > 0).all()
    # at a vanishing temperature P is one-hot, so the average is the sampled winner's loss
    kwargs = dict(n_steps=3, stochastic=True, temperature=1e-6)
    sharp = m.decompose(images, generator=torch.Generator().manual_seed(5), expected_loss=True, **kwargs)
    sampled = m.decompose(images, generator=torch.Generator().manual_seed(5), **kwargs)
    assert torch.equal(sharp.winners, sampled.winners)
    torch.testing.assert_close(sharp.loss, sampled.loss, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="forced_winners"):
        m.decompose(images[:1], n_steps=1, forced_winners=torch.zeros(1, 1, dtype=torch.long), expected_loss=True)


@pytest.mark.parametrize("region_kl", [False, True])
def test_last_step_is_the_background_layer_with_shape_one(images, region_kl):
    # footnotes 2 and 7: r_1 = s_1 and m_1 = 1, so eq. (7) gives p(r_1) = q(r_1) and KL (12) = 0;
    # the default (appendix A.1 as written) keeps KL(s_1 ‖ s_1 ⊙ m̃) and trains the last winner's shape to 1
    torch.manual_seed(7)
    m = ECON(ECONConfig(**SMALL, last_step_region_kl=region_kl))
    d = m.decompose(images, n_steps=2, stochastic=True, generator=torch.Generator().manual_seed(1))
    last = d.loss_r[:, -1]
    shape_head = m.experts.decoder.head.weight  # (K, 4, C, 1, 1); channel 3 is the shape logit
    d.loss_r[:, -1].sum().backward()
    shape_grad = shape_head.grad[:, 3].abs().sum()
    if region_kl:
        assert (last > 1.0).all() and shape_grad > 0
    else:
        assert torch.equal(last, torch.zeros_like(last))
        assert torch.equal(d.shapes[:, -1], torch.ones_like(d.shapes[:, -1]))
        assert shape_grad == 0
        assert (d.loss_r[:, 0] > 0).all()  # earlier steps keep their region KL


@pytest.mark.parametrize("stochastic", [False, True])
def test_background_expert_takes_the_last_step_only(images, stochastic):
    # footnotes 2 and 5: one of the K classes is the background, and it is layer t = 1
    torch.manual_seed(8)
    free = ECON(ECONConfig(**SMALL))
    bg = ECON(ECONConfig(**SMALL, background_expert=1))
    bg.load_state_dict(free.state_dict())
    x = images.repeat(8, 1, 1, 1)

    def run(m: ECON):
        with torch.no_grad():
            return m.decompose(x, n_steps=3, stochastic=stochastic, generator=torch.Generator().manual_seed(2),
                               temperature=50.0)

    d_free, d = run(free), run(bg)
    if stochastic:  # unconstrained, expert 1 wins some early steps and loses some last ones
        assert (d_free.winners[:, :-1] == 1).any() and (d_free.winners[:, -1] != 1).any()
    assert (d.winners[:, -1] == 1).all() and (d.winners[:, :-1] != 1).all()
    torch.testing.assert_close(d.probs[:, -1, 1], torch.ones(len(x)))
    assert (d.probs[:, :-1, 1] == 0).all()
    # at the first step (same scope, same noise) the other experts compete exactly as before
    first = d_free.probs[:, 0].clone()
    first[:, 1] = 0
    torch.testing.assert_close(d.probs[:, 0], first / first.sum(1, keepdim=True))
    for bad in (3, -1, True, 1.0):
        with pytest.raises(ValueError, match="background_expert"):
            ECONConfig(**SMALL, background_expert=bad)


def test_generation_layers_back_to_front(model):
    out = model.generate([0, 1, 2, 1], n=3, generator=torch.Generator().manual_seed(0))
    assert out["image"].shape == (3, 3, 16, 16) and out["layers"].shape == (3, 4, 3, 16, 16)
    assert (out["shapes"][:, 0] == 1).all()
    # the front layer is on top wherever its shape is (nearly) one
    top = out["shapes"][:, -1] > 0.999
    if top.any():
        diff = (out["image"] - out["layers"][:, -1]).abs().amax(1)
        assert diff[top].max() < 1e-2


def test_latent_shift_and_scale_diagonal_and_full():
    eps = torch.randn(40000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loc = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    std = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(shift_and_scale(eps, loc, std), loc + std * eps)
    cov = torch.tensor([[1.0, 0.8, 0.0], [0.8, 1.0, -0.3], [0.0, -0.3, 0.5]], dtype=torch.float64)
    z = shift_and_scale(eps, loc, torch.linalg.cholesky(cov))
    torch.testing.assert_close(z.mean(0), loc, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), cov, atol=0.03, rtol=0)  # correlations kept, not only variances
    with pytest.raises(ValueError, match="scale of shape"):
        shift_and_scale(eps, loc, torch.ones(2, 3))


def test_single_expert_variant_runs():
    m = ECON(ECONConfig(**{**SMALL, "n_experts": 1}))
    x = torch.from_numpy(make_scenes(2, 16, random_state=0).images)
    d = m.decompose(x)
    assert (d.winners == 0).all() and torch.isfinite(d.loss).all()


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="shape"):
        model.decompose(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.decompose(torch.full((1, 3, 16, 16), 2.0))
    with pytest.raises(ValueError, match="NaN"):
        model.decompose(torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="n_steps"):
        model.decompose(torch.zeros(1, 3, 16, 16), n_steps=0)
    with pytest.raises(ValueError, match="expert indices"):
        model.generate([0, 7])
    with pytest.raises(ValueError, match="positive int"):
        ECONConfig(n_experts=0)
    with pytest.raises(ValueError, match="divisible"):
        ECON(ECONConfig(**{**SMALL, "image_size": 18}))
    with pytest.raises(ValueError, match="unknown ECONConfig"):
        ECONConfig.from_dict({"colour": 1})


def test_order_gap_scores_true_front_to_back_order(model):
    sc = make_scenes(5, 16, "unique", classes="random", n_objects=(1, 3), random_state=4)
    roles = {"circle": 0, "square": 1, "triangle": 2, "background": 2}
    gap = order_gap(model, sc, roles, batch_size=2)
    greedy, true = [], []
    with torch.no_grad():
        for i in range(len(sc)):  # one scene at a time: front object first, background last
            n = int(sc.n_objects[i])
            order = [roles[CLASSES[c]] for c in sc.classes[i, :n][::-1]] + [roles["background"]]
            x = torch.from_numpy(sc.images[i:i + 1])
            greedy.append(model.decompose(x, n_steps=n + 1, stochastic=False).loss.item())
            true.append(model.decompose(x, n_steps=n + 1, stochastic=False,
                                        forced_winners=torch.tensor([order])).loss.item())
    assert len(set(sc.n_objects.tolist())) > 1  # several groups of object counts
    assert gap["greedy_loss"] == pytest.approx(sum(greedy) / len(sc), rel=1e-4)
    assert gap["true_order_loss"] == pytest.approx(sum(true) / len(sc), rel=1e-4)
    assert gap["true_order_better"] == pytest.approx(sum(t < g for t, g in zip(true, greedy)) / len(sc))
    with pytest.raises(ValueError, match="background"):
        order_gap(model, sc, {"circle": 0, "square": 1, "triangle": 2})
