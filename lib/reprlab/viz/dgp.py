"""Matplotlib figures for chapter 5 (deep GPs): Figs. 2, 3, 5, 6 and Table 1."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

LABELS = {"dsvi": "DSVI", "joint": "Jointly Gaussian", "joint-chain": "Jointly Gaussian (chain)",
          "ipail": "Inducing points as inducing inputs"}


def _plt():
    import matplotlib.pyplot as plt

    return plt


def plot_fig5(samples: Mapping, x=None, y=None, max_lines: int = 25):
    """Fig. 5: rows = schemes; columns = samples of f_1, f_2 and f_2 ∘ f_1 (data as black dots)."""
    plt = _plt()
    schemes = [k for k in samples if k != "grid"]
    if not schemes:
        raise ValueError("samples has no scheme entries")
    grid = np.asarray(samples["grid"])
    fig, axes = plt.subplots(len(schemes), 3, figsize=(10, 2.6 * len(schemes)), squeeze=False, sharex=True)
    for row, scheme in enumerate(schemes):
        s = samples[scheme]
        for col, key, title in ((0, "f1", "$f_1$"), (1, "f2", "$f_2$"), (2, "composition", "$f_2 \\circ f_1$")):
            ax = axes[row, col]
            ax.plot(grid, np.asarray(s[key])[:max_lines].T, lw=0.8, alpha=0.6)
            if col == 2 and x is not None and y is not None:
                ax.plot(np.asarray(x), np.asarray(y), "k.", ms=3)
            if row == 0:
                ax.set_title(title)
            if col == 0:
                ax.set_ylabel(LABELS.get(scheme, scheme), fontsize=8)
    fig.tight_layout()
    return fig


def plot_fig3(report: Mapping):
    """Fig. 3: (A) σ² and (σ²)'' over Δ for several M; (B) min (σ²)'' against M."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for m, c in report["curves"].items():
        axes[0].plot(c["x"], c["var"], label=f"M={m}")
        axes[1].plot(c["x"], c["d2var"], label=f"M={m}")
    axes[0].set_title("A: predictive variance $\\sigma^2$")
    axes[1].set_title("A: $(\\sigma^2)''$")
    axes[1].axhline(0, color="k", lw=0.5)
    axes[0].legend(fontsize=7)
    mins = -np.asarray(report["min_d2var"])
    axes[2].semilogy(report["M"], np.maximum(mins, 1e-16), "o-")
    axes[2].set_xlabel("number of inducing points M")
    axes[2].set_title("B: $-\\min_\\Delta (\\sigma^2)''$")
    for ax in axes[:2]:
        ax.set_xlabel("input (units of γ around $\\bar f$)")
    fig.tight_layout()
    return fig


def plot_sign_compositions(n_layers: int = 3):
    """Fig. 2 (illustration): every composition of ±x layers that maps x to y = x."""
    from reprlab.dgp.data import sign_compositions

    plt = _plt()
    x = np.linspace(-1, 1, 11)
    comps = sign_compositions(n_layers)
    fig, axes = plt.subplots(1, n_layers, figsize=(3 * n_layers, 2.6), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c, signs in enumerate(comps):
        h = x
        for layer, s in enumerate(signs):
            h = s * h
            axes[layer].plot(x, h + 0.03 * (c - 1.5), color=colours[c % len(colours)], label=str(signs) if layer == 0 else None)
    for layer, ax in enumerate(axes):
        ax.set_title("$f_1$" if layer == 0 else f"$f_{layer + 1}\\circ\\dots\\circ f_1$")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_toy(report: Mapping, max_lines: int = 30):
    """Fig. 2 (fitted): rows = schemes, columns = hidden layers f_1, f_2∘f_1, … of a DGP on y = x."""
    plt = _plt()
    samples = report["_samples"]
    schemes = list(samples)
    n_cols = len(samples[schemes[0]]["hidden"])
    fig, axes = plt.subplots(len(schemes), n_cols, figsize=(3 * n_cols, 2.4 * len(schemes)), squeeze=False, sharex=True)
    for r, scheme in enumerate(schemes):
        grid = samples[scheme]["grid"]
        for c, h in enumerate(samples[scheme]["hidden"]):
            axes[r, c].plot(grid, np.asarray(h)[:max_lines].T, lw=0.7, alpha=0.6)
            if r == 0:
                axes[r, c].set_title(f"$\\mathbf{{f}}_{c + 1}$")
        n = report["schemes"][scheme]["n_compositions"]
        axes[r, 0].set_ylabel(f"{LABELS.get(scheme, scheme)}\n({n} sign pattern{'s' if n != 1 else ''})", fontsize=8)
    fig.tight_layout()
    return fig


def plot_warping(report: Mapping, max_lines: int = 30):
    """Fig. 6: warps g, latent f and f∘g for the mean-field (top) and coupled (bottom) posteriors."""
    plt = _plt()
    data = report["_data"]
    names = list(report["_samples"])
    fig, axes = plt.subplots(len(names), 3, figsize=(11, 2.6 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        s = report["_samples"][name]
        axes[r, 0].plot(s["grid"], s["warp"][:max_lines].T, lw=0.7, alpha=0.6)
        axes[r, 0].plot(data["x"], data["warp"], "k--", lw=1)
        axes[r, 1].plot(s["grid"], s["f"][:max_lines].T, lw=0.7, alpha=0.6)
        axes[r, 2].plot(s["grid"], s["composition"][:max_lines].T, lw=0.7, alpha=0.6)
        axes[r, 2].plot(data["x"], data["y"], "k.", ms=2)
        axes[r, 0].set_ylabel(name)
    for ax, t in zip(axes[0], ("warp g(x)", "latent f", "f(g(x))")):
        ax.set_title(t)
    fig.tight_layout()
    return fig


def plot_table1(report: Mapping):
    """Table 1 as a chart: ours (mean ± sd over trials) beside the paper's, per column."""
    plt = _plt()
    rows = report["rows"]
    paper = report.get("paper", {})
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    idx = np.arange(len(rows))
    for ax, key, title, log in ((axes[0], "elbo", "ELBO", False), (axes[1], "var_f1", "Var[$f_1(0)$]", True),
                                (axes[2], "var_f2", "Var[$f_2(0)$]", True)):
        ours = [r[f"{key}_mean"] for r in rows]
        err = [r[f"{key}_sd"] for r in rows]
        ax.errorbar(idx - 0.1, ours, yerr=err, fmt="o", label="reprlab")
        ref = [paper.get(r["scheme"], {}).get(key, [np.nan, np.nan]) for r in rows]
        ax.errorbar(idx + 0.1, [p[0] for p in ref], yerr=[p[1] for p in ref], fmt="s", label="paper")
        ax.set_xticks(idx, [LABELS.get(r["scheme"], r["scheme"]).replace(" as ", "\nas ") for r in rows], fontsize=7)
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
