"""Chapters 6-7 data speed: stimuli, ground-truth rates and dataset writing.

Prints JSON and writes bench/results/v1_data.json. Measures, in one run: natural images per
second, ground-truth rate throughput (stimulus x neuron pairs per CPU second) with 1 and with
all intra-op threads (on a shared, oversubscribed machine one thread is much faster), batched
``rate`` vs a per-neuron loop (the vectorisation gain), and a smoke-scale simulate + write.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from reprlab.io import atomic_write_json
from reprlab.v1 import population as P
from reprlab.v1 import stimuli as S
from reprlab.v1.data import write_nwb, write_sensorium
from reprlab.v1.simulate import simulate_dataset


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main() -> dict:
    import os

    res: dict = {"torch": torch.__version__, "threads_available": torch.get_num_threads(),
                 "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    n_threads = torch.get_num_threads()
    imgs, wall, cpu = timed(lambda: S.natural_images(512, seed=0))
    res["natural_images_per_cpu_s"] = 512 / cpu
    x = torch.from_numpy(imgs)
    pop = P.sample_population(400, seed=0, calibration_images=x[:128])
    pop.rate(x[:8])  # build filters
    for threads in sorted({1, n_threads}):
        torch.set_num_threads(threads)
        _, wall, cpu = timed(lambda: pop.rate(x))
        res[f"rate_pairs_per_s_{threads}_threads"] = {"wall": x.shape[0] * 400 / wall, "cpu": x.shape[0] * 400 / cpu}
    torch.set_num_threads(1)
    sub = x[:64]
    _, w_batch, _ = timed(lambda: pop.rate(sub))
    _, w_loop, _ = timed(lambda: [pop.subset([n]).rate(sub) for n in range(40)])
    res["batched_vs_per_neuron_loop_speedup"] = (w_loop / 40) / (w_batch / 400)
    (dss, wall, cpu) = timed(lambda: simulate_dataset("smoke", seed=0))
    res["simulate_smoke_1_thread"] = {"wall_s": wall, "cpu_s": cpu}
    with tempfile.TemporaryDirectory() as tmp:
        _, wall, _ = timed(lambda: write_sensorium(dss[0], Path(tmp) / "a"))
        res["write_sensorium_smoke_s"] = wall
        _, wall, _ = timed(lambda: write_nwb(dss[0], Path(tmp) / "a.nwb"))
        res["write_nwb_smoke_s"] = wall
    torch.set_num_threads(n_threads)
    path = Path(__file__).resolve().parent / "results" / "v1_data.json"
    atomic_write_json(path, res)
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
