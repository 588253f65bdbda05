"""``python -m reprlab dgp <verb>``: Table 1, Fig. 3, the Fig. 2 toy, the §6 warping and the
GPyTorch peer check. Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse


def _add_common(p: argparse.ArgumentParser) -> None:
    from reprlab.cli import add_json_flag

    add_json_flag(p)
    p.add_argument("--scale", choices=("smoke", "default", "paper"), default=None,
                   help="size preset (default: $REPRLAB_SCALE or 'default')")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", default=None, help="also write the report as JSON to this path (atomically)")


def _steps(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        steps = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"--steps must be comma-separated integers, e.g. 6000,3000,1000; got {text!r}") from None
    if any(s < 0 for s in steps):
        raise ValueError(f"--steps must be >= 0, got {text!r}")
    return steps


def _finish(report: dict, args: argparse.Namespace) -> dict:
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    if args.out:
        from reprlab.io import atomic_write_json

        atomic_write_json(args.out, public)
    return public


def _table1(args: argparse.Namespace) -> dict:
    from reprlab.dgp.experiments import format_table1, table1

    overrides = {}
    if args.trials is not None:
        if args.trials < 1:
            raise ValueError(f"--trials must be >= 1, got {args.trials}")
        overrides["trials"] = args.trials
    steps = _steps(args.steps)
    if steps is not None:
        if len(steps) != 3:
            raise ValueError(f"--steps needs three stage lengths (lr 1e-3, 1e-4, 1e-5), got {args.steps!r}")
        overrides["steps"] = steps
    if args.lrs is not None:
        try:
            lrs = tuple(float(v) for v in args.lrs.split(","))
        except ValueError:
            raise ValueError(f"--lrs must be comma-separated numbers, e.g. 1e-3,1e-4,1e-5; got {args.lrs!r}") from None
        if len(lrs) != 3 or any(not (v > 0) for v in lrs):
            raise ValueError(f"--lrs needs three positive learning rates, got {args.lrs!r}")
        overrides["lrs"] = lrs
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.draws is not None:
        overrides["draws"] = args.draws
    if args.clip is not None:
        if not (args.clip == 0 or args.clip > 1):
            raise ValueError(f"--clip must be 0 (off) or a factor > 1, got {args.clip}")
        overrides["clip"] = args.clip if args.clip > 0 else None
    schemes = tuple(s.strip() for s in args.schemes.split(","))
    report = table1(args.scale, schemes=schemes, seed=args.seed, progress=args.progress, **overrides)
    if not args.json:
        print(format_table1(report))
    return _finish(report, args)


def _fig3(args: argparse.Namespace) -> dict:
    from reprlab.dgp.experiments import fig3

    report = fig3()
    report.pop("curves")
    return _finish(report, args)


def _toy(args: argparse.Namespace) -> dict:
    from reprlab.dgp.experiments import toy_compositions

    return _finish(toy_compositions(args.scale, seed=args.seed), args)


def _warp(args: argparse.Namespace) -> dict:
    from reprlab.dgp.experiments import warping

    return _finish(warping(args.scale, seed=args.seed), args)


def _peer(args: argparse.Namespace) -> dict:
    from reprlab.dgp.experiments import gpytorch_peer_check

    return _finish(gpytorch_peer_check(args.scale, seed=args.seed), args)


def register(verbs) -> None:
    """Add the chapter-5 verbs to the ``dgp`` sub-command."""
    p = verbs.add_parser("table1", help="Table 1: ELBO and Var[f_l(0)] of DSVI / jointly Gaussian / inducing locations")
    _add_common(p)
    p.add_argument("--trials", type=int, default=None, help="trials per scheme (paper: 10)")
    p.add_argument("--steps", default=None, help="Adam steps per learning-rate stage, e.g. 6000,3000,1000")
    p.add_argument("--lrs", default=None, help="Adam learning rate per stage (default: the preset's; at the default "
                   "scale the paper text's 1e-3,1e-4,1e-5 over 28000,1000,1000 steps; the original code's: 1e-3,1e-3,1e-3 "
                   "over 10000,10000,10000)")
    p.add_argument("--clip", type=float, default=None, help="per-replica gradient-norm clipping at this factor "
                   "times the running typical norm (default: the preset's, 10; 0 = off, as in the original code)")
    p.add_argument("--workers", type=int, default=None, help="processes (one scheme each)")
    p.add_argument("--draws", choices=("marginal", "joint"), default=None, help="how the ELBO draws the inner layer at "
                   "the data: point by point (default, the paper's text) or jointly over the points (the original "
                   "code; same ELBO, ~3x the cost)")
    p.add_argument("--schemes", default="dsvi,joint,ipail", help="comma-separated: dsvi, joint, joint-chain, ipail")
    p.add_argument("--progress", action="store_true", help="show progress bars (single worker)")
    p.set_defaults(handler=_table1)

    p = verbs.add_parser("fig3", help="Fig. 3: min second derivative of the predictive variance vs M")
    _add_common(p)
    p.set_defaults(handler=_fig3)

    p = verbs.add_parser("toy", help="Fig. 2: 3-layer DGP on y = x; compositions kept by each scheme")
    _add_common(p)
    p.set_defaults(handler=_toy)

    p = verbs.add_parser("warp", help="Fig. 6: temporal warping, mean-field vs coupled posterior")
    _add_common(p)
    p.set_defaults(handler=_warp)

    p = verbs.add_parser("peer", help="GPyTorch DeepGP (DSVI) vs reprlab DSVI on the Table 1 data")
    _add_common(p)
    p.set_defaults(handler=_peer)
