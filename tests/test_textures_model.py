"""Model of paper sections 2-3: FFT conv == conv2d, Gram closed forms (eq. 1), eqs. (2), (3), (5), gradients."""

from __future__ import annotations

import pytest
import torch
from reprlab.textures.fftconv import FFTConv2d, conv2d_same, fft_size
from reprlab.textures.filterbanks import FilterBank, random_bank, random_multiscale_bank
from reprlab.textures.model import TextureModel, gram_distance, gram_matrix, pixel_distance

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("hw", [(64, 64), (37, 50), (20, 20), (6, 9)])
def test_fft_conv_equals_conv2d(hw):
    bank = random_multiscale_bank(sizes=(15, 23, 37, 55), maps_per_scale=4, seed=1)
    x = torch.rand(2, 3, *hw)
    fft = FFTConv2d(bank.weights)(x)
    direct = torch.cat([conv2d_same(x, w) for w in bank.weights], 1)
    assert fft.shape == direct.shape == (2, 16, *hw)
    assert _rel(fft, direct) < 1e-4


def test_fft_conv_gradient_equals_conv2d_gradient():
    bank = random_multiscale_bank(sizes=(3, 15, 23), maps_per_scale=3, seed=2)
    conv = FFTConv2d(bank.weights).double()
    x = torch.rand(2, 3, 13, 11, dtype=torch.double, requires_grad=True)
    g = torch.randn(2, 9, 13, 11, dtype=torch.double)
    (gx_fft,) = torch.autograd.grad(conv(x), x, g)
    direct = torch.cat([conv2d_same(x, w.double()) for w in bank.weights], 1)
    (gx_dir,) = torch.autograd.grad(direct, x, g)
    assert _rel(gx_fft, gx_dir) < 1e-10
    assert fft_size(256, 27) >= 283 and fft_size(5, 27) >= 55


def test_model_fft_and_direct_paths_agree():
    bank = random_multiscale_bank(maps_per_scale=4, in_channels=1, seed=3)
    fast, slow = TextureModel(bank), TextureModel(bank, fft_threshold=None)
    x = torch.rand(1, 40, 40)
    assert _rel(fast.features(x), slow.features(x)) < 1e-4
    tg = slow.grams(torch.rand(1, 40, 40))[0]
    y1 = x.clone().requires_grad_(True)
    y2 = x.clone().requires_grad_(True)
    l1, l2 = fast.loss(y1, tg), slow.loss(y2, tg)
    l1.backward()
    l2.backward()
    assert abs(l1.item() - l2.item()) / l2.item() < 1e-4
    assert _rel(y1.grad, y2.grad) < 1e-3


def _identity_bank(c: int) -> FilterBank:
    return FilterBank([torch.eye(c).reshape(c, c, 1, 1)], name="identity")


def test_gram_closed_form_linear_identity_filters():
    """1x1 identity filters, no nonlinearity, zero mean: G = X X^T / M (eq. 1)."""
    model = TextureModel(_identity_bank(3), nonlinearity="none", channel_mean=(0.0, 0.0, 0.0))
    x = torch.rand(3, 7, 5, dtype=torch.float32)
    flat = x.reshape(3, -1).double()
    assert torch.allclose(model.grams(x)[0].double(), flat @ flat.T / 35, atol=1e-6)
    # channel mean removal: G becomes the covariance about the given means
    m = (0.2, 0.5, 0.7)
    centred = flat - torch.tensor(m, dtype=torch.double)[:, None]
    g = TextureModel(_identity_bank(3), nonlinearity="none", channel_mean=m).grams(x)[0].double()
    assert torch.allclose(g, centred @ centred.T / 35, atol=1e-6)
    own = TextureModel(_identity_bank(3), nonlinearity="none", channel_mean="image").grams(x)[0].double()
    c2 = flat - flat.mean(1, keepdim=True)
    assert torch.allclose(own, c2 @ c2.T / 35, atol=1e-6)


def test_gram_closed_form_constant_image_relu():
    """Constant image v, 1x1 filters w: F_i = relu(w_i (v - mean)) everywhere, G = f f^T."""
    w = torch.tensor([1.0, -2.0, 0.5, -0.1]).reshape(4, 1, 1, 1)
    v, mean = 0.9, 0.4
    model = TextureModel(FilterBank([w]), nonlinearity="relu", channel_mean=(mean,))
    f = torch.relu(w.flatten() * (v - mean))
    assert torch.allclose(model.grams(torch.full((1, 6, 6), v))[0], torch.outer(f, f), atol=1e-6)
    sig = TextureModel(FilterBank([w]), nonlinearity="sigmoid", channel_mean=(mean,))
    s = torch.sigmoid(w.flatten() * (v - mean))
    assert torch.allclose(sig.grams(torch.full((1, 6, 6), v))[0], torch.outer(s, s), atol=1e-6)


def test_gram_is_symmetric_psd_and_batched():
    model = TextureModel(random_multiscale_bank(sizes=(3, 15), maps_per_scale=6, seed=0))
    xs = torch.rand(2, 3, 20, 20)
    g = model.grams(xs)
    assert g.shape == (2, 12, 12)
    assert torch.allclose(g, g.transpose(1, 2))
    assert float(torch.linalg.eigvalsh(g.double()).min()) > -1e-6
    assert torch.allclose(g[1], model.grams(xs[1])[0])
    assert torch.allclose(gram_matrix(model.features(xs)), g)


def test_loss_eq5_value_zero_at_target_and_gradcheck():
    bank = random_multiscale_bank(sizes=(3, 5, 15), maps_per_scale=5, in_channels=3, seed=4)
    model = TextureModel(bank, gram_block=4).double()
    x = torch.rand(3, 12, 10, dtype=torch.double)
    tg = model.grams(x)[0]
    assert float(model.loss(x, tg)) < 1e-20
    y = torch.rand(2, 3, 12, 10, dtype=torch.double)
    naive = sum(((model.grams(y[i])[0] - tg) ** 2).sum() / (tg ** 2).sum() for i in range(2))
    assert torch.allclose(model.loss(y, tg), naive, rtol=1e-10)
    y1 = torch.rand(1, 3, 6, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: model.loss(z, tg), (y1,))


def test_eq2_and_eq3_closed_forms():
    x = torch.rand(1, 8, 8) + 0.1
    assert pixel_distance(x, x) == 0.0
    assert abs(pixel_distance(x, 2 * x) - 0.5) < 1e-9  # ||x||^2 / (||x|| 2||x||)
    lin = TextureModel(_identity_bank(1), nonlinearity="none", channel_mean=(0.0,))
    assert abs(gram_distance(x, 2 * x, lin) - 9 / 4) < 1e-5  # G(2x) = 4 G(x)
    with pytest.raises(ValueError):
        pixel_distance(x, torch.rand(1, 4, 4))


def test_model_input_validation():
    model = TextureModel(random_bank(3, 4, in_channels=3))
    with pytest.raises(ValueError, match="C=3"):
        model.grams(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="nonlinearity"):
        TextureModel(random_bank(3, 4), nonlinearity="tanh")
    with pytest.raises(ValueError, match="target_grams"):
        model.loss(torch.rand(3, 8, 8), torch.zeros(5, 5))
    with pytest.raises(ValueError, match="all zeros"):
        model.loss(torch.rand(3, 8, 8), torch.zeros(4, 4))


def test_fft_spectra_cache_is_bounded_and_reused():
    conv = FFTConv2d(random_bank(15, 4, in_channels=3).weights)
    for side in (20, 30, 40, 20):
        conv(torch.rand(1, 3, side, side))
    assert len(conv._cache) == conv.max_cached == 2
    spec = next(reversed(conv._cache.values()))
    conv(torch.rand(1, 3, 20, 20))
    assert next(reversed(conv._cache.values())) is spec  # same size: cached spectra reused


@pytest.mark.parametrize("nonlinearity", ["relu", "sigmoid", "none"])
def test_fused_loss_equals_autograd_reference(nonlinearity):
    """The fused loss (buffer-filling forward, hand-written backward, internal map order) equals
    the straightforward conv2d + cat + nonlinearity + F F^T + autograd, for a bank whose FFT and
    direct scales are interleaved (15, 3, 9, 5)."""
    ws = [random_bank(k, 3, in_channels=3, seed=k).weights[0].double() for k in (15, 3, 9, 5)]
    model = TextureModel(FilterBank(ws), nonlinearity=nonlinearity, fft_threshold=9).double()
    assert model._order is not None
    act = {"relu": torch.relu, "sigmoid": torch.sigmoid, "none": lambda v: v}[nonlinearity]

    def reference(x):
        f = act(torch.cat([conv2d_same(x[None] - model.mean, w) for w in ws], 1))[0].reshape(12, -1)
        return f @ f.T / f.shape[1]

    tg = reference(torch.rand(3, 17, 14, dtype=torch.double))
    x1 = torch.rand(3, 17, 14, dtype=torch.double, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    ref = ((reference(x2) - tg) ** 2).sum() / (tg ** 2).sum()
    ref.backward()
    fused = model.loss(x1, tg)
    fused.backward()
    assert abs(fused.item() - ref.item()) / ref.item() < 1e-10
    assert _rel(x1.grad, x2.grad) < 1e-9
    assert _rel(model.features(x1.detach())[0].reshape(12, -1) @ model.features(x1.detach())[0].reshape(12, -1).T
                / (17 * 14), reference(x1.detach())) < 1e-10


def test_fft_adjoint_in_pieces_equals_whole():
    conv = FFTConv2d(random_multiscale_bank(sizes=(7, 15), maps_per_scale=5, seed=5).weights).double()
    conv.chunk = 3
    g = torch.randn(10, 12, 9, dtype=torch.double)
    acc = conv.adjoint_spectrum(g[:4], 0)
    acc = conv.adjoint_spectrum(g[4:], 4, acc)
    assert _rel(conv.adjoint_finish(acc, 12, 9), conv.adjoint(g)) < 1e-12
    with pytest.raises(ValueError, match="out of range"):
        conv.adjoint_spectrum(g, 4)


def test_fft_conv_parallel_chunks_equal_one_thread_and_conv2d():
    """The CPU path splits the maps into chunks run on a thread pool: same numbers at 2 threads."""
    from reprlab import torch_threads

    bank = random_multiscale_bank(sizes=(7, 15, 23), maps_per_scale=5, seed=6)
    conv = FFTConv2d(bank.weights).double()
    conv.chunk = 4  # 15 maps -> 4 chunks, the last one short
    x = torch.rand(3, 21, 18, dtype=torch.double)
    g = torch.randn(15, 21, 18, dtype=torch.double)
    direct = torch.cat([conv2d_same(x[None], w.double()) for w in bank.weights], 1)[0]
    results = {}
    for threads in (1, 2):
        with torch_threads(threads):
            out = torch.empty(15, 21, 18, dtype=torch.double)
            results[threads] = (conv.correlate_into(x, out, "relu").clone(), conv.adjoint(g))
    assert _rel(results[2][0], torch.relu(direct)) < 1e-12
    assert torch.equal(results[1][0], results[2][0])
    assert _rel(results[2][1], results[1][1]) < 1e-12


def test_fft_conv_torch_path_used_off_cpu_equals_conv2d(monkeypatch):
    """The torch.fft path (GPUs, dtypes scipy lacks), forced on the CPU, gives the same maps and adjoint."""
    import reprlab.textures.fftconv as fftconv

    bank = random_multiscale_bank(sizes=(7, 15), maps_per_scale=3, seed=7)
    conv = FFTConv2d(bank.weights).double()
    x = torch.rand(1, 3, 16, 13, dtype=torch.double, requires_grad=True)
    g = torch.randn(1, 6, 16, 13, dtype=torch.double)
    (want,) = torch.autograd.grad(torch.cat([conv2d_same(x, w.double()) for w in bank.weights], 1), x, g)
    scipy_out = conv(x)
    monkeypatch.setattr(fftconv, "_use_scipy", lambda t: False)
    torch_out = conv(x)
    (got,) = torch.autograd.grad(torch_out, x, g)
    assert _rel(torch_out.detach(), scipy_out.detach()) < 1e-12
    assert _rel(got, want) < 1e-10
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        conv.correlate_into(x[0].detach(), torch.empty(6, 16, 13, dtype=torch.double), "tanh")
