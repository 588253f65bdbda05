"""Foundation: device choice, scale presets, atomic artifacts, safe checkpoints, CLI."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reprlab
import torch
from reprlab import io as rio
from reprlab.cli import main
from reprlab.scales import current_scale, pick


def test_device_defaults_to_available_and_rejects_missing_cuda(monkeypatch):
    monkeypatch.delenv("REPRLAB_DEVICE", raising=False)
    dev = reprlab.device()
    assert dev.type == ("cuda" if torch.cuda.is_available() else dev.type)
    assert reprlab.device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            reprlab.device("cuda")
    monkeypatch.setenv("REPRLAB_DEVICE", "cpu")
    assert reprlab.device() == torch.device("cpu")


def test_seed_everything_is_deterministic_and_validates():
    g1 = reprlab.seed_everything(3)
    a = torch.rand(4, generator=g1)
    g2 = reprlab.seed_everything(3)
    assert torch.equal(a, torch.rand(4, generator=g2))
    with pytest.raises(ValueError, match="non-negative int"):
        reprlab.seed_everything(-1)


def test_scales(monkeypatch):
    presets = {"smoke": {"n": 1}, "default": {"n": 10}, "paper": {"n": 100}}
    monkeypatch.delenv("REPRLAB_SCALE", raising=False)
    assert current_scale() == "default"
    monkeypatch.setenv("REPRLAB_SCALE", "SMOKE")
    assert pick(presets) == {"n": 1}
    assert pick(presets, "paper", extra=2) == {"n": 100, "extra": 2}
    assert presets["paper"] == {"n": 100}, "pick must not mutate the preset table"
    monkeypatch.setenv("REPRLAB_SCALE", "huge")
    with pytest.raises(ValueError, match=r"REPRLAB_SCALE.*'huge'"):
        current_scale()
    with pytest.raises(ValueError, match="missing"):
        pick({"smoke": 1}, "smoke")


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "a.json"
    rio.atomic_write_json(target, {"x": np.float32(1.5), "arr": np.arange(3)})
    assert json.loads(target.read_text()) == {"x": 1.5, "arr": [0, 1, 2]}
    with pytest.raises(RuntimeError):
        with rio.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert json.loads(target.read_text())["x"] == 1.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"], "temp file left behind"


def test_bundle_round_trip_and_verification(tmp_path: Path):
    arrays = {"emb": np.random.default_rng(0).normal(size=(5, 2)), "sub/labels": np.arange(5)}
    path = rio.write_bundle(tmp_path / "b", "test-kind", arrays, {"report": {"r": 0.5}}, {"seed": 1})
    bundle = rio.read_bundle(path, kind="test-kind", verify=True)
    np.testing.assert_array_equal(bundle.array("emb"), arrays["emb"])
    np.testing.assert_array_equal(bundle.array("sub/labels"), np.arange(5))
    assert bundle.document("report") == {"r": 0.5}
    assert bundle.config == {"seed": 1}
    assert bundle.manifest["reprlab_version"] == reprlab.__version__
    with pytest.raises(KeyError, match="no array 'nope'"):
        bundle.array("nope")
    with pytest.raises(ValueError, match="expected a bundle of kind 'other'"):
        rio.read_bundle(path, kind="other")
    np.save(path / "emb.npy", np.zeros((5, 2)))
    with pytest.raises(ValueError, match="SHA-256"):
        rio.read_bundle(path, verify=True)
    with pytest.raises(FileNotFoundError, match="bundle folder"):
        rio.read_bundle(tmp_path / "missing")


def test_bundle_failure_keeps_previous(tmp_path: Path):
    path = rio.write_bundle(tmp_path / "b", "k", {"a": np.ones(2)})
    with pytest.raises(ValueError, match="object array"):
        rio.write_bundle(path, "k", {"a": np.array([{"x": 1}], dtype=object)})
    np.testing.assert_array_equal(rio.read_bundle(path).array("a"), np.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_checkpoints_load_weights_only(tmp_path: Path):
    state = {"w": torch.randn(3), "step": 7, "cfg": {"lr": 0.1}}
    rio.save_checkpoint(tmp_path / "c.pt", state)
    loaded = rio.load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(loaded["w"], state["w"]) and loaded["step"] == 7

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    with pytest.raises(ValueError, match="weights_only"):
        rio.load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError):
        rio.load_checkpoint(tmp_path / "none.pt")


def test_cli_help_and_errors(capsys):
    assert main([]) == 2
    assert "CHAPTER" in capsys.readouterr().out
    out = subprocess.run(
        [sys.executable, "-m", "reprlab", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("reprlab ")


def test_torch_threads_sets_and_restores_the_count_also_on_error():
    from reprlab import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="positive int"):
        with torch_threads(0):
            pass
