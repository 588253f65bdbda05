"""GPyTorch peer check (same DSVI model, same parameters -> same ELBO) and the ``dgp`` CLI."""

from __future__ import annotations

import json

import pytest
import torch
from reprlab.cli import main
from reprlab.dgp.data import sin_exp_data
from reprlab.dgp.fit import make_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_gpytorch_and_reprlab_agree_for_identical_parameters():
    gpytorch = pytest.importorskip("gpytorch")
    from reprlab.dgp.peer import build_gpytorch_dgp, gpytorch_elbo, to_reprlab

    x, y = sin_exp_data(n=30, noise_std=0.05, seed=2)
    model, lik = build_gpytorch_dgp(("se", "periodic"), n_inducing=6, noise_std=0.05)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "variational_distribution" in name or "raw_" in name and "noise" not in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        # move the hyperparameters well away from their initial values (ℓ, period, variance)
        model.last.covar_module.base_kernel.lengthscale = 0.3
        model.last.covar_module.base_kernel.period_length = 1.7
        model.last.covar_module.outputscale = 2.5
        model.hidden[0].covar_module.base_kernel.lengthscale = 0.6
    ours = to_reprlab(model, lik)
    # identical priors and posteriors over u: the KL terms agree exactly
    with torch.no_grad():
        kl_gp = float(model.variational_strategy.kl_divergence())
        kl_ours = float(ours.kl()[0])
    assert abs(kl_ours - kl_gp) < 1e-6 * max(1.0, abs(kl_gp))
    torch.manual_seed(0)
    e_gp = gpytorch_elbo(model, lik, x, y, n_samples=3000)
    ev = ours.evaluate_elbo(x, y, n_samples=3000, batch=500, generator=torch.Generator().manual_seed(1))
    tol = 5 * float(ev["elbo_sem"][0]) + 0.005 * abs(e_gp)
    assert abs(float(ev["elbo"][0]) - e_gp) < tol, (float(ev["elbo"][0]), e_gp, tol)
    # a freshly built GPyTorch model starts where reprlab's DSVI starts
    fresh, fresh_lik = build_gpytorch_dgp(("se", "periodic"), n_inducing=6, noise_std=0.05)
    ref = make_model("dsvi", ("se", "periodic"), n_inducing=6, noise_std=0.05)
    with torch.no_grad():
        assert abs(float(to_reprlab(fresh, fresh_lik).kl()[0]) - float(ref.kl()[0])) < 1e-6
    assert gpytorch.__version__


def test_cli_table1_smoke_json(capsys):
    code = main(["dgp", "table1", "--trials", "2", "--scale", "smoke", "--workers", "1", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["scheme"] for r in report["rows"]] == ["dsvi", "joint", "ipail"]
    for r in report["rows"]:
        assert len(r["elbo_trials"]) == 2 and r["var_f1_mean"] > 0 and r["var_f2_mean"] > 0
    assert set(report["ordering"]) >= {"elbo_increasing", "var_f1_increasing"}
    assert report["paper"]["ipail"]["elbo"] == [36.31, 3.55]
    assert report["config"]["draws"] == "marginal"
    # the original code's estimator: inner layers drawn jointly over the points
    assert main(["dgp", "table1", "--trials", "1", "--scale", "smoke", "--workers", "1", "--schemes", "ipail",
                 "--draws", "joint", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["draws"] == "joint" and len(report["rows"][0]["elbo_trials"]) == 1


def test_cli_user_errors_exit_2(capsys, tmp_path):
    assert main(["dgp", "table1", "--trials", "0", "--scale", "smoke", "--json"]) == 2
    assert "trials" in json.loads(capsys.readouterr().out)["message"]
    assert main(["dgp", "table1", "--steps", "1,x,3", "--scale", "smoke", "--json"]) == 2
    capsys.readouterr()
    assert main(["dgp", "table1", "--lrs", "1e-3,0,1e-5", "--scale", "smoke", "--json"]) == 2
    assert "--lrs" in json.loads(capsys.readouterr().out)["message"]
    assert main(["dgp", "table1", "--schemes", "hmc", "--scale", "smoke", "--json"]) == 2
    capsys.readouterr()
    out = tmp_path / "fig3.json"
    assert main(["dgp", "fig3", "--json", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["min_d2var"][-1] > saved["min_d2var"][3]  # tends to zero from below
