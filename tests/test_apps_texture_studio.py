"""Texture studio callbacks without a browser: start, live updates, stop, bad uploads."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

pytest.importorskip("panel")

from reprlab.apps.texture_studio import FILTER_SIZES, TextureStudio  # noqa: E402


def _small_studio(**overrides) -> TextureStudio:
    cfg = dict(sizes=(3, 5), maps_per_scale=4, image_size=32, iters=15, seed=0)
    cfg.update(overrides)
    return TextureStudio(**cfg)


def _png_bytes(size: int = 40) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_layout_and_widgets_mirror_the_model_options():
    studio = _small_studio()
    layout = studio.panel()
    assert layout is studio.panel()  # built once
    assert studio.sizes.options == list(FILTER_SIZES)
    assert set(studio.nonlinearity.options) == {"relu", "sigmoid", "none"}
    assert studio.texture.value in studio.texture.options
    assert studio.start_button.disabled is False and studio.stop_button.disabled is True
    # the reference is shown at the chosen size
    assert studio._reference_pipe.data.shape[:2] == (32, 32)
    studio.image_size.value = 48
    assert studio._reference_pipe.data.shape[:2] == (48, 48)


def test_start_runs_synthesis_updates_image_and_loss_curve():
    studio = _small_studio(nonlinearity="relu")
    before = studio.displayed_image.copy()
    assert studio.start() is True
    assert studio.running or studio._live.finished
    assert studio.start_button.disabled and not studio.stop_button.disabled
    assert studio.join(timeout=120)
    image = studio.displayed_image
    evals, losses, best = studio.displayed_losses
    assert image.shape == (32, 32, 3)
    assert np.abs(image - before).mean() > 1e-3  # the placeholder was replaced by a synthesis
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert len(losses) >= 3 and np.all(np.isfinite(losses))
    assert np.all(np.diff(evals) == 1)  # one point per loss evaluation
    assert np.all(np.diff(best) <= 0) and np.allclose(best, np.minimum.accumulate(losses))
    assert best[-1] < 0.5 * losses[0]  # L-BFGS-B reduces the Gram loss of eq. (5)
    result = studio.result
    assert result is not None and not result.stopped
    assert 1 <= sum(result.iterations) <= 15
    shown = np.clip(result.images[0].numpy(), 0, 1).mean(0)  # the final synthesis is on display
    assert np.allclose(image.mean(-1), shown, atol=1e-5)
    assert "Finished" in studio.message.object and studio.message.alert_type == "success"
    assert "Iteration" in studio.status.object and "done" in studio.status.object
    assert not studio.start_button.disabled and studio.stop_button.disabled
    assert not studio.download.disabled
    png = studio._png_bytes().getvalue()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_stop_cancels_a_long_run_before_it_finishes():
    iters = 5000
    studio = _small_studio(sizes=(3, 5, 7), maps_per_scale=8, image_size=48, iters=iters)
    assert studio.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with studio._live.lock:
            n = len(studio._live.evals)
        if n >= 3:
            break
        time.sleep(0.05)
    assert n >= 3, "synthesis made no progress"
    t0 = time.monotonic()
    studio.stop()
    assert studio.join(timeout=30)
    join_seconds = time.monotonic() - t0
    print(f"stop -> thread joined in {join_seconds:.3f} s")
    result = studio.result
    assert result is not None and result.stopped
    assert sum(result.iterations) < iters
    assert len(studio.displayed_losses[1]) < iters
    assert "Stopped" in studio.message.object
    assert not studio.start_button.disabled


def test_invalid_settings_and_uploads_give_messages_not_tracebacks():
    studio = _small_studio()
    studio.sizes.value = []
    assert studio.start() is False
    assert studio.message.alert_type == "danger" and "filter size" in studio.message.object
    assert not studio.running

    options_before = list(studio.texture.options)
    studio.upload.filename = "not_an_image.png"
    studio.upload.value = b"this is plain text, not a PNG"
    text = studio.message.object
    assert studio.message.alert_type == "danger"
    assert "not_an_image.png" in text and "Traceback" not in text
    assert "reprlab_upload_" not in text  # the temporary path is not leaked
    assert list(studio.texture.options) == options_before

    studio.upload.filename = "empty.jpg"
    studio.upload.value = b""
    assert studio.message.alert_type == "danger" and "empty" in studio.message.object


def test_a_failing_synthesis_is_reported_and_the_controls_come_back(monkeypatch):
    import reprlab.textures.synthesis as synthesis

    def broken(*args, **kwargs):
        raise ValueError("target Gram matrix is all zeros")

    monkeypatch.setattr(synthesis, "synthesize", broken)
    studio = _small_studio()
    assert studio.start()
    assert studio.join(timeout=60)
    assert studio.message.alert_type == "danger"
    assert "Synthesis failed" in studio.message.object and "all zeros" in studio.message.object
    assert "failed" in studio.status.object
    assert not studio.start_button.disabled and studio.stop_button.disabled
    assert not studio.texture.disabled


def test_valid_upload_becomes_the_reference():
    studio = _small_studio()
    studio.upload.filename = "noise.png"
    studio.upload.value = _png_bytes(40)
    assert studio.texture.value == "upload: noise.png"
    assert studio.message.alert_type == "info"
    assert studio._reference_pipe.data.shape == (32, 32, 3)


def test_widget_script_ignores_unknown_args():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "widgets" / "texture_studio.py"
    spec = importlib.util.spec_from_file_location("texture_studio_widget", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_args(["--twin", "data/twin_default", "--size", "64", "--maps", "8"])
    assert args.size == 64 and args.maps == 8
