"""Twin speed: seconds per training step (forward + backward + Adam, batch 64, 36 x 64 images)
of the default core (8 features x 8 orientations, kernels 13, 5, 5, 2 x 2 pooling after layer 1),
dense factorised vs Gaussian-position readout, 2,000 and 13,000 neurons; and the resulting
seconds per epoch of 4,000 distinct training images (``--paper`` adds the thesis' full-resolution
16 x 8 core). Threads: ``REPRLAB_BENCH_THREADS`` (default 1; 1 is fastest on a shared machine). Prints JSON and writes
bench/results/v1_twin.json. Ratios are measured in one run (the machine may be shared).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from reprlab.v1.model import V1Twin, default_config
from reprlab.v1.train import poisson_loss


def step_time(features: int, pool: int, readout: str, n_neurons: int, batch: int = 64, reps: int = 3) -> float:
    torch.manual_seed(0)
    animals = [(f"a{i}", n_neurons // 4) for i in range(4)]
    cfg = default_config(animals, core=dict(features=features, num_rotations=8, kernel_sizes=[13, 5, 5], pool=pool),
                         readout={"kind": readout})
    model = V1Twin(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 36, 64) * 0.2
    y = torch.poisson(torch.ones(batch, n_neurons // 4))
    times = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        feats = model._features(x)
        loss = sum(poisson_loss(model.readout(a)(feats), y) for a, _ in animals)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return min(times[1:])


def main() -> dict:
    threads = int(os.environ.get("REPRLAB_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    cases = [(8, 2, "gaussian", 2000), (8, 2, "factorized", 2000), (8, 2, "gaussian", 13000),
             (8, 2, "factorized", 13000), (4, 2, "gaussian", 2000)]
    if "--paper" in sys.argv:
        cases += [(16, 1, "gaussian", 2000), (16, 1, "factorized", 2000)]
    for features, pool, readout, n in cases:
        s = step_time(features, pool, readout, n)
        rows.append({"features": features, "orientations": 8, "pool_after_layer1": pool, "readout": readout,
                     "n_neurons": n, "seconds_per_step": s, "seconds_per_epoch_4000_images": s * 4000 / 64})
    def find(f, r, n):
        return next(x["seconds_per_step"] for x in rows if x["features"] == f and x["readout"] == r and x["n_neurons"] == n)
    report = {
        "threads": threads,
        "load_average_at_start": load,
        "batch_size": 64,
        "image_shape": [36, 64],
        "note": "rows use the default core unless features/pool differ; the default preset is features=8, pool=2",
        "rows": rows,
        "dense_over_gaussian_2000": find(8, "factorized", 2000) / find(8, "gaussian", 2000),
        "dense_over_gaussian_13000": find(8, "factorized", 13000) / find(8, "gaussian", 13000),
    }
    out = Path(__file__).resolve().parent / "results" / "v1_twin.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
