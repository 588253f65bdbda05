"""``python -m reprlab textures <verb>``: synthesize, bench, list."""

from __future__ import annotations

import argparse

from reprlab.cli import add_json_flag


def register(verbs: argparse._SubParsersAction) -> None:
    """Add the chapter-3 verbs to the main CLI."""
    p = verbs.add_parser("synthesize", help="synthesise a texture from a bundled name or an image path")
    p.add_argument("image", help="bundled texture name (see `textures list`) or path to a PNG/JPEG")
    p.add_argument("--model", default="random-multiscale",
                   help="filter bank: random-multiscale (default), random-363, fourier-3267, ... ")
    p.add_argument("--nonlinearity", default="relu", choices=("relu", "sigmoid", "none"))
    p.add_argument("--size", type=int, default=128, help="side of the (square) reference and output, pixels")
    p.add_argument("--iters", type=int, default=200, help="max L-BFGS-B iterations (paper: 2000)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the start image (filters use seed 0)")
    p.add_argument("--grayscale", action="store_true", help="convert the reference to grayscale")
    p.add_argument("--method", default="lbfgsb", choices=("lbfgsb", "torch"))
    p.add_argument("--out", required=True, help="output PNG path (written atomically)")
    p.add_argument("--metrics", action="store_true", help="also report the PS and independent-Gram metrics")
    add_json_flag(p)
    p.set_defaults(handler=_synthesize)

    b = verbs.add_parser("bench", help="time the Random-Multiscale loss: straightforward conv2d + autograd "
                                       "vs the fused / FFT fast path")
    b.add_argument("--size", type=int, default=256)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    b.add_argument("--no-scan", action="store_true", help="skip the FFT-threshold scan")
    b.add_argument("--out", default=None, help="also write the JSON report to this path")
    add_json_flag(b)
    b.set_defaults(handler=_bench)

    ls = verbs.add_parser("list", help="list bundled textures and filter banks")
    add_json_flag(ls)
    ls.set_defaults(handler=_list)


def _synthesize(args: argparse.Namespace) -> dict:
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from reprlab.io import atomic_path
    from reprlab.textures.filterbanks import make_bank
    from reprlab.textures.images import load_texture
    from reprlab.textures.model import TextureModel
    from reprlab.textures.synthesis import synthesize

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"--out must end in .png/.jpg, got {out.name!r}")
    target = load_texture(args.image, size=args.size, grayscale=args.grayscale)
    bank = make_bank(args.model, in_channels=int(target.shape[0]), seed=0, target=target)
    model = TextureModel(bank, nonlinearity=args.nonlinearity)
    res = synthesize(target, model, iters=args.iters, seed=args.seed, method=args.method, progress=not args.json)
    img = res.images[0]
    arr = (img.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
    arr = arr[..., 0] if arr.shape[2] == 1 else arr
    with atomic_path(out, suffix=out.suffix) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG" if out.suffix.lower() == ".png" else "JPEG")
    report = {"image": args.image, "out": str(out), "model": bank.name, "n_maps": bank.n_maps,
              "nonlinearity": args.nonlinearity, "size": list(img.shape[1:]), "channels": int(img.shape[0]),
              "iters": args.iters, "iterations": res.iterations[0], "evaluations": res.evaluations[0],
              "final_loss": res.final_losses[0], "seconds": res.seconds, "seed": args.seed, "method": args.method}
    if args.metrics:
        from reprlab.textures.metrics import evaluate

        report["metrics"] = evaluate(target, res.images)
    return report


def _bench(args: argparse.Namespace) -> dict:
    from reprlab.textures.benchmark import run_bench

    report = run_bench(size=args.size, repeats=args.repeats, threads=args.threads, scan=not args.no_scan)
    if args.out:
        from reprlab.io import atomic_write_json

        atomic_write_json(args.out, report)
    return report


def _list(args: argparse.Namespace) -> dict:
    from reprlab.textures.filterbanks import BANK_NAMES
    from reprlab.textures.images import bundled_textures, texture_provenance

    return {"textures": {n: texture_provenance(n) for n in bundled_textures()}, "banks": list(BANK_NAMES)}
