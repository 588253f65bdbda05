"""Chapter 5 speed: cost of one Adam step of each scheme, one model vs 10 replicas side by side.

Prints JSON and writes bench/results/dgp.json. Ratios measured in one run (CPU time per step,
which is less sensitive than wall time to other processes on a shared machine).

``--table1`` instead times the default Table 1 exactly as a user runs it
(``python -m reprlab dgp table1 --trials 10``, default workers) in a subprocess: wall time, CPU
time of all its processes, the 1-minute load average before and after (the machine is shared),
and the table itself; stored under ``table1_default`` in the same file (other keys kept).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
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


RESULTS = Path(__file__).resolve().parent / "results" / "dgp.json"


def table1_default() -> dict:
    """Run and time ``python -m reprlab dgp table1 --trials 10`` (default scale and workers)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "table1.json"
        cmd = [sys.executable, "-m", "reprlab", "dgp", "table1", "--trials", "10", "--scale", "default", "--out", str(out)]
        load_before = os.getloadavg()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        report = json.loads(out.read_text())
    keys = ("scheme", "elbo_mean", "elbo_sd", "elbo_median", "elbo_trials", "var_f1_mean", "var_f1_sd", "var_f1_median",
            "var_f1_trials", "var_f2_mean", "var_f2_sd", "var_f2_median", "var_f2_trials", "kl_trials", "seconds",
            "cpu_seconds")
    return {
        "command": "python -m reprlab dgp table1 --trials 10 (default scale and workers)",
        "wall_seconds": wall,
        "cpu_seconds_all_processes": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
        "cpu_seconds_fits": report["cpu_seconds"],
        "workers": report["config"]["workers"], "cpus": os.cpu_count(),
        "load_before": load_before, "load_after": os.getloadavg(),
        "rows": [{k: row[k] for k in keys} for row in report["rows"]],
        "ordering": report["ordering"], "paper": report["paper"], "table": proc.stdout,
    }


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
    _merge(out)
    print(json.dumps(out, indent=2))
    return out


def _merge(update: dict) -> None:
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    atomic_write_json(RESULTS, {**old, **update})


if __name__ == "__main__":
    if "--table1" in sys.argv[1:]:
        result = table1_default()
        _merge({"table1_default": result})
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    else:
        main()
