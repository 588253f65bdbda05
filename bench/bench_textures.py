"""Chapter 3 speed: forward+backward of the full Random-Multiscale texture loss (1024 maps,
filters 3...55, 256x256 RGB): straightforward conv2d + autograd Gram (baseline), our fused loss
with direct conv2d, and the fast path (fused loss + FFT for large kernels), measured in one run.

Usage: python bench/bench_textures.py [--size 256] [--repeats 3] [--threads 1 [2 ...]] [--no-scan]
       [--max-load 1.5] [--out bench/results/textures.json]
Prints JSON and writes bench/results/textures.json (or --out) (the first thread count is the main report;
further thread counts go under "other_thread_counts", each run only if the 1-minute load average
is below --max-load at that moment, otherwise the skip and the load are recorded).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from reprlab.io import atomic_write_json
from reprlab.textures.benchmark import run_bench


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[None])
    parser.add_argument("--no-scan", action="store_true", help="skip the FFT-threshold scan")
    parser.add_argument("--max-load", type=float, default=1.5,
                        help="run the 2nd, 3rd ... thread counts only below this 1-minute load average")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "textures.json")
    args = parser.parse_args(argv)
    out = args.out
    report = run_bench(size=args.size, repeats=args.repeats, threads=args.threads[0], scan=not args.no_scan)
    if len(args.threads) > 1:
        report["other_thread_counts"] = []
        atomic_write_json(out, report)
    for threads in args.threads[1:]:
        load = os.getloadavg()[0]
        if load >= args.max_load:
            report["other_thread_counts"].append({"threads": threads, "skipped": True, "load_average_1min": load,
                                                  "reason": f"machine load {load:.2f} >= {args.max_load}"})
        else:
            report["other_thread_counts"].append(run_bench(size=args.size, repeats=args.repeats, threads=threads,
                                                           scan=False))
        atomic_write_json(out, report)
    atomic_write_json(out, report)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
