"""ECON training at smoke scale: loss decreases, checkpoints round-trip and resume exactly, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from reprlab.scenes.econ import ECON
from reprlab.scenes.generate import (
    check_generation,
    evaluate_all,
    experts_for,
    fit_role_latents,
    latents_for,
)
from reprlab.scenes.metrics import evaluate
from reprlab.scenes.sprites import make_scenes
from reprlab.scenes.train import (
    load_model,
    make_configs,
    save_model,
    temperature_at,
    train,
    validation_scenes,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model_cfg, train_cfg = make_configs("smoke", "unique", max_steps=60, eval_every=20, threads=1)
    ckpt = tmp_path_factory.mktemp("econ") / "ckpt.pt"
    model, report = train(model_cfg, train_cfg, checkpoint=ckpt, progress=False)
    return model_cfg, train_cfg, ckpt, model, report


def test_smoke_training_decreases_validation_loss(trained):
    model_cfg, train_cfg, _, model, report = trained
    torch.manual_seed(train_cfg.seed)
    fresh = ECON(model_cfg)
    val = validation_scenes(train_cfg, model_cfg.image_size)
    before = evaluate(fresh, val)["loss"]
    after = evaluate(model, val)["loss"]
    assert report["steps"] == 60 and report["stop_reason"] == "max_steps"
    assert after < 0.8 * before, (before, after)
    assert len(report["history"]) == 3


def test_resume_is_exact(tmp_path):
    model_cfg, cfg_full = make_configs("smoke", "random", max_steps=6, eval_every=3, threads=1)
    full, _ = train(model_cfg, cfg_full, checkpoint=tmp_path / "a.pt", progress=False)
    _, cfg_part = make_configs("smoke", "random", max_steps=3, eval_every=3, threads=1)
    train(model_cfg, cfg_part, checkpoint=tmp_path / "b.pt", progress=False)
    resumed, rep = train(model_cfg, cfg_full, checkpoint=tmp_path / "b.pt", progress=False)
    assert rep["steps"] == 6
    a = torch.load(tmp_path / "a.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="trained with"):
        _, other = make_configs("smoke", "random", max_steps=6, eval_every=3, lr=1e-3)
        train(model_cfg, other, checkpoint=tmp_path / "b.pt", progress=False)


def test_model_file_round_trip(trained, tmp_path):
    model_cfg, train_cfg, _, model, _ = trained
    path = save_model(tmp_path / "m.pt", model, train_cfg, roles={"background": 0}, metrics={"x": 1.0})
    loaded, meta = load_model(path)
    x = torch.from_numpy(validation_scenes(train_cfg, model_cfg.image_size).images[:4])
    with torch.no_grad():
        torch.testing.assert_close(loaded.decompose(x).loss, model.decompose(x).loss)
    assert meta["roles"] == {"background": 0} and meta["config"] == model_cfg.to_dict()
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")
    # a file written before a setting existed loads with the behaviour it was trained with
    newer = ECON(model_cfg, last_step_region_kl=False)
    save_model(tmp_path / "new.pt", newer, train_cfg)
    old = torch.load(tmp_path / "new.pt", weights_only=True)
    old["config"] = {k: v for k, v in old["config"].items() if k not in ("last_step_region_kl", "competition_norm")}
    torch.save(old, tmp_path / "old.pt")
    assert not load_model(tmp_path / "new.pt")[0].config.last_step_region_kl
    legacy = load_model(tmp_path / "old.pt")[0].config
    assert legacy.last_step_region_kl and legacy.competition_norm == "sum"
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        load_model(tmp_path / "junk.pt")


def test_generation_check_scores_ground_truth_layers():
    from reprlab.scenes.sprites import make_scenes

    sc = make_scenes(10, 32, "unique", random_state=5)
    app, shp = sc.layers()
    order = [int(c) for c in sc.classes[0]]
    keep = [i for i in range(10) if list(sc.classes[i]) == order]
    out = dict(image=torch.from_numpy(sc.images[keep]), layers=torch.from_numpy(app[keep]),
               shapes=torch.from_numpy(shp[keep]))
    names = [["circle", "square", "triangle"][c] for c in order]
    rep = check_generation(out, names, "unique")
    assert rep["shape_accuracy"] == 1.0 and rep["colour_accuracy"] == 1.0 and rep["all_correct"] == 1.0
    wrong = check_generation(out, names[::-1], "unique")
    assert wrong["all_correct"] < 1.0
    square = 1 + names.index("square")  # a square layer covering the canvas fills its box, but is no square
    canvas = dict(out, shapes=out["shapes"].clone().index_fill_(1, torch.tensor([square]), 1.0))
    assert check_generation(canvas, names, "unique")["shape_accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="roles"):
        experts_for(["circle"], {})
    with pytest.raises(ValueError, match="unknown object"):
        experts_for(["hexagon"], {"background": 0, "circle": 1})


def test_evaluate_all_reports_id_and_ood(trained):
    model_cfg, _, _, model, _ = trained
    res = evaluate_all(model, "unique", n=6, generation_samples=4)
    for name in ("id", "ood_4to5", "ood_0to5"):
        assert 0 <= res[name]["mse"] < 1 and np.asarray(res[name]["specialisation"]["table"]).shape == (4, 3 + 1)
    assert res["ood_4to5"]["n_steps"] == 6
    for name in ("id", "ood_4to5"):  # class x step table: every visible object is credited to one step
        steps = np.asarray(res[name]["step_table"])
        assert steps.shape == (4, res[name]["n_steps"])
        assert steps.sum() == np.asarray(res[name]["specialisation"]["table"]).sum()
        assert 0 <= res[name]["depth_order"] <= 1
    assert set(res["role_latents"]) <= {"circle", "square", "triangle", "background"}
    for fit in res["role_latents"].values():
        assert len(fit["loc"]) == model_cfg.latent_dim and min(fit["scale"]) > 0 and fit["n"] >= 5


def test_fitted_latents_drive_generation(trained):
    model_cfg, _, _, model, _ = trained
    scenes = make_scenes(30, model_cfg.image_size, "unique", random_state=4)
    fits = fit_role_latents(model, scenes, {"background": 0, "circle": 1, "square": 2, "triangle": 3}, min_count=1)
    for name, fit in fits.items():  # the Gaussian is fitted to that expert's posterior means
        assert fit["expert"] == {"background": 0, "circle": 1, "square": 2, "triangle": 3}[name]
        chol = np.array(fit["chol"])  # its covariance's Cholesky factor, whose diagonal part is the scale
        assert chol.shape == (model_cfg.latent_dim,) * 2 and np.allclose(chol, np.tril(chol))
        np.testing.assert_allclose(np.sqrt(np.diag(chol @ chol.T)), np.array(fit["scale"]) - 1e-3, atol=1e-3)
    # zero scale: every sample decodes exactly loc with the requested expert
    loc = torch.randn(model_cfg.latent_dim)
    lat = [(loc, torch.zeros(model_cfg.latent_dim))] * 2
    out = model.generate([0, 1], n=3, generator=torch.Generator().manual_seed(0), latents=lat)
    rgb, logit = model.experts.decoder(loc.expand(3, 1, -1), torch.ones(3, dtype=torch.long))
    torch.testing.assert_close(out["layers"][:, 1], rgb[:, 0])
    torch.testing.assert_close(out["shapes"][:, 1], torch.sigmoid(logit[:, 0]))
    full = model.generate([0, 1], n=3, generator=torch.Generator().manual_seed(0),
                          latents=[(loc, torch.zeros(model_cfg.latent_dim, model_cfg.latent_dim))] * 2)
    torch.testing.assert_close(full["layers"][:, 1], rgb[:, 0])  # a zero Cholesky factor: loc too
    with pytest.raises(ValueError, match="one \\(loc, scale\\) pair"):
        model.generate([0, 1], latents=lat[:1])
    with pytest.raises(ValueError, match="no fitted latent"):
        latents_for(["circle"], {"background": fits.get("background", {})})


def _cli(capsys, *args: str) -> tuple[int, str]:
    from reprlab.cli import main

    capsys.readouterr()
    code = main(["scenes", *args])
    return code, capsys.readouterr().out


def test_cli_export_evaluate_sample_and_errors(trained, tmp_path, capsys):
    _, _, ckpt, _, _ = trained
    out = tmp_path / "model.pt"
    code, text = _cli(capsys, "export", "--checkpoint", str(ckpt), "--out", str(out), "--n-test", "6", "--json")
    assert code == 0, text
    rep = json.loads(text)
    assert rep["bytes"] > 0 and set(rep["metrics"]) >= {"id", "ood_4to5"}
    code, text = _cli(capsys, "evaluate", "--checkpoint", str(out), "--n", "5", "--json")
    assert code == 0, text
    assert "ari_fg" in json.loads(text)["id"]
    refined = tmp_path / "refined.pt"
    code, text = _cli(capsys, "refine", "--checkpoint", str(out), "--out", str(refined), "--steps", "3",
                      "--n-scenes", "4", "--n-test", "6", "--beta", "2.5", "--lr", "1e-4", "--quiet", "--json")
    assert code == 0, text
    assert json.loads(text)["refinement"]["steps"] == 3
    (before, _), (after, meta) = load_model(out), load_model(refined)
    assert meta["provenance"]["source"]["sha256"] and meta["provenance"]["refinement"]["n_rows"] == 4 * 4
    assert after.config.beta == 2.5 and meta["provenance"]["refinement"]["lr"] == 1e-4  # the new beta is the model's
    for k, v in before.experts.attention.state_dict().items():  # refinement leaves the attention nets alone
        assert torch.equal(v, after.experts.attention.state_dict()[k]), k
    code, text = _cli(capsys, "sample", "--checkpoint", str(out), "--objects", "0,1,2", "--experts", "--n", "2",
                      "--out", str(tmp_path / "s.png"), "--json")
    assert code == 0, text
    assert (tmp_path / "s.png").stat().st_size > 0
    code, text = _cli(capsys, "evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--json")
    assert code == 2 and "FileNotFoundError" in text
    code, text = _cli(capsys, "sample", "--checkpoint", str(out), "--objects", "hexagon", "--json")
    assert code == 2
    code, text = _cli(capsys, "train", "--set", "bogus=1", "--json")
    assert code == 2 and "unknown setting" in text


def test_cli_settings_parse_booleans_and_configs_reject_strings():
    from reprlab.scenes.cli import _overrides
    from reprlab.scenes.econ import ECONConfig
    from reprlab.scenes.train import TrainConfig

    got = _overrides(["last_step_region_kl=False", "expected_loss=true", "beta=9.54", "attention_channels=[8,16]",
                      "competition_norm=sum", "max_steps=None"])
    assert got == dict(last_step_region_kl=False, expected_loss=True, beta=9.54, attention_channels=(8, 16),
                       competition_norm="sum", max_steps=None)
    with pytest.raises(ValueError, match="last_step_region_kl must be True or False, got 'False'"):
        ECONConfig(last_step_region_kl="False")
    with pytest.raises(ValueError, match="expected_loss must be True or False"):
        TrainConfig(expected_loss="no")


def test_cli_help_lists_verbs():
    res = subprocess.run([sys.executable, "-m", "reprlab", "scenes", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0
    for verb in ("train", "export", "refine", "evaluate", "sample", "search"):
        assert verb in res.stdout


def test_random_search_samples_c4_ranges(tmp_path):
    from reprlab.scenes.generate import C4_RANGES, random_search

    rep = random_search("unique", scale="smoke", n_trials=2, steps=4, out=tmp_path / "s.json", threads=1)
    assert len(rep["trials"]) == 2 and (tmp_path / "s.json").is_file()
    for t in rep["trials"]:
        for key, (lo, hi) in C4_RANGES["unique"].items():
            assert lo <= t["params"][key] <= hi
    assert rep["best"]["best_val"] == min(t["best_val"] for t in rep["trials"])
    with pytest.raises(ValueError, match="n_trials"):
        random_search("unique", scale="smoke", n_trials=0)


def test_competition_temperature_holds_then_anneals_geometrically():
    model_cfg, cfg = make_configs("default", "unique")
    assert cfg.temperature_start == 1.0 and model_cfg.temperature == pytest.approx(0.1)
    start, length = cfg.anneal_start, cfg.anneal_steps
    assert temperature_at(0, model_cfg, cfg) == temperature_at(start, model_cfg, cfg) == 1.0
    assert temperature_at(start + length // 2, model_cfg, cfg) == pytest.approx(0.1**0.5)  # geometric midpoint
    assert temperature_at(start + length, model_cfg, cfg) == temperature_at(10**6, model_cfg, cfg) == pytest.approx(0.1)
    smoke_model, smoke = make_configs("smoke", "unique")  # no schedule: the model's τ throughout
    assert temperature_at(5, smoke_model, smoke) == smoke_model.temperature
    with pytest.raises(ValueError, match="anneal_start"):
        make_configs("default", "unique", anneal_start=-1)


def test_single_object_curriculum_shows_one_object_then_three(monkeypatch):
    from reprlab.scenes.sprites import CLASSES, UNIQUE_COLOURS
    from reprlab.scenes.train import training_batch

    model_cfg, cfg = make_configs("smoke", "unique", single_object_steps=3, max_steps=5)
    colours = np.array([UNIQUE_COLOURS[c] for c in CLASSES]) / 255.0

    def classes_present(images: np.ndarray) -> np.ndarray:  # (B,) number of object colours drawn
        hit = np.abs(images[:, None] - colours[None, :, :, None, None]).max(2) < 1e-3  # (B, 3, H, W)
        return (hit.sum((2, 3)) >= 1).sum(1)

    assert (classes_present(training_batch(cfg, 16, 2)) == 1).all()
    assert (classes_present(training_batch(cfg, 16, 3)) >= 2).all()  # three drawn; occlusion may hide one
    # the curriculum's iterations decompose into object + background (2 steps), later ones into 4
    seen = []
    original = ECON.decompose

    def spy(self, x, n_steps=None, **kw):
        seen.append(n_steps)
        return original(self, x, n_steps=n_steps, **kw)

    monkeypatch.setattr(ECON, "decompose", spy)
    _, report = train(model_cfg, cfg, progress=False, callback=lambda *a: False)
    assert report["steps"] == 5
    assert seen[:4] == [2, 2, 2, None]  # validation runs only after the 10th iteration
    with pytest.raises(ValueError, match="single_object_steps"):
        make_configs("smoke", "unique", single_object_steps=-1)
