"""The shipped uniquely coloured ECON model meets chapter 4's figures on scenes it has never seen.

These re-measure the file with today's code (new scenes, new seeds), so a change to inference,
the metrics or generation that breaks the shipped model fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reprlab.scenes import CLASSES, make_scenes
from reprlab.scenes.generate import check_generation, experts_for
from reprlab.scenes.metrics import evaluate
from reprlab.scenes.train import load_pretrained, pretrained_path

pytestmark = pytest.mark.skipif(not pretrained_path("unique").is_file(), reason="no shipped econ_unique.pt")


@pytest.fixture(scope="module")
def shipped():
    model, meta, _ = load_pretrained("unique", fallback=False, device="cpu")
    return model.eval(), meta


def test_shipped_model_decomposes_and_specialises(shipped):
    model, meta = shipped
    scenes = make_scenes(200, model.config.image_size, "unique", random_state=np.random.default_rng([2026, 12]))
    ev = evaluate(model, scenes)
    assert ev["ari_fg"] >= 0.85, ev["ari_fg"]  # issue 7: foreground ARI >= 0.85
    spec = ev["specialisation"]
    for name in (*CLASSES, "background"):  # one dedicated expert per role, >= 90 % of its occurrences
        assert spec["top_expert"][name] == meta["roles"][name], (name, spec["top_expert"])
        assert spec["fraction"][name] >= 0.9, (name, spec["fraction"])


def test_shipped_model_renders_requested_scenes_from_the_prior(shipped):
    model, meta = shipped
    request = ["triangle", "square", "circle"]  # back to front
    with torch.no_grad():
        out = model.generate(experts_for(request, meta["roles"]), n=100, generator=torch.Generator().manual_seed(77))
    check = check_generation(out, request, "unique")
    # z ~ N(0, I), the paper's prior; a regression guard well below the measured 0.76 (colour 0.98)
    assert check["all_correct"] >= 0.35, check
    assert check["colour_accuracy"] >= 0.9, check
