"""``python -m reprlab scenes train|export|refine|evaluate|sample|search [--json]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from reprlab.cli import add_json_flag


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="torch device (default: reprlab.device())")
    add_json_flag(p)


def _parse_int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(f"expected comma-separated ints, got {text!r}") from err


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("train", help="train ECON on sprite scenes (resumable)")
    p.add_argument("--scale", default=None, choices=["smoke", "default", "paper"])
    p.add_argument("--colours", default="unique", choices=["unique", "random"])
    p.add_argument("--run-dir", default=None, help="folder for the resumable checkpoint (default runs/scenes/<scale>_<colours>)")
    p.add_argument("--out", default=None, help="also export the best model (+ metrics) to this file")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a model/training setting")
    p.add_argument("--n-test", type=int, default=200, help="test scenes for the exported metrics")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_common(p)
    p.set_defaults(handler=_train)

    p = verbs.add_parser("export", help="evaluate a training checkpoint and write a small model file")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--note", default="", help="provenance note stored in the file")
    _add_common(p)
    p.set_defaults(handler=_export)

    p = verbs.add_parser("refine", help="train a model file's VAEs on its own frozen decompositions, then re-evaluate")
    p.add_argument("--checkpoint", required=True, help="model file or training checkpoint")
    p.add_argument("--out", required=True, help="new model file")
    p.add_argument("--steps", type=int, default=6000, help="Adam steps (batch 64)")
    p.add_argument("--n-scenes", type=int, default=4000, help="training-distribution scenes decomposed once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--background-last", action="store_true",
                   help="move the steps of the expert covering the most area (the background) last in each frozen decomposition")
    p.add_argument("--attention", action="store_true", help="also fit the winners' attention nets to the frozen regions")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (C.3 starts at 5e-4 and divides by sqrt(10))")
    p.add_argument("--beta", type=float, default=None,
                   help="KL weight of objective (13) from now on (default: the model's; C.4's best unique model has 9.54)")
    _add_common(p)
    p.set_defaults(handler=_refine)

    p = verbs.add_parser("evaluate", help="metrics on in-distribution and out-of-distribution scenes")
    p.add_argument("--checkpoint", required=True, help="model file or training checkpoint")
    p.add_argument("--n", type=int, default=200, help="scenes per test set")
    p.add_argument("--seed", type=int, default=123)
    _add_common(p)
    p.set_defaults(handler=_evaluate)

    p = verbs.add_parser("sample", help="layered generation: objects in a requested depth order")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--objects", default="circle,square,triangle",
                   help="classes back to front (names, or expert indices with --experts)")
    p.add_argument("--experts", action="store_true", help="--objects lists expert indices, background first")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="PNG file for a grid of the generated scenes")
    p.add_argument("--latents", default="prior", choices=["prior", "fitted"],
                   help="z ~ N(0, I) (the model's prior) or the role Gaussians fitted to posteriors (stored in the model file)")
    _add_common(p)
    p.set_defaults(handler=_sample)

    p = verbs.add_parser("search", help="random search over the appendix C.4 ranges (short runs)")
    p.add_argument("--scale", default=None, choices=["smoke", "default", "paper"])
    p.add_argument("--colours", default="unique", choices=["unique", "random"])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="iterations per trial (default: the scale's max_steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file with all trials")
    p.add_argument("--threads", type=int, default=None)
    _add_common(p)
    p.set_defaults(handler=_search)


def _overrides(pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings to settings: JSON values, Python's True/False/None, else strings."""
    import json

    literals = {"true": True, "false": False, "none": None, "null": None}
    out = {}
    for item in pairs:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, text = (part.strip() for part in item.split("=", 1))
        if text.lower() in literals:
            value = literals[text.lower()]
        else:
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def _train(args: argparse.Namespace) -> dict:
    from reprlab.scales import current_scale
    from reprlab.scenes.train import make_configs, train

    scale = current_scale(args.scale)
    overrides = _overrides(args.set)
    overrides.update(seed=args.seed)
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    if args.max_minutes is not None:
        overrides["max_minutes"] = args.max_minutes
    if args.threads is not None:
        overrides["threads"] = args.threads
    model_cfg, train_cfg = make_configs(scale, args.colours, **overrides)
    run_dir = Path(args.run_dir or f"runs/scenes/{scale}_{args.colours}")
    ckpt = run_dir / "checkpoint.pt"
    model, report = train(model_cfg, train_cfg, checkpoint=ckpt, resume=not args.no_resume,
                          device=args.device, progress=not args.quiet)
    out = dict(scale=scale, colours=args.colours, checkpoint=str(ckpt), **{k: v for k, v in report.items() if k != "history"})
    out["last_eval"] = report["history"][-1] if report["history"] else None
    if args.out:
        from reprlab.scenes.generate import export_model

        out["export"] = export_model(ckpt, args.out, n_test=args.n_test, device=args.device,
                                     note=f"python -m reprlab scenes train --scale {scale} --colours {args.colours}")
    return out


def _export(args: argparse.Namespace) -> dict:
    from reprlab.scenes.generate import export_model

    return export_model(args.checkpoint, args.out, n_test=args.n_test, device=args.device, note=args.note)


def _refine(args: argparse.Namespace) -> dict:
    import torch

    from reprlab.scenes.refine import refine_model_file

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    note = (f"python -m reprlab scenes refine --checkpoint {args.checkpoint} --steps {args.steps} "
            f"--n-scenes {args.n_scenes} --seed {args.seed}" + (" --background-last" if args.background_last else "")
            + (" --attention" if args.attention else "") + (f" --beta {args.beta}" if args.beta is not None else "") + f" --lr {args.lr}")
    return refine_model_file(args.checkpoint, args.out, steps=args.steps, n_scenes=args.n_scenes, seed=args.seed,
                             n_test=args.n_test, device=args.device, progress=not args.quiet, note=note,
                             background_last=args.background_last, attention=args.attention, beta=args.beta, lr=args.lr)


def _evaluate(args: argparse.Namespace) -> dict:
    from reprlab.scenes.generate import evaluate_all
    from reprlab.scenes.train import load_model

    model, meta = load_model(args.checkpoint, device=args.device)
    colour = (meta.get("train_config") or {}).get("colour_mode", "unique")
    return dict(checkpoint=args.checkpoint, colours=colour, **evaluate_all(model, colour, n=args.n, seed=args.seed))


def _sample(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from reprlab.scenes.generate import check_generation, experts_for, latents_for
    from reprlab.scenes.train import load_model

    model, meta = load_model(args.checkpoint, device=args.device)
    if args.experts:
        experts = _parse_int_list(args.objects)
        objects = None
    else:
        objects = [o.strip() for o in args.objects.split(",") if o.strip()]
        experts = experts_for(objects, meta.get("roles") or {})
    latents = None
    if args.latents == "fitted":
        if objects is None:
            raise ValueError("--latents fitted needs class names in --objects (not --experts)")
        latents = latents_for(objects, meta.get("role_latents") or {})
    gen = torch.Generator().manual_seed(args.seed)
    out = model.generate(experts, n=args.n, generator=gen, latents=latents)
    report = dict(experts=experts, objects=objects, n=args.n, latents=args.latents)
    if objects is not None:
        colour = (meta.get("train_config") or {}).get("colour_mode", "unique")
        report["check"] = check_generation(out, objects, colour, model, meta.get("roles") or {})
    if args.out:
        from PIL import Image

        from reprlab.io import atomic_path

        imgs = (out["image"].clamp(0, 1).cpu().numpy() * 255).astype(np.uint8).transpose(0, 2, 3, 1)
        grid = np.concatenate(list(imgs), axis=1)
        with atomic_path(args.out, suffix=".png") as tmp:
            Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(tmp, format="PNG")
        report["png"] = args.out
    return report


def _search(args: argparse.Namespace) -> dict:
    from reprlab.scenes.generate import random_search

    return random_search(args.colours, scale=args.scale, n_trials=args.trials, steps=args.steps, seed=args.seed,
                         out=args.out, device=args.device, threads=args.threads)
