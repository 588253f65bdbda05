"""Chapter 5 experiments: Table 1 / Fig. 5, the ±x toy of Fig. 2, Fig. 3, the warping
application of §6 (Fig. 6) and the GPyTorch peer check. Each returns a JSON-able report
(fitted models, where returned, under keys that start with an underscore).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import torch

from reprlab.dgp.data import heartbeat_signal, identity_data, sign_compositions, sin_exp_data
from reprlab.dgp.fit import SCHEMES, fit_dgp, make_model, single_thread
from reprlab.dgp.uncertain_inputs import min_second_derivative, predictive_variance_curve
from reprlab.dgp.warping import WarpedDGP
from reprlab.scales import current_scale, pick

__all__ = [
    "PAPER_TABLE1",
    "TABLE1_PRESETS",
    "fig3",
    "fig5_samples",
    "gpytorch_peer_check",
    "table1",
    "toy_compositions",
    "warping",
]

# Paper Table 1: mean ± sd over 10 trials
PAPER_TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "dsvi": {"elbo": (13.43, 8.03), "var_f1": (1.99e-6, 1.76e-7), "var_f2": (1.11e-4, 1.35e-5)},
    "joint": {"elbo": (23.15, 6.80), "var_f1": (4.23e-5, 3.17e-6), "var_f2": (3.33e-4, 2.12e-5)},
    "ipail": {"elbo": (36.31, 3.55), "var_f1": (2.22e-3, 2.73e-4), "var_f2": (4.98e-2, 7.78e-3)},
}
LABELS = {"dsvi": "DSVI", "joint": "Jointly Gaussian", "joint-chain": "Jointly Gaussian (chain, analytic)",
          "ipail": "Inducing points as inducing inputs"}

# Fig. 5 / Table 1 setup: 50 points on [-1, 1], y = sin(7eˣ) + N(0, 0.01²), M = 10, S = 10,
# 2 layers (SE then periodic), 30,000 Adam steps in three stages.
#
# Learning rate. The paper text says "Adam from 1e-3 divided by 10 twice" (1e-3, 1e-4, 1e-5); the
# original code's loop feeds the initial rate to every stage (the divided rate is computed but never
# stored), so the published numbers come from 3 × 10,001 steps at a constant 1e-3. The fits are
# still improving at 30,000 steps of 1e-3 (DSVI's training ELBO passes 0 only after ~16,000), so the
# text's rates with equal stages (10,000 each) stop them 30-50 nats lower; and at a constant 1e-3 the
# last iterate is a noisy point whose ELBO moves by 4-12 nats (sd) from one 100-step snapshot to the
# next. The default follows the text's rates with the original's 30,000 steps, decaying at the end:
# 28,000 steps at 1e-3, then 1,000 at 1e-4 and 1,000 at 1e-5 (``--steps 10000,10000,10000 --lrs
# 1e-3,1e-3,1e-3 --clip 0`` runs the original code's optimisation).
#
# Gradient clipping (``clip``, on by default; the original code has none). The Monte-Carlo gradients
# of the inducing-locations scheme are heavy-tailed (draws of f^z_1 that make K_2(f^z_1, f^z_1)
# near-singular): without clipping 2 of 10 trials are thrown into a worse mode in the first ~4,000
# steps (KL 163-194 instead of 84-99, ELBO -353 and -215). ``clip`` clips each replica's gradient
# norm at ``clip`` × its running typical norm (fit.ReplicaGradClipper). It changes the steps, not the
# objective. Measured 2026-12-04 (``bench/results/dgp.json`` and the ch5 notebook): with both changes
# the ELBO column is ordered as in the paper; with the schedule alone only its medians are.
TABLE1_PRESETS = {
    "smoke": dict(trials=2, steps=(40, 20, 10), lrs=(1e-2, 1e-3, 1e-4), eval_samples=200, var_samples=500, workers=1,
                  clip=10.0),
    # ~320-370 CPU-s per scheme (10 trials side by side), one single-threaded process per scheme
    "default": dict(trials=10, steps=(28000, 1000, 1000), lrs=(1e-3, 1e-4, 1e-5), eval_samples=1000,
                    var_samples=2000, workers=3, clip=10.0),
}
# the paper's scale fits exactly as the default and only evaluates with more Monte-Carlo draws
TABLE1_PRESETS["paper"] = {**TABLE1_PRESETS["default"], "eval_samples": 5000, "var_samples": 10000}
COMMON = dict(n_points=50, noise_std=0.01, n_inducing=10, n_samples=10, kernels=("se", "periodic"), draws="marginal")


def _fit_scheme(scheme: str, cfg: dict, seed: int, data_seed: int, progress: bool = False) -> dict:
    """Fit ``cfg['trials']`` replicas of one scheme; returns metrics and the state dict."""
    with single_thread():
        x, y = sin_exp_data(cfg["n_points"], cfg["noise_std"], data_seed)
        model = make_model(scheme, tuple(cfg["kernels"]), cfg["n_inducing"], cfg["noise_std"],
                           random_state=seed, n_replicas=cfg["trials"], draws=cfg["draws"])
        t0, c0 = time.perf_counter(), time.process_time()
        trace = fit_dgp(model, x, y, tuple(cfg["steps"]), tuple(cfg["lrs"]), cfg["n_samples"], seed,
                        progress=progress, log_every=100, clip=cfg.get("clip"))
        gen = torch.Generator().manual_seed(seed + 10_000)
        ev = model.evaluate_elbo(x, y, cfg["eval_samples"], generator=gen)
        var = model.variance_at(0.0, cfg["var_samples"], gen)
        return {
            "scheme": scheme,
            "elbo": ev["elbo"].tolist(),
            "elbo_sem": ev["elbo_sem"].tolist(),
            "kl": ev["kl"].tolist(),
            "var_f1": var[:, 0].tolist(),
            "var_f2": var[:, 1].tolist(),
            "trace": trace,
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
            "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        }


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def table1(scale: str | None = None, schemes: Sequence[str] = ("dsvi", "joint", "ipail"), seed: int = 0,
           data_seed: int = 1, keep_models: bool = False, progress: bool = False,
           callback: Callable[[str, dict], None] | None = None, **overrides) -> dict:
    """Table 1: ELBO and ``Var[f_ℓ(0)]`` over ``trials`` fits of each scheme, beside the paper's.

    Trials of one scheme are trained side by side as replicas; schemes run in ``workers``
    processes. ``overrides`` change the preset (``trials``, ``steps``, ``lrs``, ``workers``, ...).
    ``callback(scheme, row)`` is called as each scheme finishes.
    """
    cfg = {**COMMON, **pick(TABLE1_PRESETS, scale, **overrides)}
    for s in schemes:
        if s not in SCHEMES:
            raise ValueError(f"unknown scheme {s!r}; choose from {sorted(SCHEMES)}")
    if int(cfg["trials"]) < 1:
        raise ValueError(f"trials must be >= 1, got {cfg['trials']!r}")
    if int(cfg["workers"]) < 1:
        raise ValueError(f"workers must be >= 1, got {cfg['workers']!r}")
    # One single-threaded process per scheme even on fewer cores: on 2 cores three processes finish in
    # about (total CPU)/2, whereas two workers run two of the schemes one after the other.
    workers = min(int(cfg["workers"]), len(schemes))
    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    if workers == 1:
        for s in schemes:
            results[s] = _fit_scheme(s, cfg, seed, data_seed, progress)
            if callback is not None:
                callback(s, _row(results[s]))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {s: pool.submit(_fit_scheme, s, cfg, seed, data_seed, False) for s in schemes}
            for s in schemes:
                results[s] = futures[s].result()
                if callback is not None:
                    callback(s, _row(results[s]))
    rows = [_row(results[s]) for s in schemes]
    report = {
        "scale": current_scale(scale),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "rows": rows,
        "paper": {s: {k: list(v) for k, v in PAPER_TABLE1[s].items()} for s in schemes if s in PAPER_TABLE1},
        "ordering": _ordering(rows),
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": sum(r["cpu_seconds"] for r in rows),
    }
    if keep_models:
        models = {}
        for s in schemes:
            m = make_model(s, tuple(cfg["kernels"]), cfg["n_inducing"], cfg["noise_std"], random_state=seed,
                           n_replicas=cfg["trials"], draws=cfg["draws"])
            m.load_state_dict(results[s]["state"])
            models[s] = m
        report["_models"] = models
        report["_data"] = sin_exp_data(cfg["n_points"], cfg["noise_std"], data_seed)
    return report


def _row(res: dict) -> dict:
    elbo, var1, var2 = _mean_sd(res["elbo"]), _mean_sd(res["var_f1"]), _mean_sd(res["var_f2"])
    return {
        "scheme": res["scheme"], "label": LABELS.get(res["scheme"], res["scheme"]),
        "elbo_mean": elbo[0], "elbo_sd": elbo[1], "var_f1_mean": var1[0], "var_f1_sd": var1[1],
        "var_f2_mean": var2[0], "var_f2_sd": var2[1],
        "elbo_median": float(np.median(res["elbo"])), "elbo_max": float(np.max(res["elbo"])),
        "var_f1_median": float(np.median(res["var_f1"])), "var_f2_median": float(np.median(res["var_f2"])),
        "elbo_trials": res["elbo"], "elbo_sem_trials": res["elbo_sem"], "kl_trials": res["kl"],
        "var_f1_trials": res["var_f1"], "var_f2_trials": res["var_f2"],
        "final_loss": res["trace"][-1] if res["trace"] else float("nan"),
        "seconds": res["seconds"], "cpu_seconds": res["cpu_seconds"],
    }


def _ordering(rows: list[dict]) -> dict:
    """Is the paper's ordering DSVI < jointly Gaussian < inducing locations reproduced?"""
    by = {r["scheme"]: r for r in rows}
    order = [s for s in ("dsvi", "joint", "ipail") if s in by]
    out = {"schemes": order}
    for key in ("elbo_mean", "var_f1_mean", "var_f2_mean", "elbo_median", "var_f1_median", "var_f2_median"):
        vals = [by[s][key] for s in order]
        name = key.replace("_mean", "_increasing") if key.endswith("_mean") else key.replace("_median", "_median_increasing")
        out[name] = bool(all(a < b for a, b in zip(vals, vals[1:])))
    return out


def format_table1(report: dict) -> str:
    """Table 1 as text: ours beside the paper's."""
    lines = [f"{'scheme':<36} {'ELBO (ours)':>18} {'median':>8} {'ELBO (paper)':>16} {'Var f1(0) ours':>15} "
             f"{'paper':>9} {'Var f2(0) ours':>15} {'paper':>9}"]
    for r in report["rows"]:
        p = PAPER_TABLE1.get(r["scheme"], {})
        pe = p.get("elbo", (math.nan, math.nan))
        lines.append(
            f"{r['label']:<36} {r['elbo_mean']:>9.2f} ± {r['elbo_sd']:<6.2f} {r['elbo_median']:>8.2f} "
            f"{pe[0]:>7.2f} ± {pe[1]:<5.2f} "
            f"{r['var_f1_mean']:>15.2e} {p.get('var_f1', (math.nan,))[0]:>9.2e} "
            f"{r['var_f2_mean']:>15.2e} {p.get('var_f2', (math.nan,))[0]:>9.2e}")
    return "\n".join(lines)


def fig5_samples(models: dict, grid=None, n_samples: int = 25, replica: int | str = "best", x=None, y=None,
                 seed: int = 0) -> dict:
    """Fig. 5: whole-function samples of ``f_1``, ``f_2`` and ``f_2 ∘ f_1`` for each fitted scheme.

    ``replica='best'`` picks the trial with the highest ELBO (needs ``x``, ``y``).
    """
    g = torch.linspace(-1.0, 1.0, 100, dtype=torch.float64) if grid is None else torch.as_tensor(grid, dtype=torch.float64)
    out = {"grid": g.numpy()}
    with single_thread():
        for scheme, model in models.items():
            gen = torch.Generator().manual_seed(seed)
            r = replica
            if r == "best":
                if x is None or y is None:
                    raise ValueError("replica='best' needs the training data x, y")
                r = int(model.evaluate_elbo(x, y, 200, generator=gen)["elbo"].argmax())
            s = model.sample_functions(g, n_samples, gen)
            out[scheme] = {"replica": int(r), "f1": s["layers"][0][r].numpy(), "f2": s["layers"][1][r].numpy(),
                           "composition": s["hidden"][-1][r].numpy()}
    return out


TOY_PRESETS = {
    "smoke": dict(steps=(60, 20), lrs=(1e-2, 1e-3), n_points=20, n_inducing=5, samples=50, fit_tol=0.1),
    "default": dict(steps=(4000, 1000), lrs=(3e-3, 3e-4), n_points=30, n_inducing=8, samples=200, fit_tol=0.1),
    "paper": dict(steps=(10000, 5000), lrs=(3e-3, 3e-4), n_points=30, n_inducing=10, samples=200, fit_tol=0.1),
}


def toy_compositions(scale: str | None = None, schemes: Sequence[str] = ("dsvi", "joint", "ipail"),
                     n_layers: int = 3, seed: int = 0, inner_mean: str = "zero", **overrides) -> dict:
    """Fig. 2: a 3-layer SE DGP on ``y = x``, whose layers could each be ``x`` or ``-x``.

    With zero-mean layers (default) the prior is symmetric under ``f_ℓ → -f_ℓ``, so all four
    sign compositions are equally probable a priori; ``inner_mean='identity'`` favours ``+x``.
    For each scheme, whole-function samples of every layer on a grid; per sample, the sign of
    each layer's slope at 0 labels the composition (``sign_compositions`` lists the 4 valid
    ones). Reports the spread of the intermediate layers and the valid compositions realised by
    samples whose output fits the data (RMSE < ``fit_tol``).
    """
    cfg = pick(TOY_PRESETS, scale, **overrides)
    x, y = identity_data(cfg["n_points"], 0.01, seed)
    grid = torch.linspace(-1, 1, 41, dtype=torch.float64)
    report = {"scale": current_scale(scale), "valid_compositions": [list(s) for s in sign_compositions(n_layers)],
              "schemes": {}, "_samples": {}}
    with single_thread():
        for scheme in schemes:
            model = make_model(scheme, ("se",) * n_layers, cfg["n_inducing"], 0.01, random_state=seed,
                               inner_mean=inner_mean)
            fit_dgp(model, x, y, cfg["steps"], cfg["lrs"], 10, seed)
            gen = torch.Generator().manual_seed(seed + 1)
            s = model.sample_functions(grid, cfg["samples"], gen)
            layers = [f[0] for f in s["layers"]]
            mid = grid.shape[0] // 2
            slopes = torch.stack([(f[:, mid + 1] - f[:, mid - 1]) for f in layers], dim=-1)
            signs = [tuple(int(v) for v in torch.sign(row).tolist()) for row in slopes]
            # a sample realises a composition if its output fits the data (RMSE below `fit_tol`)
            rmse = (s["hidden"][-1][0] - grid).pow(2).mean(-1).sqrt()
            counts: dict[str, int] = {}
            for sg, err in zip(signs, rmse.tolist()):
                if err < cfg["fit_tol"] and math.prod(sg) == 1:
                    counts[str(sg)] = counts.get(str(sg), 0) + 1
            report["schemes"][scheme] = {
                "elbo": float(model.evaluate_elbo(x, y, 500, generator=gen)["elbo"][0]),
                "mean_var_hidden": [float(h[0].var(0).mean()) for h in s["hidden"][:-1]],
                "mean_var_output": float(s["hidden"][-1][0].var(0).mean()),
                "fraction_fitting": float((rmse < cfg["fit_tol"]).double().mean()),
                "compositions": counts,
                "n_compositions": len(counts),
            }
            report["_samples"][scheme] = {"grid": grid.numpy(), "layers": [f.numpy() for f in layers],
                                          "hidden": [h[0].numpy() for h in s["hidden"]]}
    report["_data"] = (x.numpy(), y.numpy())
    return report


def fig3(n_inducing: Sequence[int] = tuple(range(1, 31)), curves: Sequence[int] = (3, 5, 10, 20),
         lengthscale: float = 1.0) -> dict:
    """Fig. 3: ``σ²`` and ``(σ²)''`` over Δ for several M (A) and ``min (σ²)''`` against M (B)."""
    a = {int(m): predictive_variance_curve(m, lengthscale) for m in curves}
    b = min_second_derivative(n_inducing, lengthscale)
    return {"curves": {m: {k: v.tolist() for k, v in c.items()} for m, c in a.items()},
            "M": b["M"].tolist(), "min_d2var": b["min_d2var"].tolist()}


WARP_PRESETS = {
    "smoke": dict(n=60, steps=(60, 20), lrs=(1e-2, 1e-3), n_inducing_f=20, samples=50, eval_samples=100),
    "default": dict(n=100, steps=(4000, 1000), lrs=(3e-3, 3e-4), n_inducing_f=40, samples=200, eval_samples=1000),
    "paper": dict(n=100, steps=(10000, 5000), lrs=(3e-3, 3e-4), n_inducing_f=40, samples=200, eval_samples=1000),
}


def warping(scale: str | None = None, seed: int = 0, **overrides) -> dict:
    """§6 / Fig. 6: mean-field vs coupled posterior of ``y = f(g(x))`` on a heartbeat-like signal."""
    cfg = pick(WARP_PRESETS, scale, **overrides)
    data = heartbeat_signal(n=cfg["n"], seed=seed)
    x, y = data["x"], data["y"]
    grid = torch.linspace(-1, 1, 120, dtype=torch.float64)
    report = {"scale": current_scale(scale), "models": {}, "_samples": {}, "_data": {k: v.numpy() for k, v in data.items()}}
    with single_thread():
        for name, coupled in (("mean-field", False), ("coupled", True)):
            model = WarpedDGP(coupled=coupled, n_inducing_f=cfg["n_inducing_f"])
            t0 = time.perf_counter()
            trace = fit_dgp(model, x, y, cfg["steps"], cfg["lrs"], 10, seed, log_every=100)
            gen = torch.Generator().manual_seed(seed + 1)
            ev = model.evaluate_elbo(x, y, cfg["eval_samples"], generator=gen)
            s = model.sample_functions(grid, cfg["samples"], gen)
            report["models"][name] = {
                "elbo": float(ev["elbo"][0]), "kl": float(ev["kl"][0]),
                "mean_var_warp": float(s["layers"][0][0].var(0).mean()),
                "mean_var_f": float(s["layers"][1][0].var(0).mean()),
                "mean_var_composition": float(s["hidden"][1][0].var(0).mean()),
                "final_loss": trace[-1], "seconds": time.perf_counter() - t0,
            }
            report["_samples"][name] = {"grid": grid.numpy(), "warp": s["layers"][0][0].numpy(),
                                        "f": s["layers"][1][0].numpy(), "composition": s["hidden"][1][0].numpy()}
    mf, cp = report["models"]["mean-field"], report["models"]["coupled"]
    report["warp_variance_ratio"] = cp["mean_var_warp"] / max(mf["mean_var_warp"], 1e-300)
    return report


PEER_PRESETS = {
    "smoke": dict(steps=(40, 10), lrs=(1e-2, 1e-3), eval_samples=200),
    "default": dict(steps=(6000, 2000, 1000), lrs=(1e-3, 1e-4, 1e-5), eval_samples=2000),
    "paper": dict(steps=(10000, 10000, 10000), lrs=(1e-3, 1e-4, 1e-5), eval_samples=2000),
}


def gpytorch_peer_check(scale: str | None = None, seed: int = 0, data_seed: int = 1, **overrides) -> dict:
    """Fit DSVI in reprlab and in GPyTorch (same model, data, M, S, schedule); compare ELBOs.

    Also evaluates GPyTorch's fitted parameters inside reprlab (:func:`peer.to_reprlab`): for
    identical parameters the two ELBO estimators must agree within Monte-Carlo error.
    """
    from reprlab.dgp.peer import build_gpytorch_dgp, fit_gpytorch_dgp, gpytorch_elbo, to_reprlab

    cfg = {**COMMON, **pick(PEER_PRESETS, scale, **overrides)}
    x, y = sin_exp_data(cfg["n_points"], cfg["noise_std"], data_seed)
    with single_thread():
        ours = make_model("dsvi", cfg["kernels"], cfg["n_inducing"], cfg["noise_std"], random_state=seed)
        t0 = time.perf_counter()
        fit_dgp(ours, x, y, cfg["steps"], cfg["lrs"], cfg["n_samples"], seed)
        t_ours = time.perf_counter() - t0
        gp, lik = build_gpytorch_dgp(cfg["kernels"], cfg["n_inducing"], cfg["noise_std"])
        t0 = time.perf_counter()
        fit_gpytorch_dgp(gp, lik, x, y, cfg["steps"], cfg["lrs"], cfg["n_samples"], seed)
        t_gp = time.perf_counter() - t0
        gen = torch.Generator().manual_seed(seed + 1)
        ev_ours = ours.evaluate_elbo(x, y, cfg["eval_samples"], generator=gen)
        torch.manual_seed(seed + 2)
        elbo_gp = gpytorch_elbo(gp, lik, x, y, cfg["eval_samples"])
        ev_transfer = to_reprlab(gp, lik).evaluate_elbo(x, y, cfg["eval_samples"], generator=gen)
    return {
        "scale": current_scale(scale),
        "reprlab_dsvi_elbo": float(ev_ours["elbo"][0]), "reprlab_dsvi_elbo_sem": float(ev_ours["elbo_sem"][0]),
        "gpytorch_dsvi_elbo": elbo_gp,
        "gpytorch_params_in_reprlab_elbo": float(ev_transfer["elbo"][0]),
        "gpytorch_params_in_reprlab_sem": float(ev_transfer["elbo_sem"][0]),
        "seconds_reprlab": t_ours, "seconds_gpytorch": t_gp,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
    }
