"""Chapter 5 speed: cost of one Adam step of each scheme, one model vs 10 replicas side by side.

Prints JSON and writes bench/results/dgp.json. Ratios measured in one run (CPU time per step,
which is less sensitive than wall time to other processes on a shared machine).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from reprlab.dgp.data import sin_exp_data
from reprlab.dgp.fit import fit_dgp, make_model, single_thread
from reprlab.io import atomic_write_json


def per_step(scheme: str, replicas: int, steps: int = 60) -> dict:
    x, y = sin_exp_data()
    model = make_model(scheme, n_replicas=replicas)
    fit_dgp(model, x, y, steps=5, lrs=(1e-3,))  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    fit_dgp(model, x, y, steps=steps, lrs=(1e-3,))
    return {"wall_ms": 1e3 * (time.perf_counter() - t0) / steps, "cpu_ms": 1e3 * (time.process_time() - c0) / steps}


def main() -> dict:
    out: dict = {"torch": torch.__version__, "setup": "N=50, M=10, S=10, 2 layers (SE, periodic), float64, 1 thread",
                 "load_before": os.getloadavg()[0]}
    with single_thread():
        for scheme in ("dsvi", "joint", "joint-chain", "ipail"):
            one = per_step(scheme, 1)
            ten = per_step(scheme, 10)
            out[scheme] = {"1_replica": one, "10_replicas": ten,
                           "trials_per_cpu_second_gain": 10 * one["cpu_ms"] / ten["cpu_ms"]}
    out["load_after"] = os.getloadavg()[0]
    path = Path(__file__).resolve().parent / "results" / "dgp.json"
    atomic_write_json(path, out)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
