"""``python -m reprlab v1 <verb>``: simulate data, fit the twin, (later) cluster and build bundles.

Each verb is one small block: an ``_add_<verb>(verbs)`` function that declares its parser
and a ``_<verb>(args) -> dict`` handler that imports heavy modules lazily and returns a
JSON-able report. :func:`register` lists the blocks.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from reprlab.cli import add_json_flag


def _scale_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default=None, help="smoke | default | paper (default: $REPRLAB_SCALE or 'default')")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)


# ----------------------------------------------------------------------------- simulate
def _add_simulate(verbs: Any) -> None:
    p = verbs.add_parser("simulate", help="simulate a ground-truth V1 recording (one Sensorium folder per animal)")
    _scale_seed(p)
    p.add_argument("--out", required=True, help="output folder; one sub-folder per animal is written into it")
    p.add_argument("--overwrite", action="store_true", help="replace existing animal folders")
    add_json_flag(p)
    p.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> dict:
    import time

    from reprlab.scales import current_scale
    from reprlab.v1.data import write_sensorium
    from reprlab.v1.simulate import simulate_dataset

    scale = current_scale(args.scale)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder, found a file at {out}")
    t0 = time.perf_counter()
    datasets = simulate_dataset(scale=scale, seed=args.seed)
    animals = []
    for ds in datasets:
        folder = write_sensorium(ds, out / ds.animal, overwrite=args.overwrite)
        animals.append({"animal": ds.animal, "folder": str(folder), "n_neurons": ds.n_neurons,
                        "n_trials": ds.n_trials, "n_images": ds.n_images})
    return {"scale": scale, "seed": args.seed, "out": str(out), "n_animals": len(animals),
            "n_neurons": sum(a["n_neurons"] for a in animals), "animals": animals,
            "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- fit
def _add_fit(verbs: Any) -> None:
    p = verbs.add_parser("fit", help="fit the rotation-equivariant twin (and the GLM baseline) to a data folder")
    p.add_argument("data", help="a Sensorium folder, or a folder of Sensorium folders (one per animal)")
    p.add_argument("--out", required=True, help="model file to write (a training checkpoint goes to OUT.ckpt)")
    _scale_seed(p)
    p.add_argument("--no-glm", action="store_true", help="skip the GLM baseline")
    p.add_argument("--max-epochs", type=int, default=None, help="override the scale's epoch limit")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_json_flag(p)
    p.set_defaults(handler=_fit)


def _read_folders(path: Path) -> list:
    from reprlab.v1.data import read_sensorium

    if not path.is_dir():
        raise FileNotFoundError(f"expected a data folder at {path}, found nothing")
    if (path / "meta").is_dir() or (path / "data").is_dir():
        return [read_sensorium(path)]
    subs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subs:
        raise ValueError(f"{path} holds no Sensorium folders (expected data/ and meta/ or one sub-folder per animal)")
    return [read_sensorium(p) for p in subs]


def _family_table(twin: dict, glm: dict | None) -> dict:
    groups = twin.get("by_group") or {}
    table = {}
    for fam, st in groups.items():
        row = {"n_neurons": st["n_neurons"],
               "twin_fraction_of_oracle": st["median_fraction_of_oracle"],
               "twin_test_correlation": st["median_test_correlation"]}
        if glm is not None and fam in (glm.get("by_group") or {}):
            g = glm["by_group"][fam]
            row["glm_fraction_of_oracle"] = g["median_fraction_of_oracle"]
            row["glm_test_correlation"] = g["median_test_correlation"]
            row["twin_minus_glm_fraction_of_oracle"] = st["median_fraction_of_oracle"] - g["median_fraction_of_oracle"]
        table[fam] = row
    return table


def _headline(summary: dict) -> dict:
    keys = ("n_neurons", "median_test_correlation", "median_average_correlation", "median_oracle_correlation",
            "median_fraction_of_oracle", "oracle_slope", "median_fev")
    return {k: summary[k] for k in keys if k in summary}


def _fit(args: argparse.Namespace) -> dict:
    import time

    _threads(args)
    from reprlab.v1.train import fit_twin

    datasets = _read_folders(Path(args.data))
    out = Path(args.out)
    overrides = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
    t0 = time.perf_counter()
    model, rep = fit_twin(datasets, scale=args.scale, seed=args.seed, out=out.with_name(out.name + ".ckpt"),
                          progress=not args.quiet, **overrides)
    model.save(out, extra={"report": {k: v for k, v in rep.items() if k != "settings"}})
    report: dict[str, Any] = {
        "data": {"n_animals": rep["n_animals"], "n_neurons": rep["n_neurons"],
                 "n_train_images": rep["n_train_images"], "n_train_trials": rep["n_train_trials"]},
        "twin": {"model": str(out), "scale": rep["scale"], "epochs": rep["epochs"], "best_epoch": rep["best_epoch"],
                 "seconds_per_epoch": rep["seconds_per_epoch"], "seconds_per_step": rep["seconds_per_step"],
                 "seconds_total": rep["seconds_total"], "best_val_correlation": rep["best_val_correlation"],
                 **_headline(rep["test"])},
    }
    glm_summary = None
    if not args.no_glm:
        from reprlab.v1.glm import fit_glm_baseline

        glm = fit_glm_baseline(datasets, scale=args.scale, progress=not args.quiet)
        glm_summary = glm["summary"]
        report["glm"] = {"seconds_total": glm["seconds_total"], **_headline(glm_summary)}
    if rep["test"].get("by_group"):
        report["by_family"] = _family_table(rep["test"], glm_summary)
    report["seconds_total"] = time.perf_counter() - t0
    return report


# ----------------------------------------------------------------------------- twin
def _add_twin(verbs: Any) -> None:
    p = verbs.add_parser("twin", help="build the chapter-7 twin bundle: simulate, fit, cluster, optimal stimuli, "
                                      "in silico experiments, analyses, verification against the truth")
    _scale_seed(p)
    p.add_argument("--out", required=True, help="bundle folder to write (replaced atomically)")
    p.add_argument("--work-dir", default=None, help="keep the fitted model here (resume / skip the fit on rebuilds)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_json_flag(p)
    p.set_defaults(handler=_twin)


def _twin(args: argparse.Namespace) -> dict:
    from reprlab.v1.twin import build_twin, twin_build_config

    _threads(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder, found a file at {out}")
    _, report = build_twin(twin_build_config(args.scale, args.seed), out=out, progress=not args.quiet,
                           work_dir=args.work_dir)
    return {"out": str(out), **report}


# ----------------------------------------------------------------------------- registry
def register(verbs: Any) -> None:
    """Add the chapter 6-7 verbs to the ``v1`` sub-command."""
    _add_simulate(verbs)
    _add_fit(verbs)
    _add_twin(verbs)
    from reprlab.v1.twin_clustering import add_cluster_verb  # ch6: `v1 cluster MODEL --out DIR`

    add_cluster_verb(verbs)
