"""Benchmark ECON training steps: seconds per step at smoke/default scale.

Prints JSON and writes bench/results/scenes.json. One torch thread by default (the shared
2-core machine's rule); ``--threads 1 2`` also times two. Ratios within one run are
meaningful; absolute wall times depend on how busy the machine is, so the process CPU time
and the load average are reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from reprlab.io import atomic_write_json
from reprlab.scenes.econ import ECON
from reprlab.scenes.train import make_configs, training_batch


def step_time(scale: str, threads: int, repeats: int = 3) -> dict:
    torch.set_num_threads(threads)
    model_cfg, cfg = make_configs(scale, "unique")
    torch.manual_seed(0)
    model = ECON(model_cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x = torch.from_numpy(training_batch(cfg, model_cfg.image_size, 0))
    gen = torch.Generator().manual_seed(0)
    walls, cpus = [], []
    for i in range(repeats + 1):
        w0, c0 = time.perf_counter(), time.process_time()
        d = model.decompose(x, stochastic=True, generator=gen)
        opt.zero_grad()
        d.loss.mean().backward()
        opt.step()
        if i > 0:  # first step warms up
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    return dict(scale=scale, threads=threads, batch=cfg.batch_size, image_size=model_cfg.image_size,
                wall_s_per_step=min(walls), cpu_s_per_step=min(cpus))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    rows = [step_time(scale, threads) for scale in ("smoke", "default") for threads in args.threads]
    default = {r["threads"]: r for r in rows if r["scale"] == "default"}
    report = dict(rows=rows, load_average_1min=[load_before, os.getloadavg()[0]],
                  default_cpu_minutes_for_3000_steps_1_thread=3000 * default[1]["cpu_s_per_step"] / 60)
    if 2 in default:
        report["default_wall_ratio_2_over_1_threads"] = default[2]["wall_s_per_step"] / default[1]["wall_s_per_step"]
    out = Path(__file__).resolve().parent / "results" / "scenes.json"
    atomic_write_json(out, report)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
