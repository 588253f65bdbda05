"""`python -m reprlab textures ...`: synthesize and bench with --json, clear errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from reprlab.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cli_synthesize_json(tmp_path, capsys):
    out = tmp_path / "out.png"
    rc = main(["textures", "synthesize", "brick", "--model", "random-multiscale", "--size", "24",
               "--iters", "3", "--seed", "1", "--out", str(out), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_maps"] == 1024 and report["size"] == [24, 24] and report["channels"] == 1
    assert report["iterations"] <= 3 and report["final_loss"] > 0
    img = Image.open(out)
    assert img.size == (24, 24)


def test_cli_errors_exit_2(tmp_path, capsys):
    rc = main(["textures", "synthesize", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o.png"), "--json"])
    assert rc == 2
    err = json.loads(capsys.readouterr().out)
    assert err["error"] == "FileNotFoundError"
    rc = main(["textures", "synthesize", "brick", "--model", "nope", "--size", "24", "--out", str(tmp_path / "o.png")])
    assert rc == 2


def test_cli_bench_json(capsys):
    rc = main(["textures", "bench", "--size", "16", "--repeats", "1", "--no-scan", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_maps"] == 1024
    for path in ("baseline", "direct", "fast"):
        assert report[path]["seconds_per_iteration"] > 0
    for path in ("direct", "fast"):  # all three paths compute the same loss and gradient
        assert report[path]["loss_rel_diff_vs_baseline"] < 1e-4 and report[path]["grad_rel_err_vs_baseline"] < 1e-3
    assert set(report["breakdown"]["fast"]) >= {"features", "gram"}
