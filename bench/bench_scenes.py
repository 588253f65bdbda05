"""Benchmark ECON training steps: seconds per step at smoke/default scale, 1 vs 2 threads.

Prints JSON and writes bench/results/scenes.json. Ratios within one run are meaningful;
absolute times depend on how busy the machine is (the process CPU time is reported too).
"""

from __future__ import annotations

import json
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


def main() -> dict:
    rows = [step_time(scale, threads) for scale in ("smoke", "default") for threads in (1, 2)]
    default = {r["threads"]: r for r in rows if r["scale"] == "default"}
    report = dict(rows=rows, default_wall_ratio_2_over_1_threads=default[2]["wall_s_per_step"] / default[1]["wall_s_per_step"],
                  default_minutes_for_3000_steps_1_thread=3000 * default[1]["wall_s_per_step"] / 60)
    out = Path(__file__).resolve().parent / "results" / "scenes.json"
    atomic_write_json(out, report)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
