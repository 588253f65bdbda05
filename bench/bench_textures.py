"""Chapter 3 speed: forward+backward of the full Random-Multiscale texture loss (1024 maps,
filters 3...55, 256x256 RGB): straightforward conv2d + autograd Gram (baseline), our fused loss
with direct conv2d, and the fast path (fused loss + FFT for large kernels), measured in one run.

Usage: python bench/bench_textures.py [--size 256] [--repeats 3] [--threads N] [--no-scan]
Prints JSON and writes bench/results/textures.json (same as `python -m reprlab textures bench`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reprlab.io import atomic_write_json
from reprlab.textures.benchmark import run_bench


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-scan", action="store_true", help="skip the FFT-threshold scan")
    args = parser.parse_args(argv)
    report = run_bench(size=args.size, repeats=args.repeats, threads=args.threads, scan=not args.no_scan)
    atomic_write_json(Path(__file__).resolve().parent / "results" / "textures.json", report)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
